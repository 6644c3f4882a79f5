"""``pipeline lm train``: estimate a KenLM model from the command line."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm train`` to the ``pipeline`` command's subparsers."""
    lm = subparsers.add_parser("lm", help="KenLM language models")
    sub = lm.add_subparsers(dest="lm_command", required=True)
    add_parser(sub)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand (with its options) to ``subparsers``; return it."""
    p = subparsers.add_parser(
        "train", help="modified Kneser-Ney model (as lmplz) written as ARPA (+ KenLM binary)")
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--input", nargs="+", required=True,
                   help="training files or globs (.jsonl[.gz] with 'text', WARC, plain text)")
    p.add_argument("--output", required=True, help="ARPA file to write (MODEL.arpa)")
    p.add_argument("--discount-fallback", action="store_true",
                   help="use discounts 0.5 1 1.5 where they cannot be estimated (tiny data)")
    p.add_argument("--build-binary", default="auto",
                   help="KenLM build_binary program ('auto': from PATH if there, 'none': skip)")
    p.add_argument("--no-lower", action="store_true", help="do not lower-case")
    p.add_argument("--keep-accents", action="store_true")
    p.add_argument("--keep-digits", action="store_true")
    p.add_argument("--punct", choices=["replace", "remove", "keep"], default="replace")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``lm train`` from parsed arguments; return the exit code (0 ok, 2 bad input)."""
    from pipeline.cli.classifier import normalization_from_args
    from pipeline.text.kenlm.estimate import DiscountError
    from pipeline.text.kenlm.model import train_lm

    binary = None if args.build_binary == "none" else args.build_binary
    try:
        report = train_lm(args.input, args.output, args.order, normalization_from_args(args),
                          args.discount_fallback, binary, show_progress=not args.quiet)
    except (FileNotFoundError, DiscountError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k != "files"}, indent=1))
    return 0
