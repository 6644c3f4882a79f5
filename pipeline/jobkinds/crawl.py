"""``job: crawl``, the default kind: read, run the steps, write Parquet.

:mod:`pipeline.execution.runner` does the work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

KIND = "crawl"


def run(data: dict[str, Any], args: argparse.Namespace) -> int:
    """Run the crawl job ``data``; print its summary; return 1 if a shard failed, else 0."""
    from pipeline.execution.runner import run_job

    stats = run_job(data, output=args.output, address=args.address)
    out = Path(stats["output"])
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"stats: {out / 'stats.json'}  plot: {out / 'stats.png'}")
    if stats["failed_shards"]:
        print(f"{len(stats['failed_shards'])} shard(s) failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0
