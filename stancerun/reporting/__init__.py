"""What people read: report.md, the plots, and the leaderboard of several runs."""
