"""Finds step classes by their versioned YAML names (``gopher_quality_v1``).

Every module in ``pipeline/steps/`` is imported once; each concrete :class:`Step` subclass
with a ``name`` is registered. Adding a step means adding one file there. Step modules
import heavy libraries (fastText, KenLM, torch) inside ``setup`` so discovery stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from pipeline.core.step import GlobalStep, Step


@cache
def step_classes() -> dict[str, type[Step]]:
    """Return every registered step class keyed by its YAML name."""
    import pipeline.steps as steps_pkg

    found: dict[str, type[Step]] = {}
    for info in sorted(pkgutil.iter_modules(steps_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{steps_pkg.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, Step)
                and not inspect.isabstract(obj)
                and obj.__module__ == module.__name__
                and isinstance(obj.__dict__.get("name"), str)
            ):
                if obj.name in found and found[obj.name] is not obj:
                    raise RuntimeError(f"step name {obj.name!r} is registered twice")
                found[obj.name] = obj
    return found


def get_step_class(name: str) -> type[Step]:
    """Return the step class registered as ``name``; KeyError lists the known names."""
    classes = step_classes()
    if name not in classes:
        known = ", ".join(sorted(classes))
        raise KeyError(f"unknown step {name!r}; known steps: {known}")
    return classes[name]


def is_global(cls: type[Step]) -> bool:
    """True when the step needs every shard at once (a :class:`GlobalStep`)."""
    return issubclass(cls, GlobalStep)
