"""Command line: `tokenizer train ...` and `tokenizer encode ...`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tokenizer.encoder import Tokenizer
from tokenizer.greedy import GreedyTokenizer
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
    encode.add_argument(
        "--method", choices=["bpe", "greedy"], default="bpe",
        help="bpe (the merges, default) or greedy (longest vocabulary match, left to right); "
        "with --show, greedy prints its pieces beside BPE's",
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


def _piece(tok: Tokenizer, i: int) -> str:
    """Token ``i``'s bytes as a quoted string when valid UTF-8, else as a bytes literal."""
    raw = tok.vocab[i]
    try:
        return repr(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(raw)


def show_pieces(tok: Tokenizer, text: str) -> str:
    """One line per token of `text`: its id and its bytes, as a quoted string when they are
    valid UTF-8 (spaces and newlines visible) and as a bytes literal when they are part of a
    multi-byte character."""
    ids = tok.encode(text)
    lines = [f"{i}\t{_piece(tok, i)}" for i in ids]
    lines.append(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes")
    return "\n".join(lines)


def show_greedy_vs_bpe(tok: Tokenizer, text: str) -> str:
    """Greedy longest-match pieces of `text` beside BPE's: one row per token, ``greedy id,
    piece | bpe id, piece`` (blank where one side has fewer tokens), then both counts."""
    greedy = GreedyTokenizer.from_tokenizer(tok).encode(text)
    bpe = tok.encode(text)
    cells = [[f"{i:>6} {_piece(tok, i)}" for i in ids] for ids in (greedy, bpe)]
    width = max((len(c) for c in cells[0]), default=0) + 2
    lines = [f"{'greedy':<{width}}| bpe"]
    for k in range(max(len(greedy), len(bpe))):
        left = cells[0][k] if k < len(greedy) else ""
        right = cells[1][k] if k < len(bpe) else ""
        lines.append(f"{left:<{width}}| {right}")
    same = "same pieces" if greedy == bpe else "pieces differ"
    lines.append(f"greedy {len(greedy)} tokens, bpe {len(bpe)} tokens, "
                 f"{len(text.encode('utf-8'))} bytes ({same})")
    return "\n".join(lines)


def _encode(args: argparse.Namespace) -> int:
    if args.show is not None:
        tok = Tokenizer.load(args.tokenizer)
        print(show_greedy_vs_bpe(tok, args.show) if args.method == "greedy"
              else show_pieces(tok, args.show))
        return 0
    tok = (GreedyTokenizer if args.method == "greedy" else Tokenizer).load(args.tokenizer)
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
