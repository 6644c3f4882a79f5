"""Most tokenizer tests need the encoder's dependencies (regex, tiktoken, tqdm).

A GPU machine has only torch, numpy and pyarrow: there every test module but the token
stream's (which model/ depends on and which needs only numpy and pyarrow) is left out of
collection, with one line in the summary saying why.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_ENCODER_DEPS = ("regex", "tiktoken", "tqdm")
_LIGHT = {"test_token_stream.py"}  # needs only numpy and pyarrow (and torch, for model.data)
MISSING = [name for name in _ENCODER_DEPS if importlib.util.find_spec(name) is None]

collect_ignore = (
    [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in _LIGHT]
    if MISSING
    else []
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the missing packages when tokenizer tests were left out."""
    if MISSING:
        terminalreporter.write_line(
            f"tests/tokenizer: only {', '.join(sorted(_LIGHT))} collected; "
            f"{', '.join(MISSING)} not installed"
        )
