"""The ``pipeline`` command: run jobs, show their status."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import JobConfigError, load_job_dict

    try:
        data = load_job_dict(args.job)
        kind = data.get("job", "crawl")
        if kind == "train":
            from model.train import run_from_file

            summary = run_from_file(args.job, {"out_dir": args.output} if args.output else None)
            print(json.dumps(summary, indent=1, default=str))
            return 0
        if kind != "crawl":
            raise JobConfigError(f"{args.job}: job: {kind!r} is not a known job kind (crawl, train)")
        from pipeline.runner import run_job

        stats = run_job(data, output=args.output, address=args.address)
    except JobConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(
            f"error: cannot join the Ray cluster ({str(e).splitlines()[-1]}); check --address or "
            "RAY_ADDRESS, and for a cluster with token authentication set RAY_AUTH_MODE=token "
            "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)",
            file=sys.stderr,
        )
        return 2
    out = Path(stats["output"])
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"stats: {out / 'stats.json'}  plot: {out / 'stats.png'}")
    if stats["failed_shards"]:
        print(f"{len(stats['failed_shards'])} shard(s) failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.report import job_status

    print(job_status(Path(args.outdir)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``pipeline`` command."""
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file (crawl or train)")
    run.add_argument("job", help="job YAML file")
    run.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    run.add_argument("--output", help="output folder (overrides the job's 'output')")
    run.set_defaults(func=_cmd_run)
    status = sub.add_parser("status", help="show what a job's output folder has done")
    status.add_argument("outdir")
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pipeline`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
