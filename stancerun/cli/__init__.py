"""The `stancerun` command line: one module per command, its parser beside its handler; main.py
holds the entry point, the shared flags and the translation of errors into exit codes."""
