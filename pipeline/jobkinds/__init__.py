"""Job kinds: what ``pipeline run FILE`` does for each value of the file's ``job:`` key.

A kind is one module in this package, named as the kind (``crawl.py`` runs ``job: crawl``,
the default). It exposes ``KIND`` (its name) and ``run(data, args) -> int``: ``data`` is
the job file as a dict, ``args`` the parsed ``pipeline run`` arguments (``job``, the file's
path; ``output``; ``address``), and the result is the exit code. Adding a kind means adding
one file here.

Unlike steps, kinds are found by their module names without importing the modules: a
kind's dependencies are loaded only when it runs, so ``job: train`` needs torch, numpy and
pyarrow but not Ray, and ``job: crawl`` does not import torch. Kind modules keep their
heavy imports inside functions for the same reason.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

DEFAULT_KIND = "crawl"


@cache
def job_kinds() -> tuple[str, ...]:
    """Return the names of every job kind, sorted (module names, nothing imported)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_")))


def get_job_kind(name: str) -> ModuleType:
    """Return the module of job kind ``name`` (it has ``KIND`` and ``run``).

    Raises :class:`pipeline.core.config.JobConfigError` listing the known kinds when there
    is none of that name, and RuntimeError when the module does not follow the protocol.
    """
    if not isinstance(name, str) or name not in job_kinds():
        from pipeline.core.config import JobConfigError

        raise JobConfigError(f"job: {name!r} is not a known job kind; known kinds: "
                             f"{', '.join(job_kinds())}")
    module = importlib.import_module(f"{__name__}.{name}")
    if getattr(module, "KIND", None) != name or not callable(getattr(module, "run", None)):
        raise RuntimeError(f"{module.__name__} must define KIND = {name!r} and run(data, args)")
    return module
