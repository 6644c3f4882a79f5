"""``pipeline classifier train``: train the fastText quality classifier from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.text.normalize import NormalizeOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``classifier train`` to the ``pipeline`` command's subparsers."""
    clf = subparsers.add_parser("classifier", help="fastText quality classifier")
    sub = clf.add_subparsers(dest="classifier_command", required=True)
    add_parser(sub)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand (with its options) to ``subparsers``; return it."""
    p = subparsers.add_parser("train", help="train hq-vs-lq fastText model, print held-out P/R")
    p.add_argument("--positive", nargs="+", required=True, help="target (hq) files or globs")
    p.add_argument("--negative", nargs="+", required=True, help="raw (lq) files or globs")
    p.add_argument("--output", required=True, help="model file to write (MODEL.bin)")
    p.add_argument("--epoch", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--bucket", type=int, default=200_000, help="hash buckets of word n-grams")
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--holdout", type=float, default=0.1, help="held-out share of each class")
    p.add_argument("--no-balance", action="store_true",
                   help="keep all training documents of the larger class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-lower", action="store_true", help="do not lower-case")
    p.add_argument("--keep-accents", action="store_true")
    p.add_argument("--keep-digits", action="store_true")
    p.add_argument("--punct", choices=["replace", "remove", "keep"], default="replace")
    p.set_defaults(func=main)
    return p


def normalization_from_args(args: argparse.Namespace) -> NormalizeOptions:
    """Return the normalisation options the ``--no-lower``/``--keep-*``/``--punct`` flags pick."""
    return NormalizeOptions(lower=not args.no_lower, strip_accents=not args.keep_accents,
                            digits_to_zero=not args.keep_digits, punct=args.punct)


def main(args: argparse.Namespace) -> int:
    """Run ``classifier train`` from parsed arguments; return the exit code (0 ok, 2 bad input)."""
    from pipeline.text.quality import TrainOptions, train_classifier

    opts = TrainOptions(epoch=args.epoch, lr=args.lr, word_ngrams=args.word_ngrams, dim=args.dim, bucket=args.bucket,
                        min_count=args.min_count, holdout=args.holdout,
                        balance=not args.no_balance, seed=args.seed, threads=args.threads,
                        normalization=normalization_from_args(args))
    try:
        report = train_classifier(args.positive, args.negative, args.output, opts)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hold = report.get("holdout")
    if hold:
        print(f"held-out precision {hold['precision']:.4f} recall {hold['recall']:.4f} "
              f"at P(hq) >= {hold['threshold']}")
    print(json.dumps({k: v for k, v in report.items() if k not in ("positive_files",
                                                                 "negative_files")}, indent=1))
    return 0
