"""Jobs over many small input files: grouped into few shard tasks, same output as few files,
resumable after a kill, and a driver that keeps no per-file records."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.config import JobConfig
from pipeline.execution.executor import LocalExecutor, Outcome, RayExecutor
from pipeline.execution.runner import job_fingerprint, plan_input_shards, run_job
from pipeline.io.readers import ReadOptions

N_DOCS = 300


@pytest.fixture(scope="module")
def wiki_docs(shared_data: Path) -> list[dict[str, Any]]:
    """300 real Wikipedia articles (cut to 3,000 characters, so the jobs take seconds), the
    last ten exact copies of earlier ones under new ids (duplicates for dedup_exact_v1)."""
    docs = []
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append({"id": row["id"], "url": f"https://en.wikipedia.org/{row['id']}",
                         "text": row["text"][:3000]})
            if len(docs) == N_DOCS - 10:
                break
    docs += [{**docs[7 * i], "id": f"copy-{i}"} for i in range(10)]
    return docs


def _write_split(docs: list[dict[str, Any]], folder: Path, n_files: int) -> Path:
    """Write ``docs`` in order into ``n_files`` JSONL files (consecutive runs) under ``folder``."""
    folder.mkdir(parents=True)
    for k in range(n_files):
        part = docs[k * len(docs) // n_files:(k + 1) * len(docs) // n_files]
        with open(folder / f"part-{k:05d}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d) + "\n" for d in part)
    return folder


def _job(inputs: Path, out: Path, checkpoint: int = 25, **read: Any) -> dict[str, Any]:
    return {"name": "many-inputs", "executor": "local", "inputs": [str(inputs / "*.jsonl")],
            "output": str(out), "read": read,
            "steps": ["gopher_quality_v1", "pii_v1", "dedup_exact_v1", "c4_v1"],
            "write": {"keep_removed": True, "checkpoint_docs": checkpoint}}


def _rows(out: Path, folder: str = "data") -> list[dict[str, Any]]:
    """Every row of ``out/folder``, without the column naming the input file, sorted by id."""
    rows = [r for p in sorted((out / folder).rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    for r in rows:
        r.pop("source", None)
    return sorted(rows, key=lambda r: r["id"])


def _counts(stats: dict[str, Any]) -> list[tuple[int, int, dict[str, int]]]:
    return [(s["docs_in"], s["docs_out"], s["dropped"]) for s in stats["steps"]]


class _RecordingExecutor(LocalExecutor):
    """The in-process executor, keeping what each map call handed back to the driver."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[Outcome]]] = []

    def map(self, fn, args, **kwargs) -> list[Outcome]:  # type: ignore[override]
        outcomes = super().map(fn, args, **kwargs)
        self.calls.append((len(args), outcomes))
        return outcomes


def test_300_small_files_give_the_output_of_3_files(wiki_docs, tmp_path: Path) -> None:
    few = _write_split(wiki_docs, tmp_path / "few", 3)
    many = _write_split(wiki_docs, tmp_path / "many", N_DOCS)
    ref = run_job(_job(few, tmp_path / "ref"))
    executor = _RecordingExecutor()
    grouped = run_job(_job(many, tmp_path / "grouped", target_shard_bytes=400_000),
                      executor=executor)

    assert ref["documents_in"] == grouped["documents_in"] == N_DOCS
    assert _counts(grouped) == _counts(ref)
    assert ref["steps"][2]["dropped"]["exact_duplicate"] >= 5  # the copies gopher kept
    assert _rows(tmp_path / "grouped") == _rows(tmp_path / "ref")
    assert _rows(tmp_path / "grouped", "removed") == _rows(tmp_path / "ref", "removed")
    # 300 files became a few tasks, and the driver got a shard id back from each, not records
    shard_calls = [(n, o) for n, o in executor.calls if o and isinstance(o[0].value, str)]
    assert [n for n, _ in shard_calls] == [grouped["shards"]] * 2
    assert 2 <= grouped["shards"] <= 5
    assert all(o.ok and o.value.startswith(("00", "01", "02")) for _, outs in shard_calls
               for o in outs)
    plan = json.loads((tmp_path / "grouped" / "_plan.json").read_text())
    assert plan["shards"] == sorted(plan["shards"]) and len(plan["shards"]) == grouped["shards"]


def test_one_task_per_small_file_gives_the_same_output(wiki_docs, tmp_path: Path) -> None:
    docs = wiki_docs[:60]
    few = _write_split(docs, tmp_path / "few", 2)
    many = _write_split(docs, tmp_path / "many", 60)
    ref = run_job(_job(few, tmp_path / "ref"))
    each = run_job(_job(many, tmp_path / "each"))
    assert each["shards"] == 60 and ref["shards"] == 2
    assert _counts(each) == _counts(ref)
    assert _rows(tmp_path / "each") == _rows(tmp_path / "ref")


