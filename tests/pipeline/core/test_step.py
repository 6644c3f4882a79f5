"""The step base classes: filter counters, pickling of loaded state, undeclared metadata."""

from __future__ import annotations

import gzip
import json
import pickle
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.document import Document
from pipeline.core.step import (
    Filter,
    Mapper,
    StageShard,
    StepContext,
    StepStats,
    UndeclaredMetadataError,
)
from pipeline.execution.runner import run_chain, run_chunk_safely
from pipeline.io.writer import read_documents_parquet, write_documents_parquet
from pipeline.steps.c4 import C4Filter


def _wiki_docs(shared_data: Path, n: int) -> list[Document]:
    docs = []
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == n:
                break
            docs.append(Document(f"w{i}", json.loads(line)["text"]))
    return docs


class LengthFilter(Filter):
    """Drops short documents; counts long ones and records each length (declared)."""

    name = "test_length"
    metadata_fields = {"length": pa.int64()}
    transient_attrs = ("_lock",)

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._lock: threading.Lock | None = None
        self.setups = 0

    def setup(self) -> None:
        if self._lock is None:
            self._lock = threading.Lock()  # stands for a loaded model: not picklable
            self.setups += 1

    def reject_reason(self, doc: Document) -> str | None:
        doc.metadata["length"] = len(doc.text)
        if len(doc.text) < 5000:
            return "short"
        self.count("long_docs")
        self.count("long_chars", len(doc.text))
        return None


class Undeclared(Mapper):
    """Writes a metadata key it does not declare (the bug the runner must report)."""

    name = "test_undeclared"
    metadata_fields = {"declared": pa.int64()}

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        doc.metadata["declared"] = 1
        doc.metadata["undeclared"] = 3
        return doc


def test_filter_counts_from_reject_reason(shared_data: Path) -> None:
    docs = _wiki_docs(shared_data, 40)
    step = LengthFilter()
    ctx = StepContext(StepStats())
    kept = list(step.run(docs, ctx))
    long_docs = [d for d in docs if len(d.text) >= 5000]
    assert [d.id for d in kept] == [d.id for d in long_docs]
    assert 0 < len(kept) < len(docs)
    assert ctx.stats.counters == Counter(
        {"long_docs": len(long_docs), "long_chars": sum(len(d.text) for d in long_docs)})
    assert ctx.stats.dropped == Counter({"short": len(docs) - len(long_docs)})
    # reject_reason called directly, outside run(): counting is a no-op, not an error
    assert LengthFilter().reject_reason(Document("x", "y" * 6000)) is None


def test_c4_counts_line_outcomes_of_kept_documents(shared_data: Path) -> None:
    docs = _wiki_docs(shared_data, 30)
    step = C4Filter()
    expected: Counter = Counter()
    for doc in docs:
        result = step.rules.apply(doc.text)
        if result.text is None:
            continue
        removed = sum(n for k, n in result.lines.items() if k != "kept")
        expected["c4_lines_kept"] += result.lines.get("kept", 0)
        expected["c4_lines_removed"] += removed
        for k, n in result.lines.items():
            if k != "kept" and n:
                expected[f"c4_lines_removed:{k}"] += n
        expected["c4_docs_changed"] += result.text != doc.text
    ctx = StepContext(StepStats())
    list(step.run([Document(d.id, d.text) for d in docs], ctx))
    assert expected["c4_lines_removed"] > 0 and expected["c4_docs_changed"] > 0
    assert ctx.stats.counters == expected


def test_counts_of_a_retried_chunk_are_not_doubled(shared_data: Path) -> None:
    """run_chunk_safely replaces the stats after a failure; counts go to the new ones."""

    class Boom(Mapper):
        name = "test_boom"

        def apply(self, doc: Document, ctx: StepContext) -> Document:
            if doc.id == "w3":
                raise ValueError("bad record")
            return doc

    docs = _wiki_docs(shared_data, 12)
    step = LengthFilter()
    ctxs = [StepContext(StepStats()), StepContext(StepStats())]
    out = run_chunk_safely(docs, [step, Boom()], ctxs, [])
    long_ids = {d.id for d in docs if len(d.text) >= 5000}
    assert {d.id for d in out} == long_ids - {"w3"}
    assert ctxs[0].stats.counters["long_docs"] == len(long_ids)
    assert ctxs[1].stats.dropped == (Counter({"error:ValueError": 1}) if "w3" in long_ids
                                     else Counter())


