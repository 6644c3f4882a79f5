"""Encoding benchmark: MB/s of text to ids, all with GPT-2's vocabulary and merges.

Compared on the same documents, in one process, one after the other:
tiktoken loaded with our saved ranks (`tokenizer.tiktoken`) single-threaded and batched,
with our GPT-2 pattern and with tiktoken's own possessive rewrite of it (`r50k_pat_str`,
what `tiktoken.get_encoding("gpt2")` uses);
`FastEncoder` (what the tokenize step uses: our special-token split, then the native
encoder `tokenizer/_encode.c` when built, else tiktoken);
the `tokenize_v1` step's per-shard task end to end (Parquet in, Arrow stream out) on one
core; Hugging Face `tokenizers` loaded from our `tokenizer.json`; and the pure-Python
`Tokenizer.encode` on a slice. Ids are checked equal before timing. Each figure is the
best of three runs; wall-clock MB/s and MB per CPU-second are both printed (the machine is
shared, so CPU-seconds compare better).

    python benchmarks/tokenizer_corpus.py --out /tmp/tok_corpus.txt --min-mb 100
    python benchmarks/tokenizer_encode_bench.py --corpus /tmp/tok_corpus.txt --mb 20
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

EOT = "<|endoftext|>"


REPEAT = 3


def timed(fn: Callable[[], object], nbytes: int) -> dict[str, float]:
    """Run `fn` REPEAT times; return the best wall MB/s and best MB per CPU-second."""
    best_wall = best_cpu = float("inf")
    for _ in range(REPEAT):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fn()
        best_cpu = min(best_cpu, time.process_time() - cpu0)
        best_wall = min(best_wall, time.perf_counter() - wall0)
    return {"mb_per_s": round(nbytes / 1e6 / best_wall, 2),
            "mb_per_cpu_s": round(nbytes / 1e6 / best_cpu, 2)}


def main() -> None:
    """CLI: run every encoder over the first `--mb` MB of documents; print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--python-mb", type=float, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat

    import tiktoken
    import tokenizers

    from pipeline.core.document import Document
    from pipeline.core.step import StageShard
    from pipeline.io.writer import write_documents_parquet
    from pipeline.steps.tokenize import tokenize_shard
    from tokenizer import Tokenizer
    from tokenizer.fast import FastEncoder
    from tokenizer.formats import read_tiktoken_ranks
    from tokenizer.gpt2_files import gpt2_file_paths

    with open(args.corpus, encoding="utf-8") as handle:
        text = handle.read(int(args.mb * 1e6))
    docs = [d for d in text.split(EOT) if d]
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    work = Path(tempfile.mkdtemp(prefix="tok_encode_bench_"))
    encoder_json, vocab_bpe = gpt2_file_paths()
    tok = Tokenizer.from_files(encoder_json, vocab_bpe, [EOT])
    tok.save(work / "gpt2")
    ranks = read_tiktoken_ranks(work / "gpt2" / "tokenizer.tiktoken")
    tk = tiktoken.Encoding("gpt2-ours", pat_str=tok.pattern_regex, mergeable_ranks=ranks,
                           special_tokens={EOT: 50256})
    from tiktoken_ext.openai_public import r50k_pat_str

    tk_own = tiktoken.Encoding("gpt2-r50k", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                               special_tokens={EOT: 50256})
    fast = FastEncoder(work / "gpt2")
    hf = tokenizers.Tokenizer.from_file(str(work / "gpt2" / "tokenizer.json"))

    sample = docs[:200]
    expected = [tok.encode(d) for d in sample]
    assert [tk.encode_ordinary(d) for d in sample] == expected
    assert [tk_own.encode_ordinary(d) for d in sample] == expected
    assert fast.encode_batch(sample) == expected
    assert [fast.encode_numpy(d).tolist() for d in sample] == expected
    assert [e.ids for e in hf.encode_batch(sample)] == expected

    parquet = work / "shard.parquet"
    write_documents_parquet([Document(f"d{i}", d) for i, d in enumerate(docs)], parquet, {}, "none")
    shard = StageShard("bench", (str(parquet),))

    results: dict[str, dict[str, float]] = {}
    results["tiktoken, 1 thread (encode_ordinary per doc)"] = timed(
        lambda: [tk.encode_ordinary(d) for d in docs], nbytes)
    results[f"tiktoken, batch {args.threads} threads"] = timed(
        lambda: tk.encode_ordinary_batch(docs, num_threads=args.threads), nbytes)
    results["tiktoken r50k pattern, 1 thread"] = timed(
        lambda: [tk_own.encode_ordinary(d) for d in docs], nbytes)
    results[f"tiktoken r50k pattern, batch {args.threads} threads"] = timed(
        lambda: tk_own.encode_ordinary_batch(docs, num_threads=args.threads), nbytes)
    print(f"FastEncoder native: {fast.native is not None}", flush=True)
    results["FastEncoder (step's encoder), 1 thread"] = timed(
        lambda: fast.encode_batch(docs, num_threads=1), nbytes)
    results["FastEncoder.encode_numpy (step's path), 1 thread"] = timed(
        lambda: [fast.encode_numpy(d) for d in docs], nbytes)
    results[f"FastEncoder, batch {args.threads} threads"] = timed(
        lambda: fast.encode_batch(docs, num_threads=args.threads), nbytes)
    results["tokenize_v1 shard task, 1 core (Parquet -> Arrow)"] = timed(
        lambda: tokenize_shard(shard, 0, str(work / "gpt2"), str(work / "stream"), 50256,
                               "uint16", 256), nbytes)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    results["HF tokenizers encode_batch (Rust threads)"] = timed(
        lambda: hf.encode_batch_fast(docs) if hasattr(hf, "encode_batch_fast") else hf.encode_batch(docs),
        nbytes)
    slice_docs, total = [], 0
    for d in docs:
        slice_docs.append(d)
        total += len(d.encode("utf-8"))
        if total >= args.python_mb * 1e6:
            break
    fresh = Tokenizer.load(work / "gpt2")

    def python_encode() -> None:
        fresh._cache.clear()  # cold pre-token cache on every repetition
        for d in slice_docs:
            fresh.encode(d)

    results["pure-Python Tokenizer.encode, 1 thread (cold cache)"] = timed(python_encode, total)

    print(json.dumps({"mb": round(nbytes / 1e6, 1), "docs": len(docs), "results": results}))
    print(f"\n{nbytes / 1e6:.1f} MB, {len(docs)} documents, GPT-2 vocabulary\n")
    print("| encoder | MB/s (wall) | MB per CPU-second |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['mb_per_s']} | {r['mb_per_cpu_s']} |")


if __name__ == "__main__":
    main()
