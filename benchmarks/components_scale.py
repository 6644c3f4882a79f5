"""Connected components at growing edge counts: the old single union-find task against the
distributed star rounds (``pipeline/dedup/phases/components.py``) with P partitions.

Edges are generated with the structure of MinHash duplicate edges (seeded): clusters of
Zipf-distributed sizes (exponent 2, at most 20,000 documents, so a few giant clusters
and many pairs), each a star from one member (a bucket head) plus 0.34 extra edges per
member between random members (distinct edges = 1.34 x documents removed, as measured on
webmix), refs ``shard << 32 | position`` over 4,096 shards. They are written as 16 Parquet
files (columns ``a``, ``b``, like the ``verify2`` outputs). Each measurement runs in a
fresh Python process:

* ``old``: the former ``components`` task: read every file, de-duplicate the pairs,
  ``components_of_refs``, route ``(ref, cluster, size)`` to the shard groups;
* ``new``: ``run_components`` under ``LocalExecutor`` (tasks one after another, so the
  process's peak resident size is its baseline plus the largest task).

Reported per run: the process's peak RSS (``VmHWM``) and that minus the baseline of
the same process before the work (interpreter, numpy, pyarrow, project imports), the largest
task's peak of traced allocations (``tracemalloc``: numpy arrays included), CPU seconds
and wall seconds; for ``new`` also the rounds. Both outputs are compared: identical rows.

    python benchmarks/components_scale.py --edges 1e6 4e6 16e6 --partitions 16 \\
        --out /tmp/components-scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from pipeline.dedup.phases.store import peak_rss

SHARDS = 4096
INPUT_FILES = 16


def make_edges(n_edges: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded MinHash-like duplicate edges (see the module docstring), about ``n_edges``."""
    rng = np.random.default_rng(seed)
    removed = int(n_edges / 1.34)
    sizes = np.minimum(rng.zipf(2.0, removed), 20_000)
    sizes = sizes[np.cumsum(sizes - 1) <= removed] + 0
    sizes = sizes[sizes > 1]
    members = int(sizes.sum())
    node = rng.permutation(members * 4)[:members]  # documents scattered among non-duplicates
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cluster_of = np.repeat(np.arange(len(sizes)), sizes)
    head = node[starts + rng.integers(0, sizes)][cluster_of]
    star = head != node
    a, b = [head[star]], [node[star]]
    extra = int(0.34 * (members - len(sizes)))
    pick = rng.integers(0, members, extra)
    other = starts[cluster_of[pick]] + rng.integers(0, sizes[cluster_of[pick]])
    a.append(node[pick])
    b.append(node[other])
    a, b = np.concatenate(a), np.concatenate(b)
    keep = a != b
    a, b = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    refs = lambda x: ((x % SHARDS) << 32) | (x // SHARDS)  # noqa: E731
    return refs(a).astype(np.int64), refs(b).astype(np.int64)


def write_inputs(folder: Path, a: np.ndarray, b: np.ndarray) -> list[str]:
    from pipeline.dedup.phases.store import write_table

    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(a)), INPUT_FILES)):
        path = folder / f"e{i:03d}.parquet"
        write_table(path, {"a": a[idx], "b": b[idx]})
        paths.append(str(path))
    return paths


def run_old(inputs: list[str], work: str) -> dict:
    """The former single ``components`` task, measured in this process."""
    from pipeline.dedup.components import components_of_refs
    from pipeline.dedup.minhash import unique_pairs
    from pipeline.dedup.phases.shuffle import concat, route
    from pipeline.dedup.phases.store import read_table

    base = peak_rss()
    tracemalloc.start()
    cpu, wall = time.process_time(), time.perf_counter()
    tables = [read_table(f) for f in inputs]
    edges = unique_pairs(np.stack([concat(tables, "a", np.int64), concat(tables, "b", np.int64)],
                                  axis=1))
    del tables
    refs, roots, sizes = components_of_refs(edges[:, 0], edges[:, 1])
    route(work, "components", 0, {"ref": refs, "cluster": roots, "size": sizes.astype(np.int64)},
          SHARDS, 1)
    out = {"traced_peak": tracemalloc.get_traced_memory()[1],
           "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
           "edges": int(len(edges)), "clusters": int(len(np.unique(roots))),
           "removed": int((refs != roots).sum())}
    tracemalloc.stop()
    return {**out, "rss_peak": peak_rss(), "rss_base": base}


