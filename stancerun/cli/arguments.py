"""Flags that several commands share, stated once so their spelling and help stay the same."""

from __future__ import annotations

TRUST_REMOTE_CODE_HELP = "allow the model folder to run its own Python code (auto_map); only for runs you trust"


def add_trust_remote_code(parser, help: str = TRUST_REMOTE_CODE_HELP) -> None:
    """--trust-remote-code, for the commands that load a saved run (predict, evaluate, serve, export, resume):
    without it, a model folder that asks to run its own code is refused (exit 2)."""
    parser.add_argument("--trust-remote-code", action="store_true", help=help)
