"""MinHash signature kernel: Refinery's C kernel and numpy path against rensa and datasketch.

Text in, signatures out, on the same documents, one core, in the same run: every
implementation signs every document at 120 and at 256 permutations, in alternating rounds
(machine load hits all alike), and the median round of each is reported. Times are CPU
time of the process (``time.process_time``; threads included, and rensa's Rayon pool is
held to one thread), so per-core rates are documents or UTF-8 megabytes per CPU second.

* ``refinery native``: ``MinHasher(native=True).signatures_batched`` (pipeline/dedup/_minhash.c)
* ``refinery numpy``: ``MinHasher(native=False).signatures_batched`` (the reference path)
* ``rensa README``: as rensa's README shows (``RMinHash(num_perm, seed=42)``, ``update``,
  ``digest`` per document), fed word 5-gram shingles built in Python from ``text.split()``
* ``rensa batch``: the same shingles through ``RMinHash.digest_matrix_from_token_sets``
* ``datasketch``: shingles built in Python (Refinery's word rule) and ``update_batch``
* ``... sketch only``: the shingles are prepared outside the clock (what the Rust or C
  part alone costs; Refinery's kernel has no such split, its figure is always end to end)

It also prints how the estimated Jaccard of ours and rensa's agree on (document, copy
with 0.5% to 15% of words replaced) pairs, each against the exact Jaccard of its own
shingle sets.

Usage::

    python benchmarks/minhash_kernel_bench.py [--docs 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # rensa's batch API: one core, like the rest

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from minhash_vs_datasketch import (  # noqa: E402
    datasketch_shingles,
    load_documents,
    perturb,
    run_datasketch,
)

from pipeline.dedup.minhash import MinHasher, native_available  # noqa: E402
from pipeline.dedup.text import ShingleHasher, jaccard  # noqa: E402

NGRAM = 5


def readme_shingles(text: str, n: int = NGRAM) -> list[str]:
    """Word n-gram shingles as a rensa user builds them: ``text.split()`` words, joined by
    spaces; a text with fewer than ``n`` words is one shingle, one without words none."""
    words = text.split()
    if len(words) < n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def rensa_readme(texts: list[str], num_perm: int) -> tuple[float, float, list]:
    """(CPU seconds end to end, CPU seconds in RMinHash alone, sketches), README style."""
    from rensa import RMinHash

    t_total = t_sketch = 0.0
    out = []
    for text in texts:
        t0 = time.process_time()
        shingles = readme_shingles(text)
        t1 = time.process_time()
        m = RMinHash(num_perm=num_perm, seed=42)
        m.update(shingles)
        m.digest()
        t2 = time.process_time()
        t_total += t2 - t0
        t_sketch += t2 - t1
        out.append(m)
    return t_total, t_sketch, out


def rensa_batch(texts: list[str], num_perm: int) -> tuple[float, float]:
    """(CPU seconds end to end, CPU seconds in the batch call alone) of rensa's batch API."""
    from rensa import RMinHash

    t0 = time.process_time()
    sets = [readme_shingles(t) for t in texts]
    t1 = time.process_time()
    RMinHash.digest_matrix_from_token_sets(sets, num_perm=num_perm, seed=42)
    t2 = time.process_time()
    return t2 - t0, t2 - t1


def refinery(texts: list[str], num_perm: int, native: bool) -> float:
    """CPU seconds of ``MinHasher.signatures_batched`` (text in, signatures out)."""
    hasher = MinHasher(num_perm=num_perm, ngram=NGRAM, native=native)
    t0 = time.process_time()
    hasher.signatures_batched(texts)
    return time.process_time() - t0


def measure(texts: list[str], num_perm: int, rounds: int) -> dict[str, float]:
    """Median CPU seconds per implementation over ``rounds`` alternating rounds."""
    runs: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    for _ in range(rounds):
        add("refinery native", refinery(texts, num_perm, True))
        add("refinery numpy", refinery(texts, num_perm, False))
        total, sketch, _ = rensa_readme(texts, num_perm)
        add("rensa README (per document)", total)
        add("rensa README, sketch only", sketch)
        total, sketch = rensa_batch(texts, num_perm)
        add("rensa batch (digest_matrix_from_token_sets)", total)
        add("rensa batch, sketch only", sketch)
        total, update, _ = run_datasketch(texts, num_perm, NGRAM)
        add("datasketch (update_batch)", total)
        add("datasketch, sketch only", update)
    return {name: statistics.median(v) for name, v in runs.items()}


