"""MinHash signature throughput: Refinery's vectorised MinHasher against datasketch.

Both sides sign the same documents with the same number of permutations on one core,
in the same run, in alternating rounds (so machine load hits both alike); the median
round of each is reported. Times are the process's CPU time (``time.process_time``), so
a busy shared machine slows the clock of neither side. Two datasketch figures are given:

* ``datasketch end-to-end``: tokenise, build the n-gram shingle strings, encode them and
  ``MinHash.update_batch`` them, which is what a caller has to do per document;
* ``datasketch update_batch only``: the shingle bytes are prepared outside the clock.

Refinery's figure is always end-to-end (text in, signatures out). It also reports how
closely the two estimate the true Jaccard of (document, perturbed copy) pairs.

Usage::

    python benchmarks/minhash_vs_datasketch.py [--docs 1000] [--rounds 5] [--num-perm 120] [--phases]

Documents: Wikipedia articles from ``../shared/data/reference/wiki_ref.jsonl.gz`` plus
extracted webmix pages, so lengths vary as in a crawl.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.dedup.minhash import MinHasher  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
_WORD = re.compile(r"[a-z0-9\x80-\U0010ffff]+")


def load_documents(n: int) -> list[str]:
    """Return ``n`` real documents: up to ``n // 2`` Wikipedia articles, then extracted
    webmix pages, shard after shard (fewer if the data runs out)."""
    docs: list[str] = []
    with gzip.open(SHARED / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            text = rec.get("text") or ""
            if text.strip():
                docs.append(text)
            if len(docs) >= n // 2:
                break
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    for shard in sorted((SHARED / "webmix").glob("webmix-*.warc.gz")):
        with open(shard, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                body = rec.reader.read()
                html = bytes_to_str(body, detect_encoding(body))
                text = extract_plain_text(HTMLTree.parse(html), main_content=True)
                if text.strip():
                    docs.append(text)
                if len(docs) >= n:
                    return docs
    return docs


def datasketch_shingles(text: str, ngram: int) -> list[bytes]:
    """Word n-gram shingles as datasketch users build them (same word rule as Refinery)."""
    words = _WORD.findall(text.lower())
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode("utf-8", "surrogatepass")]
    return [
        " ".join(words[i : i + ngram]).encode("utf-8", "surrogatepass")
        for i in range(len(words) - ngram + 1)
    ]


def run_datasketch(texts: list[str], num_perm: int, ngram: int):
    """Return (seconds end-to-end, seconds in update_batch, signatures).

    The permutations are generated once and shared (``MinHash(permutations=...)``), as a
    careful caller does; generating them per document would add ~0.1 ms per document.
    """
    from datasketch import MinHash

    template = MinHash(num_perm=num_perm)
    t_total = t_update = 0.0
    sigs = []
    for text in texts:
        t0 = time.process_time()
        shingles = datasketch_shingles(text, ngram)
        m = MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)
        t1 = time.process_time()
        m.update_batch(shingles)
        t2 = time.process_time()
        t_total += t2 - t0
        t_update += t2 - t1
        sigs.append(m)
    return t_total, t_update, sigs


def run_refinery(texts: list[str], num_perm: int, ngram: int):
    """Return (seconds end-to-end, signatures)."""
    hasher = MinHasher(num_perm=num_perm, ngram=ngram)
    t0 = time.process_time()
    sigs, _ = hasher.signatures_batched(texts)
    return time.process_time() - t0, sigs


def perturb(text: str, fraction: float, rng: np.random.Generator) -> str:
    """Return ``text`` with ``fraction`` of its whitespace-separated words replaced."""
    words = text.split()
    if not words:
        return text
    k = int(round(fraction * len(words)))
    for i in rng.choice(len(words), size=min(k, len(words)), replace=False):
        words[i] = f"w{rng.integers(1 << 30)}"
    return " ".join(words)


def jaccard_agreement(texts: list[str], num_perm: int, ngram: int, pairs: int = 120):
    """Return (MAE ours vs datasketch, MAE ours vs true, MAE datasketch vs true, true J range).

    Pairs: a real document and a copy with 0.5% to 15% of its words replaced, which spreads
    the true Jaccard over about 0.4 to 0.97.
    """
    from pipeline.dedup.text import ShingleHasher, jaccard

    rng = np.random.default_rng(0)
    sh = ShingleHasher(ngram)
    hasher = MinHasher(num_perm=num_perm, ngram=ngram)
    est_o, est_d, true = [], [], []
    for i in range(min(pairs, len(texts))):
        a = texts[i]
        b = perturb(a, float(rng.uniform(0.005, 0.15)), rng)
        sa, sb = sh.shingle_sets([a, b])
        true.append(jaccard(sa, sb))
        sig = hasher.signatures([a, b])
        est_o.append(float(np.mean(sig[0] == sig[1])))
        _, _, (ma, mb) = run_datasketch([a, b], num_perm, ngram)
        est_d.append(ma.jaccard(mb))
    est_o, est_d, true = map(np.array, (est_o, est_d, true))
    return (
        float(np.abs(est_o - est_d).mean()),
        float(np.abs(est_o - true).mean()),
        float(np.abs(est_d - true).mean()),
        (float(true.min()), float(true.max())),
    )


def phase_throughput(texts: list[str], num_perm: int, bands: int, ngram: int) -> None:
    """Print per-core CPU throughput of each dedup phase's inner loop on ``texts``.

    These are the figures docs/dedup-at-scale.md scales up: the map side (per document)
    and the reduce side (per shuffled row).
    """
    from pipeline.dedup.lines import line_hashes
    from pipeline.dedup.minhash import band_keys, bucket_edges
    from pipeline.dedup.text import document_key

    n = len(texts)
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    rows = []

    t0 = time.process_time()
    for t in texts:
        document_key(t)
    rows.append(("exact map: normalise + 128-bit key", time.process_time() - t0, n, mb))

    t0 = time.process_time()
    n_lines = 0
    for t in texts:
        n_lines += len(line_hashes(t))
    rows.append(("lines map: normalise + hash every line", time.process_time() - t0, n, mb))

    hasher = MinHasher(num_perm=num_perm, ngram=ngram)
    rows_per_band = num_perm // bands
    t0 = time.process_time()
    sigs, counts = hasher.signatures_batched(texts)
    keys = band_keys(sigs, bands, rows_per_band)
    rows.append(("minhash map: signatures + band keys", time.process_time() - t0, n, mb))

    # reduce side: group (band, key, ref) rows of 50 copies of these documents' keys
    rng = np.random.default_rng(0)
    reps = 50
    k = np.concatenate([keys.reshape(-1)] * reps)
    k[len(keys.reshape(-1)):] ^= rng.integers(0, 1 << 63, len(k) - len(keys.reshape(-1)),
                                              dtype=np.int64).view(np.uint64)
    band = np.tile(np.arange(bands), n * reps)
    ref = np.repeat(np.arange(n * reps, dtype=np.int64), bands)
    t0 = time.process_time()
    bucket_edges(band, k, ref)
    dt = time.process_time() - t0
    print("\n| phase (one core, CPU time) | docs/s | MB/s | rows/s |")
    print("|---|---:|---:|---:|")
    for name, sec, docs, size in rows:
        print(f"| {name} | {docs / sec:,.0f} | {size / sec:.1f} | |")
    print(f"| minhash candidates: sort + group bucket rows | | | {len(k) / dt:,.0f} |")
    print(f"\n({n_lines:,} lines; {len(k):,} bucket rows of which 1/{reps} collide as in the data)")


def main() -> None:
    """Run the benchmark and print a Markdown table with the speed ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-perm", type=int, default=120)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--bands", type=int, default=20)
    ap.add_argument("--phases", action="store_true", help="also time every dedup phase")
    args = ap.parse_args()

    texts = load_documents(args.docs)
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    n = len(texts)
    ours_s, ds_total_s, ds_update_s = [], [], []
    for _ in range(args.rounds):
        t, _ = run_refinery(texts, args.num_perm, args.ngram)
        ours_s.append(t)
        tt, tu, _ = run_datasketch(texts, args.num_perm, args.ngram)
        ds_total_s.append(tt)
        ds_update_s.append(tu)
    o, dt, du = (statistics.median(x) for x in (ours_s, ds_total_s, ds_update_s))
    mae_od, mae_ot, mae_dt, jr = jaccard_agreement(texts, args.num_perm, args.ngram)

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"documents: {n} ({mb:.1f} MB UTF-8), num_perm={args.num_perm}, ngram={args.ngram}, "
          f"median of {args.rounds} alternating rounds, one core\n")
    print("| implementation | docs/s per core | MB/s per core | seconds |")
    print("|---|---:|---:|---:|")
    print(f"| refinery MinHasher (text to signature) | {n / o:,.0f} | {mb / o:.2f} | {o:.2f} |")
    print(f"| datasketch end-to-end (shingles + update_batch) | {n / dt:,.0f} | {mb / dt:.2f} | {dt:.2f} |")
    print(f"| datasketch update_batch only | {n / du:,.0f} | {mb / du:.2f} | {du:.2f} |")
    print(f"\nspeed ratio vs datasketch end-to-end: {dt / o:.1f}x")
    print(f"speed ratio vs datasketch update_batch only: {du / o:.1f}x")
    print(f"Jaccard estimates on 120 (document, perturbed copy) pairs, true J {jr[0]:.2f}-{jr[1]:.2f}: "
          f"MAE refinery vs datasketch {mae_od:.4f}, refinery vs true {mae_ot:.4f}, "
          f"datasketch vs true {mae_dt:.4f}")
    if args.phases:
        phase_throughput(texts, args.num_perm, args.bands, args.ngram)


if __name__ == "__main__":
    main()
