"""Memory per dedup task: bytes per row of each task kind, and a tiny cap against the default.

``measure``: builds a stage of webmix's response payloads (decoded text, one shard per
WARC file), runs the exact, lines and MinHash jobs in this process with one partition (so
one task holds every row), then runs each kind of task again by itself under
:mod:`tracemalloc` and prints its peak traced bytes per row (per input byte for ``map``,
per routed byte on disk for ``final``, per candidate pair for ``verify``): the figures behind
``pipeline.dedup.phases.memory.BYTES_PER_ROW``. It also prints the resident size of a fresh
Ray worker that has imported the dedup modules (``BASE_BYTES`` is set from the larger
resident sizes ``compare`` measures in workers that ran earlier tasks).

``compare``: runs the three jobs on Ray (2 CPUs) with the default cap and with a cap a
quarter of the default's largest reduce task, so partitions split, and checks that every
decision file is identical; prints per phase the tasks, the declared memory per task and
the largest task's measured peak RSS.

    python benchmarks/dedup_task_memory.py measure
    python benchmarks/dedup_task_memory.py compare
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.core.step import StageShard, StepStats  # noqa: E402
from pipeline.dedup.phases import components, exact, lines, minhash, shuffle  # noqa: E402
from pipeline.dedup.phases.memory import BASE_BYTES, GB  # noqa: E402
from pipeline.dedup.phases.store import done_info, list_phase_files  # noqa: E402
from pipeline.execution.executor import LocalExecutor, RayExecutor  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "webmix"


def build_stage(root: Path) -> list[StageShard]:
    """webmix's response payloads as stage shards (one per WARC file), as Parquet."""
    from pipeline.io.readers import ReadOptions, read_shard
    from pipeline.io.writer import write_documents_parquet

    stage = []
    for path in sorted(DATA.glob("webmix-*.warc.gz")):
        docs = list(read_shard(str(path), "warc", 0, 1, ReadOptions(html_only=False), StepStats()))
        out = root / f"{path.name.split('.')[0]}.parquet"
        write_documents_parquet(docs, out, {})
        stage.append(StageShard(path.name.split(".")[0], (str(out),)))
    return stage


