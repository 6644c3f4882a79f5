"""The output folder: unusable folders are one ``error:`` line from ``pipeline run`` (exit
2, no traceback, before any work starts), and temporary files a killed run left behind are
removed by the next run without changing its output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import JobConfigError, OutputFolderError
from pipeline.execution.runner import run_job

CCNET = "cc/dolma_ccnet_cc_en_head-0174.jsonl"  # real CCNet output, 50 documents


def _job(shared: Path, out: Path, steps: list | None = None) -> dict:
    return {"inputs": [str(shared / CCNET)], "output": str(out), "executor": "local",
            "steps": steps if steps is not None else ["gopher_quality_v1"]}


def _cli_run(tmp_path: Path, job: dict, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"job-{len(list(tmp_path.glob('job-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(job))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path), *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """An existing folder nobody may write in, root included (``chattr +i`` as root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)],
                                        capture_output=True).returncode != 0:
        pytest.skip("running as root and this file system has no immutable flag (chattr +i)")
    try:
        assert subprocess.run(["touch", str(folder / "x")], capture_output=True).returncode
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_output_under_a_regular_file(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    line = _one_error_line(_cli_run(tmp_path, _job(shared_data, tmp_path / "notes.txt" / "out")))
    assert "notes.txt is a file, not a folder" in line and "--output" in line
    line = _one_error_line(_cli_run(tmp_path, _job(shared_data, tmp_path / "notes.txt")))
    assert "is a file, not a folder" in line


def test_read_only_output_folder(tmp_path: Path, shared_data: Path,
                                 read_only_folder: Path) -> None:
    line = _one_error_line(_cli_run(tmp_path, _job(shared_data, read_only_folder)))
    assert f"cannot write in the output folder {read_only_folder}" in line
    line = _one_error_line(_cli_run(tmp_path, _job(shared_data, read_only_folder / "out")))
    assert f"cannot create the output folder {read_only_folder / 'out'}" in line
    assert not list(read_only_folder.iterdir())


def test_read_only_folder_of_an_earlier_run(tmp_path: Path, shared_data: Path) -> None:
    """A run's own subfolder that cannot be written is found before any shard runs."""
    out = tmp_path / "out"
    run_job(_job(shared_data, out))
    data = out / "data"
    if os.geteuid() != 0:
        data.chmod(0o555)
    elif shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(data)], capture_output=True).returncode != 0:
        pytest.skip("running as root and this file system has no immutable flag")
    try:
        with pytest.raises(OutputFolderError, match=f"cannot write in the output folder {data} "):
            run_job(_job(shared_data, out))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(data)], check=True)
        else:
            data.chmod(0o755)


def test_rerun_into_another_jobs_folder(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    first = _cli_run(tmp_path, _job(shared_data, out))
    assert first.returncode == 0, first.stderr[-2000:]
    job_file = (out / "_job.json").read_bytes()
    line = _one_error_line(_cli_run(tmp_path, _job(shared_data, out, ["c4_v1"])))
    assert f"{out} holds the output of a different job" in line
    assert (out / "_job.json").read_bytes() == job_file
    assert issubclass(OutputFolderError, JobConfigError)


def test_stale_temporary_files_are_removed_and_output_unchanged(
    tmp_path: Path, shared_data: Path
) -> None:
    """Temporaries of killed writers (in data/, progress and a global step's work folder)
    are gone after a rerun, whose output is byte-identical."""
    out = tmp_path / "out"
    job = _job(shared_data, out, ["gopher_quality_v1", "dedup_exact_v1"])
    job["write"] = {"checkpoint_docs": 10}
    first = run_job(job)

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}

    before = snapshot()
    assert any(name.startswith("data/") for name in before)
    assert (out / "_global" / "stage-1").is_dir()
    planted = [
        out / "data" / ".00000-x-00001.parquet.tmp-4242-0123abcd",
        out / "_progress" / "stage-0" / ".00000-x.json.tmp-4242-89abcdef",
        out / "_global" / "stage-1" / ".phase.npz.tmp-77-deadbeef.npz",
        out / ".stats.json.tmp-1-00000000",
    ]
    for p in planted:
        p.write_bytes(b"half-written by a killed process")
    second = run_job(job)
    assert not [p for p in planted if p.exists()]
    assert not list(out.rglob(".*.tmp-*"))
    assert snapshot() == before
    for key in ("documents_in", "documents_out", "read"):
        assert first[key] == second[key]
    assert [(s["docs_out"], s["dropped"]) for s in first["steps"]] == [
        (s["docs_out"], s["dropped"]) for s in second["steps"]]
    assert json.loads((out / "stats.json").read_text())["documents_out"] == first["documents_out"]