def agreement(texts: list[str], num_perm: int, pairs: int) -> dict[str, float]:
    """Estimated-Jaccard agreement of ours and rensa on near-duplicate pairs."""
    from rensa import RMinHash

    rng = np.random.default_rng(0)
    hasher = MinHasher(num_perm=num_perm, ngram=NGRAM)
    sh = ShingleHasher(NGRAM)
    ours, theirs, true_ours, true_theirs = [], [], [], []
    for text in [t for t in texts if len(t.split()) >= 100][:pairs]:
        copy = perturb(text, float(rng.uniform(0.005, 0.15)), rng)
        sig = hasher.signatures([text, copy])
        ours.append(float(np.mean(sig[0] == sig[1])))
        sa, sb = sh.shingle_sets([text, copy])
        true_ours.append(jaccard(sa, sb))
        ra, rb = readme_shingles(text), readme_shingles(copy)
        ma, mb = RMinHash(num_perm=num_perm, seed=42), RMinHash(num_perm=num_perm, seed=42)
        ma.update(ra)
        mb.update(rb)
        theirs.append(ma.jaccard(mb))
        a, b = set(ra), set(rb)
        true_theirs.append(len(a & b) / len(a | b))
    o, r, to, tr = map(np.array, (ours, theirs, true_ours, true_theirs))
    return {
        "pairs": len(o),
        "mae_ours_rensa": float(np.abs(o - r).mean()),
        "corr_ours_rensa": float(np.corrcoef(o, r)[0, 1]),
        "mae_ours_true": float(np.abs(o - to).mean()),
        "mae_rensa_true": float(np.abs(r - tr).mean()),
        "bias_ours": float((o - to).mean()),
        "bias_rensa": float((r - tr).mean()),
        "true_min": float(min(to.min(), tr.min())),
        "true_max": float(max(to.max(), tr.max())),
    }


def table(results: dict[str, float], n: int, mb: float, out: Callable[[str], None]) -> None:
    """Print one Markdown table of docs/s and MB/s per core."""
    out("| implementation | docs/s per core | MB/s per core | CPU s |")
    out("|---|---:|---:|---:|")
    for name, sec in results.items():
        out(f"| {name} | {n / sec:,.0f} | {mb / sec:.1f} | {sec:.3f} |")


def main() -> None:
    """Run the benchmark and print the tables and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--perms", type=int, nargs="+", default=[120, 256])
    ap.add_argument("--pairs", type=int, default=200)
    args = ap.parse_args()
    if not native_available():
        sys.exit("pipeline.dedup._minhash is not built: run `pip install -e .` first")
    from importlib.metadata import version

    texts = load_documents(args.docs)
    n = len(texts)
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    shingles = sum(len(datasketch_shingles(t, NGRAM)) for t in texts)
    from pipeline.dedup import _minhash

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python "
          f"{platform.python_version()}, numpy {np.__version__}, rensa {version('rensa')}, "
          f"datasketch {version('datasketch')}, "
          f"native kernel {_minhash.kernels()[-1]}")
    print(f"documents: {n} ({mb:.1f} MB UTF-8, {shingles:,} word 5-gram shingles), "
          f"median of {args.rounds} alternating rounds, CPU time, one core")
    for num_perm in args.perms:
        res = measure(texts, num_perm, args.rounds)
        print(f"\n### {num_perm} permutations\n")
        table(res, n, mb, print)
        ours = res["refinery native"]
        print()
        for peer in ("rensa README (per document)",
                     "rensa batch (digest_matrix_from_token_sets)",
                     "rensa README, sketch only", "rensa batch, sketch only",
                     "datasketch (update_batch)", "datasketch, sketch only"):
            print(f"refinery native vs {peer}: {res[peer] / ours:.1f}x")
        print(f"refinery native vs refinery numpy: {res['refinery numpy'] / ours:.1f}x")
        a = agreement(texts, num_perm, args.pairs)
        print(f"\nestimated Jaccard on {a['pairs']} (document, perturbed copy) pairs, exact J "
              f"{a['true_min']:.2f}-{a['true_max']:.2f}: ours vs rensa MAE "
              f"{a['mae_ours_rensa']:.4f} (correlation {a['corr_ours_rensa']:.3f}); against "
              f"each side's exact shingle Jaccard: ours MAE {a['mae_ours_true']:.4f} (bias "
              f"{a['bias_ours']:+.4f}), rensa MAE {a['mae_rensa_true']:.4f} (bias "
              f"{a['bias_rensa']:+.4f})")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
