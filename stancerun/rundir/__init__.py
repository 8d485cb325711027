"""The run directory: its files, written atomically, and the saved model."""
