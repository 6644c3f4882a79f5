"""``job: train``: train the transformer (:mod:`model.train`); needs torch, numpy, pyarrow."""

from __future__ import annotations

import argparse
import json
from typing import Any

KIND = "train"


def run(data: dict[str, Any], args: argparse.Namespace) -> int:
    """Train from the job file ``args.job`` (``--output`` sets ``out_dir``); print a summary."""
    from model.train import run_from_file

    summary = run_from_file(args.job, {"out_dir": args.output} if args.output else None)
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("train_losses", "eval_losses")}, indent=1, default=str))
    return 0