def test_transient_attributes_reset_on_pickling() -> None:
    step = LengthFilter()
    step.setup()
    list(step.run([Document("a", "b" * 5500)], StepContext(StepStats(), lambda *a: None)))
    assert step._lock is not None and step._ctx is not None
    with pytest.raises(TypeError):
        pickle.dumps(step.__dict__)  # the lock and the sink's lambda cannot travel
    clone = pickle.loads(pickle.dumps(step))
    assert clone._lock is None and clone._ctx is None  # Filter's and the subclass's own
    assert step._lock is not None  # the original keeps its state
    clone.setup()
    assert clone._lock is not None and clone.setups == 2
    ctx = StepContext(StepStats())
    assert [d.id for d in clone.run([Document("a", "b" * 5500)], ctx)] == ["a"]
    assert ctx.stats.counters["long_docs"] == 1


def test_undeclared_metadata_is_an_error_naming_step_and_key() -> None:
    docs = [Document("a", "a " * 3000), Document("b", "b " * 3000)]
    ctxs = [StepContext(StepStats()), StepContext(StepStats())]
    with pytest.raises(UndeclaredMetadataError) as err:
        run_chain(docs, [LengthFilter(), Undeclared()], ctxs)
    assert err.value.step == "test_undeclared" and err.value.key == "undeclared"
    assert "'test_undeclared'" in str(err.value) and "'undeclared'" in str(err.value)
    # never skipped as a bad document: the shard fails instead of losing every document
    fresh = [Document("a", "a " * 3000), Document("b", "b " * 3000)]
    with pytest.raises(UndeclaredMetadataError):
        run_chunk_safely(fresh, [LengthFilter(), Undeclared()], ctxs, [])


def test_declared_and_incoming_metadata_pass(tmp_path: Path) -> None:
    """Keys a step declares, keys of earlier steps and keys the documents came with pass."""

    class Rewrites(Mapper):
        name = "test_rewrites"

        def apply(self, doc: Document, ctx: StepContext) -> Document:
            doc.metadata["length"] += 1  # declared by LengthFilter, before this step
            doc.metadata["carried"] = "changed"  # came in with the document
            return doc

    docs = [Document("a", "x" * 5500, metadata={"carried": "in"})]
    out = run_chain(docs, [LengthFilter(), Rewrites()],
                    [StepContext(StepStats()), StepContext(StepStats())])
    assert out[0].metadata == {"carried": "changed", "length": 5501}
    path = tmp_path / "part.parquet"
    write_documents_parquet(out, path, {"carried": pa.string(), "length": pa.int64()})
    assert next(read_documents_parquet(path)).metadata == out[0].metadata


def test_writer_refuses_metadata_it_would_drop(tmp_path: Path) -> None:
    doc = Document("a", "text", metadata={"length": 4, "undeclared": 3})
    with pytest.raises(UndeclaredMetadataError, match="'undeclared'"):
        write_documents_parquet([doc], tmp_path / "part.parquet", {"length": pa.int64()})
    assert not (tmp_path / "part.parquet").exists()


def test_stage_shard_text_batches_follow_documents_order(shared_data: Path,
                                                        tmp_path: Path) -> None:
    """``text_batches`` yields the id and text columns of every part, in ``documents`` order,
    in batches of at most ``batch_size`` rows, without the metadata columns."""
    docs = _wiki_docs(shared_data, 25)
    for i, doc in enumerate(docs):
        doc.metadata["length"] = i
    parts = []
    for k, (lo, hi) in enumerate([(0, 10), (10, 10), (10, 25)]):  # one part is empty
        parts.append(str(tmp_path / f"part-{k}.parquet"))
        write_documents_parquet(docs[lo:hi], parts[-1], {"length": pa.int64()})
    shard = StageShard("s0", tuple(parts))
    batches = list(shard.text_batches(batch_size=4))
    assert all(b.num_rows <= 4 for b in batches)
    assert all(b.schema.names == ["id", "text"] for b in batches)
    assert all(b.schema.field("text").type == pa.string() for b in batches)
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    assert ids == [d.id for d in shard.documents()] == [d.id for d in docs]
    assert texts == [d.text for d in docs]
    only_text = list(shard.text_batches(columns=("text",)))
    assert [t for b in only_text for t in b.column("text").to_pylist()] == texts
    with pytest.raises(ValueError, match="part-0.parquet.*'missing'"):
        next(shard.text_batches(columns=("text", "missing")))
