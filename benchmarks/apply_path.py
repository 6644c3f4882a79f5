"""The dedup apply stages on the columnar path against the document path, same run.

After a global step's ``prepare``, every shard task applies the step's decisions to the
shard's stage Parquet and writes the survivors (``pipeline.execution.runner.process_unit``).
This benchmark times that pass for ``dedup_exact_v1``, ``dedup_minhash_v1`` and
``dedup_lines_v1`` both ways on the same decisions:

1. runs the dedup job of ``benchmarks/dedup_scale.py`` (same steps, ``partitions = 2 *
   scale``, ``keep_removed`` as given) once with the local executor on a corpus that
   benchmark built (``--corpus /tmp/dedup_scale/x4``), into ``--work`` (reused when
   finished);
2. for each apply stage and each path, in a fresh child process (one per stage and path,
   like a worker that runs the stage's shard tasks one after another), reruns every
   shard's apply task into a scratch folder that shares the finished job's decisions,
   metering each task with :func:`pipeline.dedup.phases.store.metered_call` (CPU-s, peak
   RSS during the task, RSS at its start); ``REFINERY_DOCUMENT_APPLY=1`` selects the
   document path (``Step.run`` on :class:`~pipeline.core.document.Document` objects), its
   absence the columnar one (Arrow tables, ``TableStep.apply_table``);
3. checks that both paths wrote the same bytes (data parts, removed records, samples)
   and prints CPU-s per stage, the document/columnar ratio, and the largest task's peak RSS.

Usage (repository root)::

    .venv/bin/python benchmarks/apply_path.py --corpus /tmp/dedup_scale/x4 --work /tmp/apply_x4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("dedup_exact_v1", "dedup_minhash_v1", "dedup_lines_v1")
PATHS = ("document", "columnar")


def run_dedup_job(corpus: Path, out: Path, scale: int, keep_removed: bool) -> None:
    """Run the dedup_scale job on ``corpus``'s JSONL into ``out`` (local executor)."""
    from pipeline.execution.executor import LocalExecutor
    from pipeline.execution.runner import run_job

    p = max(2, 2 * scale)
    job = {"job": "crawl", "name": f"apply-path-x{scale}", "executor": "local",
           "inputs": [str(corpus / "input" / "*.jsonl")], "output": str(out),
           "read": {"format": "jsonl"},
           "steps": [{name: {"partitions": p}} for name in STEPS],
           "write": {"keep_removed": keep_removed}}
    run_job(job, executor=LocalExecutor())


def child(out: Path, scratch: Path, stage: int) -> dict:
    """Rerun every shard task of apply ``stage`` of the finished job ``out`` into
    ``scratch``; return the per-task meters summed (CPU) and maxed (RSS)."""
    from pipeline.core.config import parse_steps
    from pipeline.core.step import StageShard
    from pipeline.dedup.phases.store import metered_call
    from pipeline.execution.runner import process_unit, split_stages

    job = json.loads((out / "_job.json").read_text())["job"]
    stages = split_stages(parse_steps(job["steps"]))
    scratch.mkdir(parents=True)
    (scratch / "_global").symlink_to(out / "_global")
    units = []
    for p in sorted((out / "_progress" / f"stage-{stage - 1}").glob("*.json")):
        rec = json.loads(p.read_text())
        units.append(StageShard(rec["shard_id"], tuple(rec["files"])))
    final = stage == len(stages) - 1
    meters = [metered_call(process_unit, u, stage, stages[stage], job, str(scratch), final)
              for u in units]
    return {"tasks": len(meters), "cpu_s": sum(m["cpu_s"] for m in meters),
            "max_task_rss": max(m["peak_rss"] for m in meters),
            "max_task_rss_growth": max(m["peak_rss"] - m["rss_start"] for m in meters)}


def outputs(folder: Path) -> dict[str, bytes]:
    """The Parquet files a stage task wrote under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))
            if "_global" not in p.relative_to(folder).parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a dedup_scale corpus (x4)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the job and scratch")
    ap.add_argument("--keep-removed", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("OUT", "SCRATCH", "STAGE"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(Path(a.child[0]), Path(a.child[1]), int(a.child[2]))))
        return
    truth = json.loads((a.corpus / "truth.json").read_text())
    out = a.work / "out"
    if not (out / "_SUCCESS").exists():
        shutil.rmtree(out, ignore_errors=True)
        run_dedup_job(a.corpus, out, truth["scale"], a.keep_removed)
    rows = []
    for stage, name in enumerate(STEPS, start=1):
        result = {}
        for path in PATHS:
            scratch = a.work / f"{path}-stage{stage}"
            shutil.rmtree(scratch, ignore_errors=True)
            env = {k: v for k, v in os.environ.items() if k != "REFINERY_DOCUMENT_APPLY"}
            if path == "document":
                env["REFINERY_DOCUMENT_APPLY"] = "1"
            run = subprocess.run([sys.executable, __file__, "--corpus", str(a.corpus),
                                  "--work", str(a.work), "--child", str(out), str(scratch),
                                  str(stage)], env=env, capture_output=True, text=True,
                                 check=True)
            result[path] = json.loads(run.stdout.strip().splitlines()[-1])
        same = outputs(a.work / f"document-stage{stage}") == outputs(
            a.work / f"columnar-stage{stage}")
        d, c = result["document"], result["columnar"]
        rows.append((name, d, c, same))
    mib = 1 << 20
    print(f"corpus {a.corpus} ({truth['documents']} documents, {truth['text_bytes'] / 1e6:.0f} MB"
          f" text, {truth['shards']} shards), keep_removed={a.keep_removed}")
    print("| stage | document CPU-s | columnar CPU-s | document/columnar | largest task peak RSS "
          "doc -> col (MiB) | growth in task doc -> col (MiB) | same bytes |")
    print("|---|---|---|---|---|---|---|")
    for name, d, c, same in rows:
        print(f"| {name} | {d['cpu_s']:.2f} | {c['cpu_s']:.2f} | {d['cpu_s'] / c['cpu_s']:.2f}x | "
              f"{d['max_task_rss'] / mib:.0f} -> {c['max_task_rss'] / mib:.0f} | "
              f"{d['max_task_rss_growth'] / mib:.0f} -> {c['max_task_rss_growth'] / mib:.0f} | "
              f"{'yes' if same else 'NO'} |")
    if not all(r[3] for r in rows):
        raise SystemExit("the two paths wrote different bytes")


if __name__ == "__main__":
    main()
