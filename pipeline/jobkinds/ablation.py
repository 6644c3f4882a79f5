"""``job: ablation``: prepare every arm (CPU half), then train and report (GPU half).

:mod:`pipeline.ablation` does the work; ``pipeline ablate prepare`` runs the first half
alone through :func:`run_ablation`.
"""

from __future__ import annotations

import argparse
from typing import Any

KIND = "ablation"


def run_ablation(data: dict[str, Any], args: argparse.Namespace, train: bool = True) -> int:
    """Validate and prepare the ablation ``data``; train it too unless ``train`` is False.

    Prints where the prepared folder is and, after training, the report; returns 0.
    """
    from pipeline.ablation.config import validate_ablation
    from pipeline.ablation.prepare import prepare

    cfg = validate_ablation(data, args.output)
    prepared = prepare(cfg, args.address)
    print(f"prepared: {prepared} (carry this folder to the GPU machine)")
    if train:
        from pipeline.ablation.train import train_all

        train_all(prepared)
        print((prepared.parent / "report.md").read_text(encoding="utf-8"))
    return 0


def run(data: dict[str, Any], args: argparse.Namespace) -> int:
    """Prepare and train the ablation ``data``; return 0."""
    return run_ablation(data, args)