def traced(fn, *args) -> int:
    """Peak bytes traced while ``fn(*args)`` runs."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def worker_base() -> int:
    """Resident bytes of a Ray worker once it imported the dedup modules."""
    ex = RayExecutor(num_cpus=1)
    try:
        return ex.run(_worker_rss, [()], desc="base")[0]
    finally:
        ex.shutdown()


def _worker_rss() -> int:
    import pipeline.dedup.phases.components  # noqa: F401
    import pipeline.dedup.phases.minhash  # noqa: F401

    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(stage: list[StageShard], tmp: Path) -> dict[str, float]:
    """Peak traced bytes per row of every task kind (one partition holds all rows)."""
    ex = LocalExecutor()
    out: dict[str, float] = {}
    S = len(stage)
    ordered = shuffle.sorted_shards(stage)
    inputs = sum(os.path.getsize(f) for s in stage for f in s.files)

    work = str(tmp / "exact")
    exact.prepare_exact(stage, work, exact.ExactConfig(partitions=1), ex)
    rows = int(shuffle.bucket_rows(work, S, 1).sum())
    out["exact.reduce"] = traced(exact._reduce, work, 0, (0, 0, 1), S, S, 1) / rows
    routed = int(shuffle.routed_bytes(work, "reduce", 1, 1).sum())
    out["final.routed_byte(exact)"] = traced(shuffle._finalize_group, work, "reduce", 0, 1, S,
                                             1) / max(routed, 1)
    out["map.input_byte(exact)"] = max(
        traced(shuffle._map_task, exact._rows, exact._partition, True, [s], i, i, work, 1,
               exact.ExactConfig(partitions=1)) / sum(os.path.getsize(f) for f in s.files)
        for i, s in enumerate(ordered))

    work = str(tmp / "lines")
    lines.prepare_lines(stage, work, lines.LinesConfig(partitions=1), ex)
    rows = int(shuffle.bucket_rows(work, S, 1).sum())
    out["lines.reduce"] = traced(lines._reduce, work, 0, (0, 0, 1), S, S, 1, 2) / rows
    routed = int(shuffle.routed_bytes(work, "reduce", 1, 1).sum())
    out["final.routed_byte(lines)"] = traced(shuffle._finalize_group, work, "reduce", 0, 1, S,
                                             1) / max(routed, 1)
    out["map.input_byte(lines)"] = max(
        traced(shuffle._map_task, lines._rows, lines._partition, False, [s], i, i, work, 1,
               lines.LinesConfig(partitions=1)) / sum(os.path.getsize(f) for f in s.files)
        for i, s in enumerate(ordered))

    work = str(tmp / "minhash")
    config = minhash.MinHashConfig(partitions=1, threshold=0.7)
    minhash.prepare_minhash(stage, work, config, ex)
    rows = int(shuffle.bucket_rows(work, S, 1).sum())
    out["minhash.candidates"] = traced(minhash._candidates, work, 0, (0, 0, 1), S, S,
                                       config) / rows
    pairs = done_info(work, "candidates", "p00000")["edges"]  # one group: all of them
    shards = dict(enumerate(ordered))
    out["minhash.verify(verify1)"] = traced(minhash._verify1, work, 0, shards, S,
                                            config) / max(pairs, 1)
    out["minhash.verify(verify2)"] = traced(minhash._verify2, work, 0, S, config) / max(pairs, 1)
    out["map.input_byte(minhash)"] = max(
        traced(shuffle._map_task, minhash._rows, minhash._partition, True, [s], i, i, work, 1,
               config) / sum(os.path.getsize(f) for f in s.files)
        for i, s in enumerate(ordered))
    print(f"stage: {S} shards, {inputs / 1e6:.1f} MB Parquet")

    # components: a graph big enough for the per-row cost to dominate (webmix has few edges)
    rng = np.random.default_rng(3)
    n = 400_000
    a = rng.integers(0, n, 2 * n, dtype=np.int64)
    b = rng.integers(0, n, 2 * n, dtype=np.int64)
    from pipeline.dedup.phases.store import write_table

    edges = tmp / "edges.parquet"
    write_table(edges, {"a": a, "b": b})
    work = str(tmp / "cc")
    components.run_components(work, [edges], 1, 1, 1, ex)
    info = done_info(work, components.round_phase(1), "p00000")
    out["components"] = traced(components._round_task, work, 1, 0, 1, 1) / info["rows_in"]
    return out


def _decisions(work: str) -> list[bytes]:
    return [Path(f).read_bytes() for f in list_phase_files(work, "decisions")]


def _memory(work: str) -> dict[str, dict]:
    out = {}
    for path in sorted(Path(work).glob("*/_memory.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def compare(stage: list[StageShard], tmp: Path) -> None:
    """Default cap against a cap a quarter of the largest default reduce task."""
    ex = RayExecutor(num_cpus=2)
    jobs = [("exact", exact.prepare_exact, exact.ExactConfig(), "reduce"),
            ("lines", lines.prepare_lines, lines.LinesConfig(), "reduce"),
            ("minhash", minhash.prepare_minhash, minhash.MinHashConfig(threshold=0.7),
             "candidates")]
    try:
        for name, prepare, config, phase in jobs:
            default = str(tmp / f"{name}-default")
            t = time.perf_counter()
            prepare(stage, default, config, ex)
            t_default = time.perf_counter() - t
            mem = _memory(default)
            room = (mem[phase]["declared_bytes"] - BASE_BYTES) // 4
            tiny = replace(config, task_memory_gb=(BASE_BYTES + room) / GB)
            small = str(tmp / f"{name}-tiny")
            t = time.perf_counter()
            prepare(stage, small, tiny, ex)
            t_tiny = time.perf_counter() - t
            same = _decisions(default) == _decisions(small)
            print(f"\n{name}: decisions identical: {same}; wall {t_default:.1f} s (default) "
                  f"{t_tiny:.1f} s (cap {tiny.task_memory_gb * 1024:.2f} MiB)")
            print("| phase | tasks default | declared MB | peak RSS MB | tasks tiny cap "
                  "| declared MB | peak RSS MB |")
            print("|---|---|---|---|---|---|---|")
            tiny_mem = _memory(small)
            for ph, m in mem.items():
                tm = tiny_mem.get(ph, {})
                print(f"| {ph} | {m['units']} | {m['declared_bytes'] / 1e6:.1f} | "
                      f"{m['max_task_rss'] / 1e6:.0f} | {tm.get('units')} | "
                      f"{tm.get('declared_bytes', 0) / 1e6:.1f} | "
                      f"{tm.get('max_task_rss', 0) / 1e6:.0f} |")
            if not same:
                raise SystemExit(f"{name}: decisions differ between the default and the tiny cap")
    finally:
        ex.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["measure", "compare"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        stage = build_stage(tmp)
        if args.mode == "measure":
            for kind, v in measure(stage, tmp).items():
                print(f"{kind:28s} {v:10.1f} bytes")
            print(f"{'worker base RSS':28s} {worker_base() / 2**20:10.1f} MiB")
        else:
            compare(stage, tmp)


if __name__ == "__main__":
    main()
