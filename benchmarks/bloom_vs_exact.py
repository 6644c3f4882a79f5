"""``dedup_bloom_v1`` against its peer ``dedup_exact_v1``: time, memory, decisions, false positives.

    python benchmarks/bloom_vs_exact.py [--copies 12] [--work /tmp/bloom_bench]

Inputs: (1) webmix extracted (every response record of ../shared/data/webmix, HTML pages
through resiliparse main-content extraction), 8 stage shards; (2) a larger input built
from it: each extracted document repeated ``--copies`` times, every copy with one word
replaced by a random token (distinct documents) except every fifth copy, which is left
unedited (so it repeats webmix's own duplicates), in 16 shards. Each job runs in a fresh process under the
LocalExecutor (one core), so wall time and peak RSS are the job's own. Printed: seconds,
peak RSS, the largest in-memory structure of one task (exact: the keys and refs of the
largest reduce partition, 24 bytes a row; Bloom: one filter), the documents each drops,
Bloom false positives (dropped by Bloom, kept by exact) and misses (must be 0), the
time and memory ratios, and the expected and measured false-positive rate (insert n
distinct keys, query n other distinct keys).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.document import Document  # noqa: E402
from pipeline.core.step import StageShard, StepStats  # noqa: E402
from pipeline.dedup.bloom import BloomFilter, expected_fp_rate  # noqa: E402
from pipeline.dedup.text import U64, document_key  # noqa: E402
from pipeline.io.writer import write_documents_parquet  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def extract_webmix(out: Path) -> list[StageShard]:
    """Write the extracted webmix records as one stage shard per WARC file (cached in ``out``)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from pipeline.io.readers import ReadOptions, read_shard

    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for warc in sorted((SHARED / "webmix").glob("*.warc.gz")):
        path = out / (warc.name.split(".")[0] + ".parquet")
        if not path.exists():
            docs = []
            for d in read_shard(str(warc), "warc", 0, 1, ReadOptions(html_only=False), StepStats()):
                text = (extract_plain_text(HTMLTree.parse(d.text), main_content=True)
                        if "html" in d.media_type else d.text)
                docs.append(Document(d.id, text, d.url))
            write_documents_parquet(docs, path, {})
        shards.append(StageShard(path.stem, (str(path),)))
    return shards


