"""TOML -> a validated experiment: the file format, the schema of the core tables, the sweep plan. Torch-free."""
