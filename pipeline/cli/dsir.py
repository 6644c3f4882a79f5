"""``pipeline dsir fit``: fit DSIR's target and raw bag-of-n-grams models from files.

Files are counted one executor unit each: on Ray (``--address``, else ``RAY_ADDRESS``, else
a local cluster), or in this process with ``--local``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dsir fit`` to the ``pipeline`` command's subparsers."""
    dsir = subparsers.add_parser("dsir", help="DSIR importance-resampling models")
    sub = dsir.add_subparsers(dest="dsir_command", required=True)
    add_parser(sub)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand (with its options) to ``subparsers``; return it."""
    p = subparsers.add_parser("fit", help="hashed n-gram models of target and raw text")
    p.add_argument("--target", nargs="+", required=True, help="target files or globs")
    p.add_argument("--raw", nargs="+", required=True, help="raw-pool files or globs")
    p.add_argument("--output", required=True, help="model file to write (MODEL.npz)")
    p.add_argument("--buckets", type=int, default=10_000)
    p.add_argument("--ngrams", type=int, choices=[1, 2], default=2)
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per document used")
    p.add_argument("--smoothing", type=float, default=1.0, help="add-k smoothing of counts")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    where.add_argument("--local", action="store_true",
                       help="count in this process, without Ray")
    p.set_defaults(func=main)
    return p


def fit(target: list[str], raw: list[str], output: str, buckets: int = 10_000,
        ngrams: int = 2, max_tokens: int | None = None, smoothing: float = 1.0,
        executor: Executor | None = None) -> dict[str, object]:
    """Fit and save a DSIR model (counting one ``executor`` unit per file); return its report.

    Without ``executor``, a Ray executor is made for the call and shut down after it.
    """
    from pipeline.execution.executor import make_executor
    from pipeline.text.corpus import describe_files, expand_paths
    from pipeline.text.dsir import DSIRModel, FeatureOptions, count_files

    t0 = time.time()
    feats = FeatureOptions(buckets=buckets, ngrams=ngrams, max_tokens=max_tokens)
    tfiles, rfiles = expand_paths(target), expand_paths(raw)
    own = executor is None
    executor = make_executor("ray") if executor is None else executor
    try:
        tcounts, tdocs = count_files(tfiles, feats, executor, "target features")
        rcounts, rdocs = count_files(rfiles, feats, executor, "raw features")
    finally:
        if own:
            executor.shutdown()
    if tcounts.sum() == 0 or rcounts.sum() == 0:
        raise ValueError("the target or the raw files have no tokens")
    model = DSIRModel(tcounts, rcounts, feats, smoothing)
    lr = model.log_ratio
    report = {"target_docs": tdocs, "raw_docs": rdocs, "target_features": int(tcounts.sum()),
              "raw_features": int(rcounts.sum()), "buckets": buckets,
              "log_ratio_range": [round(float(lr.min()), 3), round(float(lr.max()), 3)],
              "seconds": round(time.time() - t0, 1)}
    model.save(output, describe_files(tfiles) + describe_files(rfiles),
               {**report, "target_files": tfiles, "raw_files": rfiles})
    with open(output + ".report.md", "w", encoding="utf-8") as f:
        f.write(f"# DSIR model {output}\n\n- target files: {', '.join(tfiles)}\n"
                f"- raw files: {', '.join(rfiles)}\n- {json.dumps(report)}\n")
    return report


def main(args: argparse.Namespace) -> int:
    """Run ``dsir fit`` from parsed arguments; return the exit code (0 ok, 1 a file could
    not be counted, 2 bad input)."""
    from pipeline.execution.executor import TaskFailures, make_executor

    executor = make_executor("local" if args.local else "ray", address=args.address)
    try:
        report = fit(args.target, args.raw, args.output, args.buckets, args.ngrams,
                     args.max_tokens, args.smoothing, executor=executor)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TaskFailures as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        executor.shutdown()
    print(json.dumps(report, indent=1))
    return 0
