"""Pipeline tests need the pipeline's own dependencies.

A GPU machine has only torch, numpy and pyarrow: there the pipeline cannot even be imported,
so its tests are left out of collection (with one line in the summary saying why) and
`python -m pytest -m gpu tests/` runs the model tests instead of failing to collect.
"""

from __future__ import annotations

import importlib.util

import pytest

# What `pipeline.core` imports at module level: without one of these no pipeline module loads.
_CORE = ("pydantic", "yaml", "regex")
MISSING = [name for name in _CORE if importlib.util.find_spec(name) is None]

collect_ignore_glob = ["*"] if MISSING else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the missing packages when the pipeline tests were left out."""
    if MISSING:
        terminalreporter.write_line(
            f"tests/pipeline not collected: {', '.join(MISSING)} not installed"
        )
