"""The columnar apply path writes exactly what the document path writes.

A job of exact, MinHash and line dedup over real Wikipedia articles (with planted exact
and near copies, a boilerplate line and documents that the line cut leaves too short) runs
once with ``REFINERY_DOCUMENT_APPLY=1`` (documents through ``Step.run``) and once on the
columnar path; every file of both outputs must be byte-identical, and a run killed in the
middle of a shard and rerun must give the same bytes again, also when its shards repeat
document ids (each copy of an id keeps its own decision after a resume or a chunk redone on
documents).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.step import GlobalStep
from pipeline.core.table_step import TableStep
from pipeline.execution import faults
from pipeline.execution.columnar import FORCE_DOCUMENTS_ENV
from pipeline.execution.executor import LocalExecutor
from pipeline.execution.runner import run_job

BOILER = "Subscribe to our newsletter for more articles like this one"


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two JSONL files of real articles: exact copies (case and spacing changed), near copies
    (a word in 40 replaced), a frequent boilerplate line, and short articles carrying it."""
    path = shared_data / "reference" / "wiki_ref.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    texts: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= 160:
                break
    docs: list[dict] = []
    for i, text in enumerate(texts):
        if i % 3 == 0:
            text = f"{BOILER}\n{text}\n{BOILER}"
        if i % 10 == 9:  # short: the line cut leaves fewer than 50 characters or 10 words
            text = f"{BOILER}\n{text.split(chr(10))[0][:40]}"
        docs.append({"id": f"w{i}", "text": text, "url": f"https://example.org/{i}"})
        if i % 7 == 0:
            docs.append({"id": f"w{i}-exact", "text": text.upper().replace(" ", "  ")})
        if i % 5 == 0:
            words = text.split(" ")
            docs.append({"id": f"w{i}-near",
                         "text": " ".join("zz" if k % 40 == 7 else w for k, w in enumerate(words))})
    root = tmp_path_factory.mktemp("columnar-in")
    files = []
    for k in range(2):
        p = root / f"part{k}.jsonl"
        p.write_text("".join(json.dumps(d) + "\n" for d in docs[k::2]), encoding="utf-8")
        files.append(str(p))
    return files


def _job(inputs: list[str], out: Path) -> dict:
    return {"job": "crawl", "name": "columnar", "executor": "local", "inputs": inputs,
            "output": str(out), "read": {"format": "jsonl"},
            "steps": [{"dedup_exact_v1": {"partitions": 2}},
                      {"dedup_minhash_v1": {"partitions": 2, "threshold": 0.7}},
                      {"dedup_lines_v1": {"partitions": 2}}],
            "write": {"keep_removed": True, "checkpoint_docs": 17}}


def _files(out: Path) -> dict[str, bytes]:
    """Every output file the paths must agree on, by relative path (timings excluded)."""
    skip = {"stats.json", "summary.md", "stats.png", "report.html", "_job.json"}
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in skip and "_progress" not in p.parts
            and "_global" not in p.parts}


def _counts(out: Path) -> list:
    stats = json.loads((out / "stats.json").read_text())
    return [(s["docs_in"], s["docs_out"], s["chars_in"], s["chars_out"], s["dropped"],
             s["counters"]) for s in stats["steps"]]


@pytest.fixture(scope="module")
def document_path(inputs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("doc-path") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FORCE_DOCUMENTS_ENV, "1")
        run_job(_job(inputs, out), executor=LocalExecutor())
    return out


def test_dedup_steps_offer_the_table_path() -> None:
    from pipeline.core.registry import get_step_class

    for name in ("dedup_exact_v1", "dedup_minhash_v1", "dedup_lines_v1"):
        cls = get_step_class(name)
        assert issubclass(cls, TableStep) and issubclass(cls, GlobalStep)


def _count_table_chunks(monkeypatch) -> list[str]:
    """Record the step name of every chunk the runner gives the columnar path."""
    from pipeline.execution import runner

    calls: list[str] = []
    real = runner.apply_table_chunk

    def counted(step, table, ctx, sink):
        calls.append(step.name)
        return real(step, table, ctx, sink)

    monkeypatch.setattr(runner, "apply_table_chunk", counted)
    return calls


