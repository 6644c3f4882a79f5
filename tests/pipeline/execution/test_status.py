"""``pipeline status``: every stage with its steps, a global step's own progress (checked on
a job really killed inside one), failed shards from stats.json, exit 2 where no job is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.execution.runner import run_job

WEBMIX = ["webmix/webmix-00000.warc.gz", "webmix/webmix-00001.warc.gz"]
CCNET = ["cc/dolma_ccnet_cc_en_head-0091.jsonl", "cc/dolma_ccnet_cc_en_head-0174.jsonl"]


def _status(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(out)],
                          capture_output=True, text=True, timeout=120)


def test_status_of_a_job_killed_in_its_global_step(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "inputs": [str(shared_data / s) for s in WEBMIX], "output": str(out),
        "executor": "local",
        "steps": ["whitespace_v1", "dedup_minhash_v1", "gopher_quality_v1"],
    }))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(job)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path, start_new_session=True)
    workdir = out / "_global" / "stage-1"
    deadline = time.time() + 300
    try:
        # kill once the global step has finished its first unit, so it is surely inside it
        while not list(workdir.glob("*/_done/*.json")):
            assert proc.poll() is None, "the job ended before its global step"
            assert time.time() < deadline, "the global step did not start in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "_progress" / "stage-1").exists(), "the global step ended before the kill"

    result = _status(out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "2 input files, 2 shards, 2 stage(s)" in text
    assert "stage 1/2 [whitespace_v1]:\n    shards: 2 of 2 done (0 in progress)" in text
    assert "stage 2/2 [dedup_minhash_v1, gopher_quality_v1]:" in text
    assert "global step dedup_minhash_v1: in progress (finished so far: map " in text
    stage2 = text.split("stage 2/2")[1]
    assert "shards: not started" in stage2 and "not complete: rerun" in text

    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = _status(out).stdout.rstrip()
    assert "global step dedup_minhash_v1: done" in text
    assert text.count("shards: 2 of 2 done (0 in progress)") == 2 and text.endswith("complete")


def test_status_lists_failed_shards_from_stats(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    job = {"inputs": [str(shared_data / s) for s in CCNET], "output": str(out),
           "executor": "local", "steps": ["dedup_exact_v1"]}
    # a progress record claiming more documents than the shard holds makes its task fail
    bad = out / "_progress" / "stage-0" / "00001-dolma_ccnet_cc_en_head-0174.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"records_done": 999, "parts": 1, "files": [], "done": False,
                               "read": None, "steps": None}))
    stats = run_job(job)
    assert [f["shard"] for f in stats["failed_shards"]] == ["00001-dolma_ccnet_cc_en_head-0174"]
    result = _status(out)
    assert result.returncode == 0, result.stderr
    text = result.stdout.rstrip()
    assert "failed shards in the last run that finished (1, from stats.json):" in text
    assert ("    00001-dolma_ccnet_cc_en_head-0174: RuntimeError: 00001-dolma_ccnet_cc_en_head"
            "-0174: input now has") in text
    assert "stage 2/2 [dedup_exact_v1]:\n    global step dedup_exact_v1: not started" in text
    assert text.endswith("not complete: rerun the job to finish")


def test_status_where_there_is_no_job(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a folder\n")
    for path, words in ((tmp_path / "missing", "does not exist"),
                        (tmp_path / "empty", "holds no job"),
                        (tmp_path / "file.txt", "is not a folder")):
        result = _status(path)
        assert result.returncode == 2 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and words in lines[0]
