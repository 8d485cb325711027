"""Plugins found through the `stancerun` entry-point group, and the table of what they register."""