def run_new(inputs: list[str], work: str, partitions: int) -> dict:
    """``run_components`` under ``LocalExecutor``, measured in this process."""
    from pipeline.dedup.phases.components import run_components
    from pipeline.execution.executor import LocalExecutor

    base = peak_rss()
    cpu, wall = time.process_time(), time.perf_counter()
    summary = run_components(work, inputs, partitions, SHARDS, 1, LocalExecutor())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = json.loads((Path(work) / "components.json").read_text())
    return {**summary, "cpu_s": cpu, "wall_s": wall, "rounds": stats["rounds"],
            "traced_peak": stats["max_task_peak_bytes"], "rss_peak": peak_rss(), "rss_base": base,
            "max_rows_in": max(r.get("max_rows_in", 0) for r in stats["per_round"])}


def _same_rows(old_work: str, new_work: str, partitions: int) -> bool:
    from pipeline.dedup.phases.shuffle import concat, read_routed

    old = read_routed(old_work, "components", 0, 0)
    new = [read_routed(new_work, "components", p, 0) for p in range(partitions)]
    ref = concat(new, "ref", np.int64)
    order = np.argsort(ref)
    return all(np.array_equal(concat(new, k, np.int64)[order], old[k]) for k in old)


def _child(args: argparse.Namespace) -> None:
    inputs = sorted(str(p) for p in Path(args.inputs).glob("e*.parquet"))
    if args.child == "old":
        result = run_old(inputs, args.work)
    else:
        result = run_new(inputs, args.work, args.partitions[0])
    print(json.dumps(result))


def _measure(kind: str, inputs: Path, work: Path, partitions: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--inputs", str(inputs), "--work", str(work),
           "--partitions", str(partitions)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=float, nargs="+", default=[1e6, 4e6, 16e6])
    parser.add_argument("--partitions", type=int, nargs="+", default=[16])
    parser.add_argument("--out", default="/tmp/components-scale")
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    out = Path(args.out)
    rows = []
    print("| edges | version | P | rounds | largest task: traced peak | process peak RSS "
          "(above baseline) | CPU s | wall s | ratio old/new traced |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    mb = 1 / 2**20
    for e in args.edges:
        folder = out / f"e{int(e)}"
        a, b = make_edges(int(e))
        inputs = folder / "inputs"
        write_inputs(inputs, a, b)
        del a, b
        old = _measure("old", inputs, folder / "old")
        rows.append({"edges_target": int(e), "version": "old", **old})
        print(f"| {old['edges']:,} | old (one task) | 1 | - | {old['traced_peak'] * mb:,.0f} MiB "
              f"| {old['rss_peak'] * mb:,.0f} MiB ({(old['rss_peak'] - old['rss_base']) * mb:,.0f})"
              f" | {old['cpu_s']:.1f} | {old['wall_s']:.1f} | |", flush=True)
        for p in args.partitions:
            new = _measure("new", inputs, folder / f"new-p{p}", p)
            same = _same_rows(str(folder / "old"), str(folder / f"new-p{p}"), p)
            rows.append({"edges_target": int(e), "version": "new", "partitions": p,
                         "identical": same, **new})
            ratio = old["traced_peak"] / max(new["traced_peak"], 1)
            print(f"| {new['edges']:,} | new (star rounds){'' if same else ' DIFFERENT'} | {p} | "
                  f"{new['rounds']} | {new['traced_peak'] * mb:,.0f} MiB | "
                  f"{new['rss_peak'] * mb:,.0f} MiB "
                  f"({(new['rss_peak'] - new['rss_base']) * mb:,.0f}) | {new['cpu_s']:.1f} | "
                  f"{new['wall_s']:.1f} | {ratio:.1f}x |", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