def test_columnar_output_is_byte_identical(inputs: list[str], document_path: Path,
                                           tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(FORCE_DOCUMENTS_ENV, raising=False)
    calls = _count_table_chunks(monkeypatch)
    out = tmp_path / "out"
    run_job(_job(inputs, out), executor=LocalExecutor())
    # every stage's chunks went through the columnar path (the reference through documents)
    assert set(calls) == {"dedup_exact_v1", "dedup_minhash_v1", "dedup_lines_v1"}
    parts = [json.loads(f.read_text())["parts"] for stage in (1, 2, 3)
             for f in (out / "_progress" / f"stage-{stage}").glob("*.json")]
    assert len(calls) == sum(parts) and len(parts) == 3 * len(inputs)
    ref, got = _files(document_path), _files(out)
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if ref[k] != got[k]] == []
    assert _counts(out) == _counts(document_path)
    # the test covers what it claims: drops of every kind, removed records and samples
    counts = _counts(out)
    assert counts[0][4] and counts[1][4] and counts[2][4]
    assert counts[2][5]["lines_removed"] > 0
    assert any(k.startswith("samples/stage-3") for k in got)
    assert any(k.startswith("removed/stage-2") for k in got)
    assert len(pq.read_table(out / "removed" / "stage-1" / next(
        p.name for p in (out / "removed" / "stage-1").iterdir()))) > 0


def test_columnar_run_killed_mid_shard_resumes_to_the_same_bytes(
        inputs: list[str], document_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(FORCE_DOCUMENTS_ENV, raising=False)
    out = tmp_path / "out"
    # the part is written, its progress record not: the rerun redoes that part
    with faults.inject_failures([("stage-2", 1), ("stage-3", 2)]):
        run_job(_job(inputs, out), executor=LocalExecutor())
    assert not (out / "_SUCCESS").exists()
    with faults.inject_failures([("stage-3", 2)]):
        run_job(_job(inputs, out), executor=LocalExecutor())
    assert not (out / "_SUCCESS").exists()
    run_job(_job(inputs, out), executor=LocalExecutor())
    assert (out / "_SUCCESS").exists()
    ref, got = _files(document_path), _files(out)
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if ref[k] != got[k]] == []
    assert _counts(out) == _counts(document_path)


class _Flaky(TableStep, GlobalStep):
    """Drops documents whose text has no "e"; its table method always raises."""

    name = "test_flaky_table"

    def prepare(self, shards, workdir, executor) -> None:
        pass

    def load(self, workdir: str, shard_id: str) -> None:
        pass

    def run(self, docs, ctx):
        for doc in docs:
            if "e" in doc.text:
                yield doc
            else:
                ctx.drop(doc, self.name, "no_e")

    def apply_table(self, table, ctx):
        ctx.stats.counters["half_done"] += 1  # must not survive the fallback
        raise RuntimeError("table path broken")


def test_a_table_step_that_raises_falls_back_to_documents() -> None:
    import pyarrow as pa

    from pipeline.core.document import Document
    from pipeline.core.step import StepContext, StepStats
    from pipeline.execution.runner import _apply_table_safely
    from pipeline.io.writer import documents_schema, documents_to_table

    docs = [Document(f"d{i}", t) for i, t in enumerate(["one", "two", "three", "xyz"])]
    schema = documents_schema({})
    removed: list = []
    ctx = StepContext(StepStats(), lambda d, s, r: removed.append((d.id, s, r)), "s", [])
    kept = _apply_table_safely(_Flaky(), documents_to_table(docs, schema), ctx, schema, removed)
    assert isinstance(kept, pa.Table) and kept.column("id").to_pylist() == ["d0", "d2"]
    assert removed == [("d1", "test_flaky_table", "no_e"), ("d3", "test_flaky_table", "no_e")]
    assert ctx.stats.docs_in == 4 and ctx.stats.docs_out == 2
    assert ctx.stats.dropped == {"no_e": 2} and not ctx.stats.counters


