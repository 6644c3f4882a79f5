"""The dedup jobs on Ray: resumable after a crash in any phase, same bytes as in-process.

The corpus (``corpus`` fixture, conftest.py) is real Wikipedia text spread over four
stage shards (one of them in two Parquet parts), with planted exact copies (case and
spacing changed), near copies (1% of words replaced) in other shards and a boilerplate
line shared by many documents. Tasks run on the session's private Ray (``ray_local``)
through a :class:`RayExecutor`; failures are injected with
:func:`pipeline.execution.faults.inject_failures`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
from pipeline.dedup.phases.lines import LinesConfig, prepare_lines
from pipeline.dedup.phases.minhash import MinHashConfig, prepare_minhash
from pipeline.dedup.phases.partfile import part_rows, read_parts
from pipeline.dedup.phases.store import list_phase_files, marker_path
from pipeline.execution import faults
from pipeline.execution.executor import LocalExecutor, RayExecutor, TaskFailures

pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("ray_local")  # the session's private Ray (conftest)


@pytest.fixture(scope="module")
def executor(ray_local) -> RayExecutor:
    """A Ray executor on the session's Ray (it reuses the initialized cluster)."""
    return RayExecutor()


def _table_rows(path: str) -> list:
    import pyarrow.parquet as pq

    if path.endswith(".parts"):  # a shuffle file: every partition's rows
        return [{k: v.tolist() for k, v in read_parts(path, p).items()}
                for p in range(len(part_rows(path)))]
    return pq.read_table(path).to_pylist()


def _crash(prepare, stage, work: str, config, executor, phase: str, unit: int) -> None:
    """Run ``prepare`` with unit ``unit`` of ``phase`` failing; check only that unit failed."""
    with faults.inject_failures([(phase, unit)]), pytest.raises(TaskFailures) as err:
        prepare(stage, work, config, executor)
    assert isinstance(err.value.__cause__, faults.InjectedFailure)
    assert len(err.value.failures) == 1 and err.value.failures[0].name.startswith(f"{phase}/")


def test_minhash_job_resumes_after_a_crash_in_every_phase(corpus, tmp_path, executor,
                                                           minhash_decisions) -> None:
    stage, _ = corpus
    config = MinHashConfig(threshold=0.8, partitions=3)
    clean = str(tmp_path / "clean")
    prepare_minhash(stage, clean, config, executor)
    reference = minhash_decisions(clean, stage)
    assert sum(c != r for c, _, r, _ in reference.values()) > 20

    work = str(tmp_path / "crashed")
    config = replace(config, max_map_tasks=3)  # map tasks over runs of shards: same result
    for phase, unit in (("map", 1), ("candidates", 2), ("verify1", 0), ("verify2", 1),
                        ("components", 0), ("final", 2), ("survivor_payloads", 1),
                        ("survivor_similarity", 0)):  # map unit 1 = shards 1..2
        _crash(prepare_minhash, stage, work, config, executor, phase, unit)
    prepare_minhash(stage, work, config, executor)
    assert minhash_decisions(work, stage) == reference
    # the outputs themselves are identical, not only the decisions
    for rel in ("candidates", "verify2", "decisions", "similarity"):
        for a, b in zip(list_phase_files(clean, rel), list_phase_files(work, rel), strict=True):
            assert Path(a).name == Path(b).name
            assert _table_rows(a) == _table_rows(b)


def test_minhash_job_redoes_deleted_and_truncated_outputs(corpus, tmp_path, executor,
                                                          minhash_decisions) -> None:
    stage, _ = corpus
    config = MinHashConfig(threshold=0.8, partitions=3, verify="signature")
    work = str(tmp_path)
    prepare_minhash(stage, work, config, executor)
    reference = minhash_decisions(work, stage)
    map_file = Path(work) / "map" / "m00002.parts"
    with open(map_file, "r+b") as f:  # truncate: the marker's size no longer matches
        f.truncate(os.path.getsize(map_file) // 2)
    os.remove(Path(work) / "candidates" / "p00001.parts")
    shutil.rmtree(Path(work) / "decisions")
    units = (("map", "m00000"), ("map", "m00002"), ("candidates", "p00001"),
             ("components", "p00000"))
    before = {u: marker_path(work, *u).stat().st_mtime_ns for u in units}
    prepare_minhash(stage, work, config, executor)
    assert minhash_decisions(work, stage) == reference
    after = {u: marker_path(work, *u).stat().st_mtime_ns for u in units}
    # damaged units were redone, untouched ones skipped
    assert after[("map", "m00002")] != before[("map", "m00002")]
    assert after[("candidates", "p00001")] != before[("candidates", "p00001")]
    assert after[("map", "m00000")] == before[("map", "m00000")]
    assert after[("components", "p00000")] == before[("components", "p00000")]


def test_exact_and_line_jobs_resume_after_a_crash(corpus, tmp_path, executor) -> None:
    stage, _ = corpus
    for prepare, config, name in ((prepare_exact, ExactConfig(partitions=3), "exact"),
                                  (prepare_lines, LinesConfig(partitions=3), "lines")):
        clean, work = str(tmp_path / f"{name}-clean"), str(tmp_path / f"{name}-work")
        ref = prepare(stage, clean, config, executor)
        config = replace(config, max_map_tasks=2)
        for phase, unit in (("map", 1), ("reduce", 1), ("final", 0)):
            _crash(prepare, stage, work, config, executor, phase, unit)
        assert prepare(stage, work, config, executor) == ref
        for a, b in zip(list_phase_files(clean, "decisions"), list_phase_files(work, "decisions"),
                        strict=True):
            assert _table_rows(a) == _table_rows(b)


def test_local_and_ray_executors_write_identical_decisions(corpus, tmp_path, executor) -> None:
    stage, _ = corpus
    config = MinHashConfig(threshold=0.8, partitions=3, max_map_tasks=3)
    on_ray, local = str(tmp_path / "ray"), str(tmp_path / "local")
    summary = prepare_minhash(stage, on_ray, config, executor)
    assert prepare_minhash(stage, local, config, LocalExecutor()) == summary
    assert summary["removed"] > 20
    for phase in ("ids", "decisions"):
        files = list_phase_files(on_ray, phase)
        assert [Path(f).name for f in files] == [Path(f).name for f in list_phase_files(local, phase)]
        assert len(files) == len(stage)
        for f in files:
            assert Path(f).read_bytes() == (Path(local) / phase / Path(f).name).read_bytes()
