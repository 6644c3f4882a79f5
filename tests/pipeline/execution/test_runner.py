"""The job runner: validation, end-to-end output, bad records, kill-and-resume."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.config import JobConfigError, OutputFolderError, validate_job
from pipeline.core.document import Document
from pipeline.core.step import Filter, Mapper, StepContext, StepStats
from pipeline.execution.runner import run_chunk_safely, run_job


def _jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "url": f"https://example.org/{i}", "text": t}) + "\n")
    return path


# ---------------------------------------------------------------- validation


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", ["x"])
    with pytest.raises(JobConfigError, match=r"outptu: unknown key"):
        validate_job({"inputs": [str(src)], "output": "o", "outptu": "x"})


def test_unknown_step_lists_known_steps(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", ["x"])
    with pytest.raises(JobConfigError, match=r"steps\[0\]: unknown step 'gopher_v9'.*gopher_quality_v1"):
        validate_job({"inputs": [str(src)], "output": "o", "steps": ["gopher_v9"]})


def test_wrong_option_type_and_key_are_named(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", ["x"])
    job = {"inputs": [str(src)], "output": "o", "steps": [{"gopher_quality_v1": {"min_words": "many"}}]}
    with pytest.raises(JobConfigError, match=r"steps\[0\]\.gopher_quality_v1\.min_words"):
        validate_job(job)
    job["steps"] = [{"gopher_quality_v1": {"min_wrods": 3}}]
    with pytest.raises(JobConfigError, match=r"steps\[0\]\.gopher_quality_v1\.min_wrods: unknown key"):
        validate_job(job)


def test_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match=r"inputs\[0\].*nope/\*\.warc\.gz.*matches no file"):
        validate_job({"inputs": [str(tmp_path / "nope/*.warc.gz")], "output": "o"})


def test_cli_reports_bad_job_in_one_line(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("inputs: [x.jsonl]\noutput: o\nstepz: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(job)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "stepz: unknown key" in proc.stderr


# ---------------------------------------------------------------- bad records


class _Upper(Mapper):
    name = "test_upper"

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        doc.text = doc.text.upper()
        return doc


class _Explodes(Filter):
    name = "test_explodes"

    def reject_reason(self, doc: Document) -> str | None:
        if "BOOM" in doc.text:
            raise ValueError("cannot handle this document")
        return None if len(doc.text) > 1 else "short"


class _Batching(Mapper):
    """Consumes its whole input before yielding, like a batched model step."""

    name = "test_batching"

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        return doc

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        yield from list(docs)


def test_a_document_that_makes_a_step_raise_is_skipped_and_counted() -> None:
    docs = [Document(f"d{i}", t) for i, t in enumerate(["ok one", "boom", "fine", "x", "ok two"])]
    steps = [_Upper(), _Batching(), _Explodes()]
    ctxs = [StepContext(StepStats()) for _ in steps]
    removed: list = []
    ctxs[2].removed = lambda d, s, r: removed.append((d.id, s, r))
    out = run_chunk_safely(docs, steps, ctxs, removed)
    assert [d.text for d in out] == ["OK ONE", "FINE", "OK TWO"]
    assert ctxs[2].stats.dropped == {"error:ValueError": 1, "short": 1}
    assert ctxs[0].stats.docs_in == 5 and ctxs[0].stats.docs_out == 5
    assert ctxs[2].stats.docs_in == 5 and ctxs[2].stats.docs_out == 3
    assert removed == [("d3", "test_explodes", "short")]


class _Sampling(Mapper):
    """Records a change sample for every document (the report's sample list)."""

    name = "test_sampling"

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        ctx.record_sample(doc, self.name, {"text": doc.text})
        return doc


def test_samples_of_a_chunk_that_raised_count_once_toward_the_cap() -> None:
    # The chunk runs once whole (samples taken, then a later step raises) and again one
    # document at a time; the first attempt's samples are forgotten, list and count alike.
    docs = [Document(f"d{i}", t) for i, t in enumerate(["ok one", "boom", "fine", "ok two"])]
    samples: list = []
    steps = [_Upper(), _Sampling(), _Explodes()]
    ctxs = [StepContext(StepStats(), None, "s", samples) for _ in steps]
    out = run_chunk_safely(docs, steps, ctxs, [])
    assert [d.id for d in out] == ["d0", "d2", "d3"]
    # d1's sample goes with d1 (its own redo raised too)
    assert [d.id for d, _, _ in samples] == ["d0", "d2", "d3"]
    assert ctxs[1]._sampled == {"test_sampling": 3}  # not 6: the failed passes are not counted


# ---------------------------------------------------------------- end to end


def _crawl_job(repo: Path, shared: Path, out: Path, shards: list[str],
               checkpoint: int = 500) -> dict:
    job = yaml.safe_load((repo / "jobs" / "crawl.yaml").read_text())
    job["inputs"] = [str(shared / "webmix" / s) for s in shards]
    job["output"] = str(out)
    job["write"]["checkpoint_docs"] = checkpoint
    return job


def _read_output(out: Path) -> list[dict]:
    rows = []
    for f in sorted((out / "data").glob("*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


@pytest.fixture(scope="module")
def crawled_on_ray(ray_local, shared_data: Path, repo_root: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    """``(job, output folder, stats)`` of ``jobs/crawl.yaml`` run on Ray over the first webmix
    archive: one crawl for the end-to-end checks and the rerun test."""
    out = tmp_path_factory.mktemp("crawl-on-ray") / "out"
    job = _crawl_job(repo_root, shared_data, out, ["webmix-00000.warc.gz"])
    return job, out, run_job(copy.deepcopy(job))


def test_crawl_job_end_to_end(crawled_on_ray: tuple[dict, Path, dict]) -> None:
    _, out, stats = crawled_on_ray
    rows = _read_output(out)
    assert stats["documents_in"] > 500
    assert 0 < stats["documents_out"] == len(rows) < stats["documents_in"]
    assert {"id", "url", "text", "language", "language_score", "pii_email_count"} <= set(rows[0])
    assert all(r["language"] == "en" for r in rows)
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
    assert not [r["id"] for r in rows if email.search(r["text"])]
    names = [s["name"] for s in stats["steps"]]
    assert names == ["extract_v1", "langid_v2", "gopher_quality_v1", "gopher_repetition_v1", "c4_v1", "pii_v1"]
    for a, b in zip(stats["steps"], stats["steps"][1:], strict=False):
        assert a["docs_out"] == b["docs_in"]
    assert stats["languages"]["en"] > 0 and len(stats["languages"]) > 5
    assert (out / "stats.png").stat().st_size > 10_000
    assert "documents read" in (out / "summary.md").read_text()
    removed_files = list((out / "removed").rglob("*.parquet"))
    assert removed_files
    removed = [r for f in removed_files for r in pq.read_table(f).to_pylist()]
    assert len(removed) + len(rows) == stats["documents_in"]
    assert {r["removed_by"] for r in removed} >= {"langid_v2", "gopher_quality_v1"}
    assert (out / "_SUCCESS").exists()


def test_rerun_of_a_finished_job_changes_nothing(crawled_on_ray: tuple[dict, Path, dict]) -> None:
    job, out, first = copy.deepcopy(crawled_on_ray)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet")}
    second = run_job(job)
    assert {p: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet")} == mtimes
    assert first["documents_out"] == second["documents_out"]
    job["steps"] = job["steps"][:2]
    with pytest.raises(OutputFolderError, match="different job"):
        run_job(job)


def test_killed_job_resumes_to_the_same_output(ray_local, shared_data: Path, repo_root: Path,
                                               tmp_path: Path) -> None:
    shards = ["webmix-00002.warc.gz", "webmix-00003.warc.gz"]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    jobs = {}
    for name, o in (("ref", ref_out), ("killed", out)):
        jobs[name] = tmp_path / f"{name}.yaml"
        job = _crawl_job(repo_root, shared_data, o, shards, checkpoint=100)
        job["ray"] = {"num_cpus": 2}
        jobs[name].write_text(yaml.safe_dump(job))
    cmd = [sys.executable, "-m", "pipeline.cli", "run"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    run_job(yaml.safe_load(jobs["ref"].read_text()))  # on the session's Ray: one start-up fewer

    proc = subprocess.Popen(
        [*cmd, str(jobs["killed"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, cwd=tmp_path, start_new_session=True,
    )
    deadline = time.time() + 240
    progress_dir = out / "_progress" / "stage-0"
    while time.time() < deadline:
        records = [json.loads(p.read_text()) for p in progress_dir.glob("*.json")] if progress_dir.exists() else []
        if any(r["records_done"] >= 200 for r in records) and not all(r["done"] for r in records):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "_SUCCESS").exists()
    partial = [json.loads(p.read_text()) for p in progress_dir.glob("*.json")]
    assert partial and not all(r["done"] for r in partial), "the job was not killed mid-way"
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(out)],
                            capture_output=True, text=True, check=True).stdout
    assert "2 input files, 2 shards" in status and "not complete" in status
    assert "in progress: 0000" in status

    subprocess.run([*cmd, str(jobs["killed"])], check=True, capture_output=True, env=env, cwd=tmp_path)
    assert (out / "_SUCCESS").exists()
    ref_files = sorted(p.name for p in (ref_out / "data").glob("*.parquet"))
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == ref_files
    assert _read_output(out) == _read_output(ref_out)
    ref_stats = json.loads((ref_out / "stats.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    for a, b in zip(ref_stats["steps"], stats["steps"], strict=True):
        assert (a["docs_in"], a["docs_out"], a["dropped"]) == (b["docs_in"], b["docs_out"], b["dropped"])
    shutil.rmtree(tmp_path / "ref")


def test_job_joins_an_existing_ray_cluster(tmp_path: Path) -> None:
    ray_bin = Path(sys.executable).with_name("ray")
    src = _jsonl(tmp_path / "a.jsonl", ["The cat sat on the mat with the dog. " * 20] * 30)
    job = tmp_path / "j.yaml"
    job.write_text(yaml.safe_dump({"inputs": [str(src)], "output": str(tmp_path / "o"),
                                   "steps": ["gopher_quality_v1"]}))
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    # --block keeps the head in the foreground, so killing its process group stops this
    # cluster alone (`ray stop` would stop every cluster of the user, other tests' too).
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--num-cpus", "1", "--port", "6391",
         "--include-dashboard", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    try:
        address = None
        for line in head.stdout:
            m = re.search(r"ray start --address='([^']+)'", line)
            if m:
                address = m.group(1)
                break
        assert address, "the Ray head did not start"
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", str(job), "--address", address],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Connected to Ray cluster" in proc.stderr
        assert "30 documents read, 30 kept" in proc.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


def test_stages_split_at_global_steps() -> None:
    from pipeline.core.registry import get_step_class
    from pipeline.execution.runner import split_stages

    local = get_step_class("gopher_quality_v1")()
    dedup = get_step_class("dedup_exact_v1")()
    assert split_stages([local, local]) == [(0, 2)]
    assert split_stages([local, dedup, local]) == [(0, 1), (1, 3)]
    assert split_stages([dedup, local]) == [(0, 0), (0, 2)]
    assert split_stages([]) == [(0, 0)]


def test_failed_shard_stops_the_job_before_a_global_step(ray_local, tmp_path: Path) -> None:
    texts = [f"Document number {i} says something about the weather in town." for i in range(30)]
    a = _jsonl(tmp_path / "a.jsonl", texts)
    b = _jsonl(tmp_path / "b.jsonl", texts[:10])  # exact copies of a's first ten
    out = tmp_path / "out"
    job = {"inputs": [str(a), str(b)], "output": str(out), "steps": ["dedup_exact_v1"]}
    # A progress record claiming more documents than shard b holds makes its task fail.
    bad = out / "_progress" / "stage-0" / "00001-b.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"records_done": 99, "parts": 1, "files": [], "done": False,
                               "read": None, "steps": None}))
    stats = run_job(job)
    assert [f["shard"] for f in stats["failed_shards"]] == ["00001-b"]
    assert "fewer than the 99 already processed" in stats["failed_shards"][0]["error"]
    assert not (out / "_SUCCESS").exists()
    assert not (out / "_progress" / "stage-1").exists(), "the global step ran on a partial input"
    bad.unlink()
    stats = run_job(job)
    assert not stats["failed_shards"] and (out / "_SUCCESS").exists()
    rows = _read_output(out)
    assert len(rows) == 30 and stats["steps"][0]["dropped"] == {"exact_duplicate": 10}
