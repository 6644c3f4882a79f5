"""Shared test fixtures and hooks: where the shared data lives; the native-extension policy.

Imports nothing of the project at module level: ``python -m pytest -m gpu tests/`` must
collect on a machine with only torch, numpy and pyarrow.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# set to 1 to accept the pure-Python fallbacks when a native extension (tokenizer/_bpe.c,
# _encode.c, pipeline/dedup/_lines.c) is not built
ALLOW_PURE_PYTHON = "REFINERY_ALLOW_PURE_PYTHON"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``native`` marker."""
    config.addinivalue_line(
        "markers",
        f"native(*names): needs the compiled extensions tokenizer.<name> (or a dotted module "
        f"name such as pipeline.dedup._lines); a test fails without "
        f"them unless {ALLOW_PURE_PYTHON}=1, which skips it",
    )


def _missing_extensions(names: tuple[str, ...]) -> list[str]:
    missing = []
    for name in names:
        module = name if "." in name else f"tokenizer.{name}"  # a bare name is tokenizer's
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail (or, with ``REFINERY_ALLOW_PURE_PYTHON=1``, skip) a ``native`` test whose
    extensions are not built: the install treats them as optional, so a failed build would
    otherwise pass the suite silently at a fraction of the speed."""
    names = tuple(n for mark in item.iter_markers("native") for n in mark.args)
    missing = _missing_extensions(names) if names else []
    if not missing:
        return
    if os.environ.get(ALLOW_PURE_PYTHON) == "1":
        pytest.skip(f"{', '.join(missing)} not built ({ALLOW_PURE_PYTHON}=1)")
    pytest.fail(f"{', '.join(missing)} not built: rebuild with `pip install -e .` and read its "
                f"compiler errors, or set {ALLOW_PURE_PYTHON}=1 to test the Python fallback",
                pytrace=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder (where ``pyproject.toml``, ``jobs/`` and ``benchmarks/`` are)."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (``../shared/data`` beside the repository)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray instance for the whole test session.

    ``address="local"`` starts our own cluster: a bare ``ray.init()`` would join any cluster
    that ``ray start`` left running on the machine.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
