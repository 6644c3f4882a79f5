"""Training benchmark: our `train_bpe` against Hugging Face `tokenizers`' BpeTrainer.

Both train a byte-level BPE with the GPT-2 pre-tokenizer and `<|endoftext|>` as special
token on the same corpus, one after the other, each in a fresh subprocess. Reported per
run: wall time, CPU time (user+sys of the whole process tree) and peak resident memory of
the tree (sum over processes, sampled every 50 ms).

    python benchmarks/tokenizer_corpus.py --out /tmp/tok_corpus.txt --min-mb 100
    python benchmarks/tokenizer_train_bench.py --corpus /tmp/tok_corpus.txt --vocab 10000 32000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OURS = """
import sys
from tokenizer import Tokenizer, train_bpe
corpus, vocab, out, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
v, m = train_bpe(corpus, vocab, ["<|endoftext|>"], workers=workers, progress=True)
Tokenizer(v, m, ["<|endoftext|>"]).save(out)
print(len(v))
"""

HF = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
corpus, vocab, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
)
tok.train([corpus], trainer)
tok.save(out + "/tokenizer.json")
print(tok.get_vocab_size())
"""


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(argv: list[str]) -> dict[str, float | str]:
    """Run `argv`; return wall seconds, CPU seconds of the tree, peak tree RSS, stdout."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_rss(p) for p in _tree(proc.pid)))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed with {proc.returncode}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(peak / 2**20),
            "out": out.strip()}


def main() -> None:
    """CLI: run both trainers at each vocabulary size and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--vocab", type=int, nargs="+", default=[10000, 32000])
    parser.add_argument("--impl", nargs="+", default=["hf", "ours"], choices=["hf", "ours"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    size_mb = os.path.getsize(args.corpus) / 1e6
    rows = []
    for vocab in args.vocab:
        for impl in args.impl:
            with tempfile.TemporaryDirectory() as out:
                if impl == "ours":
                    argv = [sys.executable, "-c", OURS, args.corpus, str(vocab), out, str(args.workers)]
                else:
                    argv = [sys.executable, "-c", HF, args.corpus, str(vocab), out]
                result = {"impl": impl, "vocab": vocab, "corpus_mb": round(size_mb, 1), **measure(argv)}
            print(json.dumps(result), flush=True)
            rows.append(result)
    print("\n| vocab | implementation | wall s | CPU s | peak RSS MB |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vocab']} | {r['impl']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
