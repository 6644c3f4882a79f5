"""The recorded ablation runs of issue 14, on one GPU, from a prepared folder.

Needs only torch, numpy and pyarrow (and this checkout). Two parts, each one device call
of under 10 minutes on one H100; each is resumable (a rerun skips finished runs):

``--part a``  the committed ablation (`jobs/ablation.yaml`: every arm, the planted control
              included, seeds 1-3, the ~30M model, 8M tokens per run) with the epoch sampler
              and whole eval sets; prints its report.
``--part b``  proxy agreement: ``--proxy-arms`` x seeds 1-2 with the same ~30M model at
              ``--proxy-tokens`` and with the 125m preset at 4x those tokens; prints both
              reports and the Spearman rank agreement of the arms between the two scales.

``--copy-to DIR`` copies what the record needs (ablation.json, report.md, ablation.svg,
each run's metrics.jsonl and per-document eval losses; no checkpoints) into DIR.

    python benchmarks/ablation_gpu_run.py --prepared out/ablation/prepared --work out/gpu \\
        --part a --parallel 3 --copy-to "$OUT"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.ablation.train import train_all  # noqa: E402

PROXY_ARMS = ["raw", "lid", "lid+heuristics", "all", "raw+shuffled50"]
LARGE_MODEL = {"preset": "125m"}
# 125M at batch 32 x 512: a lower peak rate than the 30M model's 2e-3, compiled
LARGE_TRAIN = {"lr": 1.0e-3, "compile": True}


def ranks(values: list[float]) -> np.ndarray:
    """Ranks from 1 (smallest), ties sharing their mean rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for x in np.unique(v):
        tie = v == x
        r[tie] = r[tie].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))


def arm_means(record: dict) -> dict[str, dict[str, float]]:
    """Mean final (whole-set) loss per arm and eval stream over the record's runs."""
    acc: dict[str, dict[str, list[float]]] = {}
    for run in record["runs"]:
        for e, v in run.get("final_eval", {}).items():
            acc.setdefault(run["arm"], {}).setdefault(e, []).append(v)
    return {a: {e: float(np.mean(v)) for e, v in ev.items()} for a, ev in acc.items()}


def agreement_table(small: dict, large: dict) -> str:
    """Markdown: each arm's mean loss and rank at both scales, and Spearman per eval."""
    ms, ml = arm_means(small), arm_means(large)
    arms = [a for a in small["arm_order"] if a in ms and a in ml]
    evals = list(small["eval"])
    lines = ["| arm | " + " | ".join(f"{e} small (rank) | {e} large (rank)" for e in evals)
             + " |", "|---|" + "---:|---:|" * len(evals)]
    rk = {e: (ranks([ms[a][e] for a in arms]), ranks([ml[a][e] for a in arms])) for e in evals}
    for i, a in enumerate(arms):
        lines.append(f"| {a} | " + " | ".join(
            f"{ms[a][e]:.4f} ({rk[e][0][i]:g}) | {ml[a][e]:.4f} ({rk[e][1][i]:g})"
            for e in evals) + " |")
    lines += ["", "Spearman rank agreement, small vs large: " + "; ".join(
        f"{e} {spearman([ms[a][e] for a in arms], [ml[a][e] for a in arms]):+.2f}"
        for e in evals) + f" ({len(arms)} arms)."]
    return "\n".join(lines)


