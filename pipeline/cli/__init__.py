"""The ``pipeline`` command and its subcommands (``python -m pipeline.cli``)."""

from pipeline.cli.main import main

__all__ = ["main"]
