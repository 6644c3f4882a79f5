"""Command line: `tokenizer train ...` and `tokenizer encode ...`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tokenizer.encoder import Tokenizer
from tokenizer.trainer import train_bpe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenizer", description="Byte-level BPE tokenizer.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a BPE vocabulary and save it in all formats")
    train.add_argument("--input", nargs="+", required=True, help="UTF-8 text files")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument(
        "--special-token", action="append", default=[], help="repeatable; split out before training"
    )
    train.add_argument("--output", required=True, help="directory for the tokenizer files")
    train.add_argument("--pattern", default="gpt2", help="gpt2, cl100k (gpt4), o200k or a regex")
    train.add_argument("--workers", type=int, default=None, help="pre-tokenization processes")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    encode = sub.add_parser("encode", help="print the ids of a text file (or stdin)")
    encode.add_argument("--tokenizer", required=True, help="directory written by `train`")
    encode.add_argument("--input", default="-", help="text file, - for stdin")
    encode.add_argument(
        "--show", metavar="TEXT", help="print how TEXT is split: one token per line, id and piece"
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    vocab, merges = train_bpe(
        args.input,
        args.vocab_size,
        args.special_token,
        pattern=args.pattern,
        workers=args.workers,
        progress=not args.quiet,
    )
    tok = Tokenizer(vocab, merges, args.special_token, pattern=args.pattern)
    tok.save(args.output)
    print(
        f"trained {len(vocab)} tokens ({len(merges)} merges) in "
        f"{time.perf_counter() - start:.1f}s -> {args.output}",
        file=sys.stderr,
    )
    return 0


def show_pieces(tok: Tokenizer, text: str) -> str:
    """One line per token of `text`: its id and its bytes, as a quoted string when they are
    valid UTF-8 (spaces and newlines visible) and as a bytes literal when they are part of a
    multi-byte character."""
    lines = []
    ids = tok.encode(text)
    for i in ids:
        raw = tok.vocab[i]
        try:
            piece = repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            piece = repr(raw)
        lines.append(f"{i}\t{piece}")
    lines.append(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes")
    return "\n".join(lines)


def _encode(args: argparse.Namespace) -> int:
    tok = Tokenizer.load(args.tokenizer)
    if args.show is not None:
        print(show_pieces(tok, args.show))
        return 0
    if args.input == "-":
        ids = tok.encode_iterable(sys.stdin)
        print(" ".join(map(str, ids)))
    else:
        with open(args.input, encoding="utf-8", errors="replace") as handle:
            print(" ".join(map(str, tok.encode_iterable(handle))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    return _encode(args)


if __name__ == "__main__":
    raise SystemExit(main())
