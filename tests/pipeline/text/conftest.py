"""Fixtures shared by the text-algorithm tests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest


def _jsonl_texts(path: Path, n: int, field: str = "text", stride: int = 1) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if len(out) >= n:
                break
            if i % stride == 0:
                out.append(json.loads(line)[field])
    return out


@pytest.fixture(scope="session")
def jsonl_texts() -> Callable[..., list[str]]:
    """``(path, n, field="text", stride=1) -> `` the ``field`` of every ``stride``-th record
    of a gzipped JSONL file, the first ``n`` of them."""
    return _jsonl_texts
