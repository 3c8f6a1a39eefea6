"""Subcommands of `python -m fastconv` (see fastconv/__main__.py)."""