def copy_results(src: Path, dest: Path) -> None:
    """Copy the record, report, plot, metrics and per-document losses (no checkpoints)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ablation.json", "report.md", "ablation.svg"):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    for f in list(src.glob("runs/*/eval/*.npy")) + list(src.glob("runs/*/metrics.jsonl")):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def merge_runs(sources: list[Path], dest: Path) -> None:
    """Combine the run records and run folders of part-a shares into ``dest``.

    Each run's per-document losses are referenced relative to its record's folder
    (``runs/ARM-seedS/eval/...``), so copying the run folders keeps them valid.
    """
    dest.mkdir(parents=True, exist_ok=True)
    merged: dict | None = None
    for src in sources:
        record = json.loads((src / "ablation.json").read_text(encoding="utf-8"))
        if merged is None:
            merged = {**record, "runs": []}
        have = {(r["arm"], r["seed"]) for r in merged["runs"]}
        merged["runs"] += [r for r in record["runs"] if (r["arm"], r["seed"]) not in have]
        for run in (src / "runs").iterdir():
            shutil.copytree(run, dest / "runs" / run.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoints"))
    if merged is not None:
        (dest / "ablation.json").write_text(json.dumps(merged, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run one part; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default="out/ablation/prepared")
    ap.add_argument("--work", default="out/gpu", help="where runs and reports go")
    ap.add_argument("--part", choices=["a", "b", "merge"], required=True,
                    help="merge: combine part-a runs made on several GPUs (--from) into one record")
    ap.add_argument("--seeds", help="part a: only these seeds (e.g. 1 or 3), for one GPU's share")
    ap.add_argument("--arms", help="part a: only these arms (comma-separated)")
    ap.add_argument("--name", default="committed", help="part a: folder under --work")
    ap.add_argument("--from", dest="sources", help="merge: folders under --work to combine")
    ap.add_argument("--parallel", type=int, default=3, help="runs at once on the GPU")
    ap.add_argument("--proxy-arms", default=",".join(PROXY_ARMS))
    ap.add_argument("--proxy-seeds", default="1,2")
    ap.add_argument("--proxy-tokens", type=int, default=2_000_000,
                    help="tokens per ~30M run; the 125m runs get 4x")
    ap.add_argument("--copy-to", help="copy the results here (e.g. $OUT)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    t0 = time.time()
    if args.part == "a":
        train_all(args.prepared, work / args.name, parallel=args.parallel,
                  arms=args.arms.split(",") if args.arms else None,
                  seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None)
        print((work / args.name / "report.md").read_text(encoding="utf-8"))
        parts = [args.name]
    elif args.part == "merge":
        merge_runs([work / s for s in args.sources.split(",")], work / "committed")
        train_all(args.prepared, work / "committed")  # every run is done: writes the report
        print((work / "committed" / "report.md").read_text(encoding="utf-8"))
        parts = ["committed"]
    else:
        arms = [a for a in args.proxy_arms.split(",") if a]
        seeds = [int(s) for s in args.proxy_seeds.split(",")]
        small = train_all(args.prepared, work / "proxy-small", parallel=args.parallel,
                          arms=arms, seeds=seeds, budget_tokens=args.proxy_tokens)
        t1 = time.time()
        print(f"small proxy runs: {t1 - t0:.0f} s", flush=True)
        large = train_all(args.prepared, work / "proxy-large", overrides=LARGE_TRAIN,
                          parallel=max(1, min(2, args.parallel)), arms=arms, seeds=seeds,
                          budget_tokens=4 * args.proxy_tokens, model=LARGE_MODEL)
        print(f"large proxy runs: {time.time() - t1:.0f} s", flush=True)
        for name in ("proxy-small", "proxy-large"):
            print((work / name / "report.md").read_text(encoding="utf-8"))
        table = agreement_table(small, large)
        (work / "proxy-agreement.md").write_text(table + "\n", encoding="utf-8")
        print("## Proxy agreement\n\n" + table)
        parts = ["proxy-small", "proxy-large"]
    print(f"part {args.part}: {time.time() - t0:.0f} s of wall time", flush=True)
    if args.copy_to:
        for name in parts:
            copy_results(work / name, Path(args.copy_to) / name)
        if (work / "proxy-agreement.md").is_file():
            shutil.copy2(work / "proxy-agreement.md", Path(args.copy_to) / "proxy-agreement.md")
        print(json.dumps({"copied": parts, "to": args.copy_to}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