def test_killed_grouped_job_resumes_to_the_same_output(wiki_docs, tmp_path: Path) -> None:
    many = _write_split(wiki_docs, tmp_path / "many", N_DOCS)
    job = _job(many, tmp_path / "killed", checkpoint=5, target_shard_bytes=400_000)
    job["steps"] = ["gopher_repetition_v1", *job["steps"]]  # slower, so the kill lands mid-way
    ref_slow = run_job({**job, "output": str(tmp_path / "ref_slow")})
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(job_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path, start_new_session=True)
    progress_dir = tmp_path / "killed" / "_progress" / "stage-0"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        records = [json.loads(p.read_text()) for p in progress_dir.glob("0*.json")] \
            if progress_dir.exists() else []
        if any(r["records_done"] >= 20 for r in records):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = [json.loads(p.read_text()) for p in progress_dir.glob("0*.json")]
    assert partial and not all(r["done"] for r in partial), "the job was not killed mid-way"
    assert not (tmp_path / "killed" / "_SUCCESS").exists()

    resumed = run_job(job)
    assert (tmp_path / "killed" / "_SUCCESS").exists()
    assert _counts(resumed) == _counts(ref_slow)
    assert _rows(tmp_path / "killed") == _rows(tmp_path / "ref_slow")
    assert _rows(tmp_path / "killed", "removed") == _rows(tmp_path / "ref_slow", "removed")
    assert resumed["documents_in"] == N_DOCS


def test_planning_10000_paths_groups_them_in_order(tmp_path: Path) -> None:
    files = []
    for i in range(10_000):
        path = tmp_path / f"f{i:05d}.warc.gz"
        path.write_bytes(b"x" * (100 + i % 7))
        files.append(str(path))
    shards = plan_input_shards(files, ReadOptions(target_shard_bytes=100_000))
    # consecutive runs of files, every file once, in input order, each run under the target
    groups = [[s.path, *(m for m, _ in s.more)] for s in shards]
    assert [p for g in groups for p in g] == files
    sizes = [sum(os.path.getsize(p) for p in g) for g in groups]
    assert all(size <= 100_000 for size in sizes)
    # greedy: a shard closes only when the next file would take it over the target
    assert all(size + os.path.getsize(g[0]) > 100_000
               for size, g in zip(sizes, groups[1:], strict=False))
    assert len(shards) == 11 and [s.shard_id for s in shards] == sorted(s.shard_id for s in shards)
    assert shards[0].shard_id == f"00000-f00000-n{len(groups[0])}" and len(groups[0]) > 900
    # a file at least the target is a shard of its own, and closes the run before it
    big = tmp_path / "big.warc.gz"
    big.write_bytes(b"x" * 200_000)
    mixed = plan_input_shards([files[0], str(big), files[1]], ReadOptions(target_shard_bytes=100_000))
    assert [(s.path, len(s.more)) for s in mixed] == [(files[0], 0), (str(big), 0), (files[1], 0)]


def test_shard_ids_sort_in_input_order_past_100000_files() -> None:
    files = [f"/nowhere/f{i}.warc.gz" for i in range(100_001)]
    shards = plan_input_shards(files, ReadOptions())
    assert len(shards) == 100_001
    assert shards[-1].shard_id == "100000-f100000" and shards[0].shard_id == "000000-f0"
    ids = [s.shard_id for s in shards]
    assert ids == sorted(ids)


def test_fingerprint_changes_only_when_grouping_is_set() -> None:
    base = {"inputs": ["x"], "output": "o", "steps": ["pii_v1"]}
    plain, grouped = JobConfig(**base), JobConfig(**base, read={"target_shard_bytes": 1000})
    assert job_fingerprint(plain, ["x"]) != job_fingerprint(grouped, ["x"])
    # unset, the option is left out: output folders of jobs run before it existed resume
    read = plain.read.model_dump(exclude={"target_shard_bytes"})
    key = {"inputs": ["x"], "read": read, "steps": plain.steps, "write": plain.write.model_dump()}
    before = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    assert job_fingerprint(plain, ["x"]) == before[:16]


def _square_or_fail(x: int) -> int:
    if x % 7 == 3:
        raise ValueError(f"unit {x} fails")
    return x * x


def test_ray_executor_submits_a_bounded_window(ray_local) -> None:
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    outcomes = RayExecutor(max_pending=3).map(_square_or_fail, [(x,) for x in range(40)])
    assert [o.name for o in outcomes] == [str(x) for x in range(40)]
    assert [o.value for o in outcomes if o.ok] == [x * x for x in range(40) if x % 7 != 3]
    assert [o.name for o in outcomes if not o.ok] == [str(x) for x in range(40) if x % 7 == 3]
    assert all("fails" in o.error for o in outcomes if not o.ok)


def test_progress_status_rereads_only_changed_files(tmp_path: Path) -> None:
    from pipeline.execution.runner import _DocsDone

    folder = tmp_path / "_progress" / "stage-0"
    folder.mkdir(parents=True)
    for k in range(3):
        (folder / f"s{k}.json").write_text(json.dumps({"records_done": 10 * (k + 1)}))
    status = _DocsDone(tmp_path, 0)
    assert status() == {"docs": 60}
    (folder / "s0.json").write_text(json.dumps({"records_done": 15}))
    os.utime(folder / "s0.json", ns=(1, 1))  # a new modification time, whatever the clock
    (folder / "s1.json").write_text("not json")  # a file being replaced: the last count stays
    os.utime(folder / "s1.json", ns=(2, 2))
    status.next_scan = 0.0
    assert status() == {"docs": 15 + 20 + 30}
    assert status.seen["s2.json"][1] == 30 and len(status.seen) == 3
