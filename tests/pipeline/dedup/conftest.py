"""Fixtures of the dedup tests: real Wikipedia articles, and a stage of real text with
planted duplicates."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard

BOILER = "Subscribe to our newsletter for more articles like this"
_ASCII_UPPER = {c: c - 32 for c in range(97, 123)}


def _perturb(text: str, fraction: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in rng.choice(len(words), size=int(round(fraction * len(words))), replace=False):
        words[i] = f"zz{rng.integers(1 << 40)}"
    return " ".join(words)


@pytest.fixture(scope="session")
def wiki_ref_articles(shared_data: Path) -> Callable[..., tuple[str, ...]]:
    """``(n, min_words=150, max_words=None) ->`` the first ``n`` articles of
    ``reference/wiki_ref.jsonl.gz`` with ``min_words``..``max_words`` words, in file order."""
    path = shared_data / "reference" / "wiki_ref.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")

    @cache
    def articles(n: int, min_words: int = 150, max_words: int | None = None) -> tuple[str, ...]:
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

    return articles


@pytest.fixture(scope="session")
def boilerplate_line() -> str:
    """The line the ``corpus`` fixture appends to every third document."""
    return BOILER


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, wiki_ref_articles: Callable[..., tuple[str, ...]]
           ) -> tuple[list[StageShard], list[list[Document]]]:
    """Four stage shards of real Wikipedia text with planted duplicates, written as Parquet.

    Planted: exact copies (ASCII case and spacing changed) and near copies (1% of words
    replaced) in other shards, and a boilerplate line (``BOILER``) in every third document.
    Shard 2 is two Parquet parts. Returns the shards in a scrambled order (a job must
    sort them itself) and each shard's documents in stage order.
    """
    from pipeline.io.writer import write_documents_parquet

    rng = np.random.default_rng(11)
    base = list(wiki_ref_articles(140, 150, 3000))
    shards: list[list[Document]] = [[] for _ in range(4)]
    for i, text in enumerate(base):
        if i % 3 == 0:
            text = text + "\n" + BOILER
        shards[i % 4].append(Document(id=f"w{i}", text=text, source="wiki"))
        if i % 7 == 0:  # exact copy elsewhere, ASCII case and spacing changed
            copy = text.translate(_ASCII_UPPER).replace(" ", "  ")
            shards[int(rng.integers(4))].append(Document(id=f"w{i}-exact", text=copy))
        if i % 5 == 0:  # near copy elsewhere
            shards[int(rng.integers(4))].append(
                Document(id=f"w{i}-near", text=_perturb(text, 0.01, i)))
    root = tmp_path_factory.mktemp("stage")
    stage: list[StageShard] = []
    for s, docs in enumerate(shards):
        if s == 2:  # two parts: order = part order
            half = len(docs) // 2
            files = []
            for k, part in enumerate((docs[:half], docs[half:])):
                path = root / f"{s:05d}-shard-{k:05d}.parquet"
                write_documents_parquet(part, path, {})
                files.append(str(path))
            stage.append(StageShard(f"{s:05d}-shard", tuple(files)))
        else:
            path = root / f"{s:05d}-shard.parquet"
            write_documents_parquet(docs, path, {})
            stage.append(StageShard(f"{s:05d}-shard", (str(path),)))
    # hand the shards over in a scrambled order: the job must sort them itself
    return [stage[i] for i in (3, 0, 2, 1)], shards


@pytest.fixture(scope="session")
def minhash_decisions() -> Callable[[str, list[StageShard]], dict[str, tuple]]:
    """``(workdir, stage) ->`` id -> (cluster ref, size, own ref, similarity) of every
    document of ``stage``, as the MinHash step's shard tasks load them from ``workdir``."""
    from pipeline.dedup.phases.minhash import load_minhash

    def decisions(workdir: str, stage: list[StageShard]) -> dict[str, tuple]:
        out = {}
        for shard in stage:
            dec = load_minhash(workdir, shard.shard_id)
            for d in shard.documents():
                out[d.id] = dec.get(d.id)
        return out

    return decisions
