"""Real Wikipedia articles (``../shared/data/reference/wiki_ref.jsonl.gz``) for the tests."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@cache
def wiki_ref_articles(n: int, min_words: int = 150, max_words: int | None = None) -> tuple[str, ...]:
    """The first ``n`` articles with ``min_words``..``max_words`` words, in file order
    (skips the test when the shared data is absent)."""
    path = SHARED / "reference" / "wiki_ref.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            words = len(text.split())
            if words >= min_words and (max_words is None or words <= max_words):
                out.append(text)
            if len(out) >= n:
                break
    return tuple(out)
