"""The job-wide top-fraction cut: the driver's peak memory and wall time, old against new.

``select_top_v1`` and ``fasttext_quality_top_v1`` score every shard and then cut the job at
the ``k``-th largest rank. The peer is the previous cut (still in
:mod:`pipeline.text.selection` as the in-memory reference): ``score_shards(k=2**62)``
returns every shard's whole sorted rank list to the driver and :func:`global_threshold`
merges them there (about 24 bytes per document at its peak: the lists, their
concatenation and the partition's copy). The new :func:`cut_top_fraction` is a radix
select over per-shard sorted key files whose driver holds one 65,536-bucket histogram and
at most ``max_candidates`` keys.

A synthetic job of ``--docs`` scores over ``--shards`` shards is written once as the score
files the scoring units leave (``scores/<shard>.npz``: fastText-like P(hq) values rounded
to float32, so ties are common, and 1% of documents unscored); both cuts then reuse them,
so what is timed is the cut itself (the scorer raises if asked to score). Each cut runs in
a fresh child process, on a private local Ray cluster (2 CPUs, 0.5 GB object store) by
default or in-process (``--executor local``, units inline, so its peak includes theirs).
The driver's peak is ``ru_maxrss`` of that child alone (Ray's workers are other processes)
less its resident memory just before the cut. Both cuts must give the same threshold.

Usage, from the repository root::

    python benchmarks/top_fraction_cut.py [--docs 10000000] [--shards 200] [--fraction 0.3]
        [--executor ray|local] [--scratch /tmp/top_fraction_cut]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = "bench-top-fraction"


class _NoScoring:
    """The scorer handed to both cuts: the score files exist, so it must never run."""

    def setup(self) -> None:
        raise RuntimeError("the benchmark's score files were not reused")

    def score(self, doc: object) -> tuple[float | None, float | None]:
        raise RuntimeError("the benchmark's score files were not reused")


def write_scores(workdir: Path, docs: int, shards: int, seed: int = 0) -> list[str]:
    """Write ``shards`` score files holding ``docs`` ranks in all; return the shard ids."""
    rng = np.random.default_rng(seed)
    ids = [f"{s:05d}" for s in range(shards)]
    sizes = np.full(shards, docs // shards)
    sizes[: docs % shards] += 1
    (workdir / "scores").mkdir(parents=True, exist_ok=True)
    for sid, n in zip(ids, sizes, strict=True):
        p = rng.beta(0.6, 1.8, size=n).astype(np.float32).astype(np.float64)
        rank = np.where(rng.random(n) < 0.01, -np.inf, p)
        value = np.where(np.isinf(rank), np.nan, p)
        # keys are not read by the cut; documents' lookups are not part of this benchmark
        np.savez(workdir / "scores" / f"{sid}.npz", key=np.empty(0, dtype=str), value=value,
                 rank=rank, fingerprint=np.asarray(FINGERPRINT))
    return ids


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def child(variant: str, workdir: str, shards: int, fraction: float, executor_kind: str,
          ray_tmp: str) -> None:
    """Run one cut in this process; print ``RESULT {json}``."""
    import math

    from pipeline.core.step import StageShard
    from pipeline.execution.executor import LocalExecutor, RayExecutor
    from pipeline.text.selection import (
        cut_top_fraction,
        global_threshold,
        read_decision,
        score_shards,
    )

    stage = [StageShard(f"{s:05d}", ()) for s in range(shards)]
    if executor_kind == "ray":
        import ray

        ray.init(address="local", num_cpus=2, object_store_memory=512 * 2**20,
                 include_dashboard=False, _temp_dir=ray_tmp, log_to_driver=False)
        executor = RayExecutor()
        executor.run(len, [((),)] * 4)  # workers up before the clock starts
    else:
        executor = LocalExecutor()
    (Path(workdir) / "decision.json").unlink(missing_ok=True)
    before = _rss_now()
    t0 = time.perf_counter()
    info: dict = {}
    if variant == "old":
        tops, total = score_shards(_NoScoring(), stage, workdir, FINGERPRINT, k=2**62,
                                   executor=executor, desc="old cut")
        k = math.ceil(fraction * total)
        threshold = global_threshold(tops, k)
        info["values_in_driver"] = int(sum(t.size for t in tops))
    else:
        stats = cut_top_fraction(_NoScoring(), stage, workdir, FINGERPRINT, fraction, executor,
                                 "new cut")
        decision = read_decision(workdir)
        threshold, k, total = decision["threshold"], decision["k"], decision["total"]
        info.update(fanouts=stats.fanouts, candidates=stats.candidates, buckets=stats.buckets)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if executor_kind == "ray":
        import ray

        ray.shutdown()
    print("RESULT " + json.dumps({"variant": variant, "wall_s": wall, "rss_before": before,
                                  "peak_rss": peak, "threshold": threshold, "k": k,
                                  "total": total, **info}))


def _run_child(variant: str, workdir: Path, args: argparse.Namespace) -> dict:
    ray_tmp = tempfile.mkdtemp(prefix="rtfc-", dir="/tmp")
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run([sys.executable, __file__, "_child", variant, str(workdir),
                               str(args.shards), str(args.fraction), args.executor, ray_tmp],
                              capture_output=True, text=True, env=env, check=False)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{variant} cut failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    """Write the synthetic score files, run both cuts, print the figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--executor", choices=["ray", "local"], default="ray")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each cut (best wall kept)")
    ap.add_argument("--variants", nargs="+", choices=["old", "new"], default=["old", "new"],
                    help="cuts to run (new alone: the bounded driver at sizes old cannot hold)")
    ap.add_argument("--scratch", default="/tmp/top_fraction_cut")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    work = scratch / "work"
    t0 = time.perf_counter()
    write_scores(work, args.docs, args.shards)
    print(f"wrote {args.docs:,} scores in {args.shards} shards "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for variant in args.variants:
            r = _run_child(variant, work, args)
            if variant not in best or r["wall_s"] < best[variant]["wall_s"]:
                best[variant] = r
    old, new = best.get("old"), best.get("new")
    if old and new and (old["threshold"] != new["threshold"] or old["k"] != new["k"]):
        raise SystemExit(f"the cuts differ: old {old} new {new}")
    mib = 2**20
    any_run = new or old
    print(f"date {datetime.date.today()}  executor {args.executor}  docs {args.docs:,}  "
          f"shards {args.shards}  fraction {args.fraction}  k {any_run['k']:,}  "
          f"threshold {any_run['threshold']!r}" + (" (same in both)" if old and new else ""))
    print("| cut | wall s | driver peak RSS MiB | driver growth during cut MiB | held in driver |")
    print("|---|---|---|---|---|")
    for name, r in (("old: score_shards(k=2**62) + global_threshold", old),
                    ("new: cut_top_fraction (radix select)", new)):
        if r is None:
            continue
        held = (f"{r['values_in_driver']:,} ranks" if "values_in_driver" in r else
                f"{r['buckets']:,} counters + {r['candidates']:,} keys, "
                f"{r['fanouts']} fan-outs")
        print(f"| {name} | {r['wall_s']:.2f} | {r['peak_rss'] / mib:.0f} | "
              f"{(r['peak_rss'] - r['rss_before']) / mib:.0f} | {held} |")
    if old and new:
        growth = [r["peak_rss"] - r["rss_before"] for r in (old, new)]
        print(f"ratio old/new: wall {old['wall_s'] / new['wall_s']:.2f}x, "
              f"driver growth {growth[0] / max(growth[1], 1):.1f}x")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        v, w, s, f, e, t = sys.argv[2:8]
        child(v, w, int(s), float(f), e, t)
    else:
        main()
