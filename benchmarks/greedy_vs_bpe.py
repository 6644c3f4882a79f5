"""Greedy longest-match encoding against BPE merges: tokens per byte on held-out text.

Trains a byte-level BPE (``tokenizer.trainer.train_bpe``) on the first ``--train-docs``
documents of ``eval/wiki_val.jsonl.gz`` and encodes the next ``--test-docs`` with the merges
(``Tokenizer.encode``, the peer) and with greedy longest match over the same vocabulary
(``GreedyTokenizer.encode``, ``tokenizer encode --method greedy``); prints bytes per token
for both and the token-count ratio greedy / BPE per vocabulary size.

    python benchmarks/greedy_vs_bpe.py --data ../shared/data --vocab 4096,16384
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenizer.encoder import Tokenizer  # noqa: E402
from tokenizer.greedy import GreedyTokenizer  # noqa: E402
from tokenizer.trainer import train_bpe  # noqa: E402

EOT = "<|endoftext|>"


def compare(train: list[str], test: list[str], vocab_size: int, workdir: Path) -> dict:
    """Train BPE on ``train`` to ``vocab_size``; return bytes, token counts and the ratio of
    greedy to BPE tokens on ``test`` (joined with the end-of-text token)."""
    corpus = workdir / "train.txt"
    corpus.write_text(EOT.join(train), encoding="utf-8")
    vocab, merges = train_bpe([str(corpus)], vocab_size, [EOT], progress=False)
    bpe = Tokenizer(vocab, merges, [EOT])
    greedy = GreedyTokenizer.from_tokenizer(bpe)
    text = EOT.join(test)
    n_bytes = len(text.encode("utf-8"))
    n_bpe, n_greedy = len(bpe.encode(text)), len(greedy.encode(text))
    return {"vocab": vocab_size, "bytes": n_bytes, "bpe_tokens": n_bpe,
            "greedy_tokens": n_greedy, "greedy_over_bpe": n_greedy / n_bpe}


def main() -> int:
    """Print one row per vocabulary size and the JSON records."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--vocab", default="4096,16384", help="comma-separated vocabulary sizes")
    ap.add_argument("--train-docs", type=int, default=300)
    ap.add_argument("--test-docs", type=int, default=200)
    args = ap.parse_args()
    path = Path(args.data) / "eval" / "wiki_val.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    train = texts[:args.train_docs]
    test = texts[args.train_docs:args.train_docs + args.test_docs]
    print("| vocab | BPE tokens (bytes/token) | greedy tokens (bytes/token) | greedy / BPE |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for v in (int(x) for x in args.vocab.split(",")):
            r = compare(train, test, v, Path(tmp))
            print(f"| {v:,} | {r['bpe_tokens']:,} ({r['bytes'] / r['bpe_tokens']:.3f}) | "
                  f"{r['greedy_tokens']:,} ({r['bytes'] / r['greedy_tokens']:.3f}) | "
                  f"{r['greedy_over_bpe']:.4f} |", flush=True)
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