def build_large(base: list[StageShard], out: Path, copies: int, n_shards: int = 16
                ) -> list[StageShard]:
    """Repeat every base document ``copies`` times with small edits (see the module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"large-{s:05d}.parquet" for s in range(n_shards)]
    if not all(p.exists() for p in paths):
        rng = np.random.default_rng(0)
        texts = [d.text for s in base for d in s.documents() if d.text.split()]
        shards: list[list[Document]] = [[] for _ in range(n_shards)]
        for c in range(copies):
            for i, text in enumerate(texts):
                if c % 5 != 4:
                    words = text.split(" ")
                    words[int(rng.integers(len(words)))] = f"x{rng.integers(1 << 40):x}"
                    text = " ".join(words)
                shards[int(rng.integers(n_shards))].append(Document(f"c{c}-{i}", text))
        for docs, path in zip(shards, paths, strict=True):
            write_documents_parquet(docs, path, {})
    return [StageShard(p.stem, (str(p),)) for p in paths]


def _job(kind: str, shards: list[StageShard], work: str, queue: mp.Queue) -> None:
    """Run one dedup job (in a fresh process); report seconds, peak RSS and dropped refs."""
    from pipeline.execution.executor import LocalExecutor

    t = time.perf_counter()
    if kind == "exact":
        from pipeline.dedup.phases.exact import ExactConfig, load_exact, prepare_exact

        summary = prepare_exact(shards, work, ExactConfig(), LocalExecutor())
        load = load_exact
    else:
        from pipeline.dedup.phases.bloom import BloomConfig, load_bloom, prepare_bloom

        summary = prepare_bloom(shards, work, BloomConfig(), LocalExecutor())
        load = load_bloom
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dropped = set()
    for shard in shards:
        dec = load(work, shard.shard_id)
        dropped |= {d.id for d in shard.documents() if dec.get(d.id) is not None}
    queue.put({"seconds": seconds, "rss": rss, "summary": summary, "dropped": sorted(dropped)})


def run_job(kind: str, shards: list[StageShard], work: Path) -> dict:
    """Run :func:`_job` in a spawned process and return its report."""
    shutil.rmtree(work, ignore_errors=True)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_job, args=(kind, shards, str(work), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if kind == "exact":
        import pyarrow.parquet as pq

        rows = max(sum(pq.ParquetFile(f).metadata.num_rows for f in p.glob("m*.parquet"))
                   for p in (work / "map").glob("p*"))
        result["structure_bytes"] = rows * 24
    else:
        result["structure_bytes"] = result["summary"]["filter_bytes"]
    return result


def compare(name: str, shards: list[StageShard], work: Path) -> dict:
    """Run both jobs on ``shards``; print and return the comparison."""
    exact = run_job("exact", shards, work / f"{name}-exact")
    bloom = run_job("bloom", shards, work / f"{name}-bloom")
    e, b = set(exact["dropped"]), set(bloom["dropped"])
    s = bloom["summary"]
    row = {
        "input": name, "documents": s["documents"],
        "exact_s": round(exact["seconds"], 2), "bloom_s": round(bloom["seconds"], 2),
        "time_ratio": round(bloom["seconds"] / exact["seconds"], 3),
        "exact_rss_mb": round(exact["rss"] / 2**20, 1), "bloom_rss_mb": round(bloom["rss"] / 2**20, 1),
        "exact_struct_mb": round(exact["structure_bytes"] / 2**20, 3),
        "bloom_filter_mb": round(bloom["structure_bytes"] / 2**20, 3),
        "struct_ratio": round(bloom["structure_bytes"] / exact["structure_bytes"], 3),
        "exact_dropped": len(e), "bloom_dropped": len(b),
        "bloom_false_positives": len(b - e), "bloom_misses": len(e - b),
        "bits_per_key": round(s["bits"] / s["keys"], 1), "hashes": s["hashes"],
        "fp_rate_expected": s["fp_rate_expected"], "fp_rate_from_fill": s["fp_rate_from_fill"],
    }
    print(json.dumps(row), flush=True)
    return row


def distinct_keys(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit keys of ``count`` distinct texts, as two uint64 arrays."""
    keys = [document_key(f"key {i}") for i in range(count)]
    return (np.array([k[0] for k in keys], dtype=U64), np.array([k[1] for k in keys], dtype=U64))


def measured_fp(h1: np.ndarray, h2: np.ndarray, p: float) -> dict:
    """Insert the first half of the keys, query the other half; return the rates."""
    n = len(h1) // 2
    bloom = BloomFilter.for_items(n, p)
    t = time.perf_counter()
    bloom.test_and_set(h1[:n], h2[:n])
    insert = time.perf_counter() - t
    measured = float(bloom.contains(h1[n:], h2[n:]).mean())
    row = {"n": n, "p": p, "bits": bloom.bits, "hashes": bloom.hashes,
           "expected": expected_fp_rate(n, bloom.bits, bloom.hashes), "measured": measured,
           "insert_keys_per_s": round(n / insert)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bloom_bench"))
    ap.add_argument("--fp-keys", type=int, default=1_000_000)
    args = ap.parse_args()
    h1, h2 = distinct_keys(2 * args.fp_keys)
    for p in (1e-2, 1e-3, 1e-4, 1e-6):
        measured_fp(h1, h2, p)
    webmix = extract_webmix(args.work / "webmix")
    compare("webmix", webmix, args.work)
    large = build_large(webmix, args.work / "large", args.copies)
    compare(f"webmix x{args.copies} edited", large, args.work)


if __name__ == "__main__":
    main()
