"""The exact and line-dedup map rows, read as Arrow text columns, equal the per-Document
definition (``document_key`` / ``nonempty_line_hashes`` of each ``shard.documents()`` text),
so the decisions built from them are unchanged (with or without the native extensions)."""

from __future__ import annotations

import numpy as np

from pipeline.core.document import Document
from pipeline.core.step import StageShard
from pipeline.dedup.lines import nonempty_line_hashes
from pipeline.dedup.phases import exact, lines
from pipeline.dedup.phases.shuffle import SHIFT
from pipeline.dedup.text import U64, document_key


def test_exact_rows_equal_per_document_keys(
    corpus: tuple[list[StageShard], list[list[Document]]],
) -> None:
    stage, _ = corpus
    for s, shard in enumerate(stage):
        docs = list(shard.documents())
        cols, ids, info = exact._rows(shard, s, exact.ExactConfig())
        keys = [document_key(d.text) for d in docs]
        assert ids == [d.id for d in docs] and info == {"docs": len(docs)}
        assert cols["hi"].dtype == cols["lo"].dtype == U64
        assert list(zip(cols["hi"].tolist(), cols["lo"].tolist(), strict=True)) == keys
        assert cols["ref"].tolist() == [(s << SHIFT) | i for i in range(len(docs))]


def test_lines_rows_equal_per_document_counts(
    corpus: tuple[list[StageShard], list[list[Document]]],
) -> None:
    stage, _ = corpus
    for s, shard in enumerate(stage):
        docs = list(shard.documents())
        cols, ids, info = lines._rows(shard, s, lines.LinesConfig())
        allh = np.concatenate([nonempty_line_hashes(d.text) for d in docs])
        uniq, counts = np.unique(allh, return_counts=True)
        assert ids == [] and info == {"docs": len(docs), "lines": len(allh)}
        assert np.array_equal(cols["hash"], uniq) and np.array_equal(cols["count"], counts)
        assert (cols["shard"] == s).all()


def test_empty_shard_gives_no_rows(tmp_path) -> None:
    from pipeline.io.writer import write_documents_parquet

    path = tmp_path / "empty.parquet"
    write_documents_parquet([], path, {})
    shard = StageShard("empty", (str(path),))
    cols, ids, info = exact._rows(shard, 0, exact.ExactConfig())
    assert ids == [] and info == {"docs": 0} and all(len(c) == 0 for c in cols.values())
    assert cols["hi"].dtype == U64
    cols, _, info = lines._rows(shard, 0, lines.LinesConfig())
    assert info == {"docs": 0, "lines": 0} and len(cols["hash"]) == 0