@pytest.fixture(scope="module")
def repeated_inputs(inputs: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The same documents, but each file repeats 11 ids over and over (``r0`` .. ``r10``), so
    one id's copies in a shard get different decisions (kept, dropped, lines cut)."""
    root = tmp_path_factory.mktemp("repeated-in")
    files = []
    for k, path in enumerate(inputs):
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
        for j, row in enumerate(rows):
            row["id"] = f"r{j % 11}"
        p = root / f"part{k}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        files.append(str(p))
    return files


def _repeated_job(inputs: list[str], out: Path) -> dict:
    """:func:`_job` with paragraph Bloom dedup (a document-path step) before the line cut."""
    job = _job(inputs, out)
    job["steps"].insert(2, {"dedup_bloom_v1": {"mode": "paragraph"}})
    return job


@pytest.fixture(scope="module")
def repeated_reference(repeated_inputs: list[str],
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run over :func:`repeated_inputs` (columnar where a step offers it)."""
    out = tmp_path_factory.mktemp("repeated-ref") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(FORCE_DOCUMENTS_ENV, raising=False)
        run_job(_repeated_job(repeated_inputs, out), executor=LocalExecutor())
    counts = _counts(out)  # the input exercises what the test claims: every step decides
    assert counts[0][4] and counts[1][4] and counts[2][5]["paragraphs_removed"] > 0
    assert counts[3][5]["lines_removed"] > 0
    return out


@pytest.mark.parametrize("documents", [False, True], ids=["columnar", "documents"])
def test_repeated_ids_killed_mid_shard_resume_to_the_same_bytes(
        repeated_inputs: list[str], repeated_reference: Path, tmp_path: Path, monkeypatch,
        documents: bool) -> None:
    if documents:
        monkeypatch.setenv(FORCE_DOCUMENTS_ENV, "1")
    else:
        monkeypatch.delenv(FORCE_DOCUMENTS_ENV, raising=False)
    out = tmp_path / "out"
    # each stage that matches by id (exact, MinHash; Bloom runs on documents either way) is
    # killed once after a part that ends between copies of the same ids (parts of 17 rows)
    kills = [("stage-1", 1), ("stage-2", 2)] + ([] if documents else [("stage-3", 1)])
    for k in range(len(kills)):
        with faults.inject_failures(kills[k:]):
            run_job(_repeated_job(repeated_inputs, out), executor=LocalExecutor())
        assert not (out / "_SUCCESS").exists()
    run_job(_repeated_job(repeated_inputs, out), executor=LocalExecutor())
    assert (out / "_SUCCESS").exists()
    ref, got = _files(repeated_reference), _files(out)
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if ref[k] != got[k]] == []
    assert _counts(out) == _counts(repeated_reference)


def test_repeated_ids_after_a_table_chunk_redone_on_documents(
        repeated_inputs: list[str], repeated_reference: Path, tmp_path: Path,
        monkeypatch) -> None:
    """Exact and MinHash dedup look every row up, then raise: the redo on documents must
    match each copy of a repeated id as the uninterrupted run does."""
    from pipeline.steps.dedup_exact import ExactDedup
    from pipeline.steps.dedup_minhash import MinHashDedup

    monkeypatch.delenv(FORCE_DOCUMENTS_ENV, raising=False)
    for cls in (ExactDedup, MinHashDedup):
        real = cls.apply_table

        def looks_up_then_raises(self, table, ctx, real=real):
            real(self, table, ctx)
            raise RuntimeError("broken after the lookups")

        monkeypatch.setattr(cls, "apply_table", looks_up_then_raises)
    calls = _count_table_chunks(monkeypatch)
    out = tmp_path / "out"
    run_job(_repeated_job(repeated_inputs, out), executor=LocalExecutor())
    assert "dedup_exact_v1" in calls and "dedup_minhash_v1" in calls
    ref, got = _files(repeated_reference), _files(out)
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if ref[k] != got[k]] == []
    assert _counts(out) == _counts(repeated_reference)


def test_stage_tables_chunks_across_parts_skips_and_refuses_a_shorter_input(tmp_path) -> None:
    """Chunks of ``checkpoint_docs`` rows run across part boundaries after the skipped rows,
    as the document path's chunks do; an input shorter than the rows already done fails."""
    import pyarrow as pa

    from pipeline.execution.columnar import stage_tables

    files = []
    for i, n in enumerate((3, 4, 2)):
        ids = [f"d{i}-{j}" for j in range(n)]
        table = pa.table({"id": ids, "text": [f"text of {x}" for x in ids],
                          "media_type": ["text/plain"] * n, "source": ["s"] * n})
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(table, path)
        files.append(str(path))
    every = [f"d{i}-{j}" for i, n in enumerate((3, 4, 2)) for j in range(n)]
    chunks = [t.column("id").to_pylist() for t in stage_tables(files, "s0", 4, 2)]
    assert chunks == [every[2:6], every[6:9]]
    assert [t.num_rows for t in stage_tables(files, "s0", 4, 9)] == []
    with pytest.raises(RuntimeError, match="input now has 9 documents, fewer than the 10"):
        list(stage_tables(files, "s0", 4, 10))
