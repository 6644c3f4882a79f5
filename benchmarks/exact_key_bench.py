"""Exact dedup's document key: the native column kernel against the Python reference.

The corpus is every text of ``../shared/data`` as ``benchmarks/line_dedup_bench.py``'s
``shared_texts`` reads it (crawl payloads and their extracted text, the JSONL corpora, the
HTML pages raw and extracted, the UDHR in 500+ languages, the lists, the KenLM corpora...),
held as Arrow string arrays of 4,096 documents, the batches a stage shard yields
(``StageShard.text_batches``). On it, as CPU seconds of this one process
(``time.process_time``), it times:

* ``reference``: ``pipeline.dedup.text.document_key`` per Python string (``str.casefold``,
  ``" ".join(s.split())``, ``hashlib.blake2b`` 16 bytes), the definition;
* ``native``: ``document_keys`` per Arrow array (``pipeline/dedup/_exact.c``: normalises and
  hashes from the array's UTF-8 buffer, BLAKE2b in C);
* ``native normalise + hashlib``: the other design the kernel could have had, normalised
  text handed back in one buffer and each slice hashed by ``hashlib.blake2b``;
* ``hashlib only``: ``hashlib.blake2b`` of each document's raw UTF-8, no normalisation at
  all: the floor of any path that hashes in Python (it is not the same key);
* ``to_pylist``: making the Python strings the reference needs from the Arrow arrays (what
  reading a Document per row costs on top of the reference).

It checks that the native key of every document equals the reference's and prints how many
were compared. Texts holding lone surrogates cannot be Arrow strings; they are counted.

Usage::

    python benchmarks/exact_key_bench.py [--limit-mb N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from line_dedup_bench import SHARED, print_rates, read_corpus  # noqa: E402

from pipeline.dedup import text as dedup_text  # noqa: E402
from pipeline.dedup.text import document_key, document_keys, native_keys_available  # noqa: E402

BATCH = 4096


def _batches(texts: list[str]) -> list[pa.Array]:
    return [pa.array(texts[i:i + BATCH], pa.string()) for i in range(0, len(texts), BATCH)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-mb", type=float, default=None,
                        help="stop reading after this many MB of text (default: all of it)")
    args = parser.parse_args()
    if not native_keys_available():
        sys.exit("pipeline.dedup._exact is not built (or is for another Unicode version): run "
                 "`python -m pipeline.dedup.exact_tables` and `pip install -e .`")

    t0 = time.perf_counter()
    texts, per_source, surrogates = read_corpus(args.limit_mb, encodable_only=True)
    mb = sum(per_source.values()) / 1e6
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB of UTF-8 from {SHARED} "
          f"(read in {time.perf_counter() - t0:.0f} s; {surrogates} with lone surrogates left "
          "out)")
    for source, n in sorted(per_source.items()):
        print(f"  {source:<22} {n / 1e6:8.2f} MB")
    arrays = _batches(texts)

    rows: list[tuple[str, float]] = []
    t = time.process_time()
    ref = np.array([document_key(x) for x in texts], dtype=np.uint64).reshape(-1, 2)
    rows.append(("reference (Python document_key)", time.process_time() - t))

    t = time.process_time()
    native = [document_keys(a) for a in arrays]
    rows.append(("native (document_keys, _exact.c)", time.process_time() - t))
    hi = np.concatenate([h for h, _ in native])
    lo = np.concatenate([lo_ for _, lo_ in native])

    t = time.process_time()
    via_hashlib = []
    for a in arrays:
        _, offsets, data = a.buffers()
        norm, bounds, _ = dedup_text._exact.normalize(offsets, data, False, a.offset, len(a))
        b = np.frombuffer(bounds, dtype=np.int64).tolist()
        view = memoryview(norm)
        via_hashlib += [hashlib.blake2b(view[b[i]:b[i + 1]], digest_size=16).digest()
                        for i in range(len(a))]
    rows.append(("native normalise + hashlib.blake2b", time.process_time() - t))

    t = time.process_time()
    for x in texts:
        hashlib.blake2b(x.encode("utf-8"), digest_size=16).digest()
    rows.append(("hashlib only (no normalisation)", time.process_time() - t))

    t = time.process_time()
    for a in arrays:
        a.to_pylist()
    rows.append(("to_pylist (Python str per document)", time.process_time() - t))

    same = bool(np.array_equal(ref[:, 0], hi) and np.array_equal(ref[:, 1], lo))
    mismatched = int(((ref[:, 0] != hi) | (ref[:, 1] != lo)).sum())
    digests = ref.astype("<u8").tobytes()
    same_hashlib = b"".join(via_hashlib) == digests

    print_rates(rows, mb)
    print(f"\nkeys compared: {len(texts):,} documents; native == reference: {same} "
          f"({mismatched} differ); normalise + hashlib == reference: {same_hashlib}")
    if not (same and same_hashlib):
        sys.exit(1)


if __name__ == "__main__":
    main()
