"""The `stancerun` command line: parsing, exit codes, one handler per command."""
