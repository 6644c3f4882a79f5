"""``decontaminate_v1`` with wiki_val as the evaluation set: index build time, lookup
throughput per core, and what it removes from real text that holds none of wiki_val.

    python benchmarks/decontaminate_eval.py [--webmix-cache /tmp/bloom_bench/webmix]

Inputs: wiki_ref (1,100 Wikipedia articles, disjoint from wiki_val) and, when the cache
that ``benchmarks/bloom_vs_exact.py`` writes exists, webmix extracted. Every removal here
is a 13-word run shared with wiki_val without the article itself being there (citations,
template sentences); the script prints how many documents share at least 1, 5 and 50
n-grams, and a few of the shared runs. Runs in one process (LocalExecutor).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.document import Document  # noqa: E402
from pipeline.core.step import StageShard, StepContext, StepStats  # noqa: E402
from pipeline.execution.executor import LocalExecutor  # noqa: E402
from pipeline.steps.decontaminate import Decontaminate  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def measure(name: str, docs: list[Document], step: Decontaminate) -> dict:
    """Run the loaded step over ``docs`` in annotate mode; return counts and throughput."""
    ctx = StepContext(StepStats())
    t = time.perf_counter()
    out = list(step.run(docs, ctx))
    seconds = time.perf_counter() - t
    counts = [d.metadata["contaminated_ngrams"] for d in out]
    mb = sum(len(d.text.encode()) for d in out) / 1e6
    row = {"input": name, "documents": len(out), "MB": round(mb, 1),
           "docs_per_s": round(len(out) / seconds), "MB_per_s": round(mb / seconds, 1),
           **{f"sharing>={k}": sum(c >= k for c in counts) for k in (1, 5, 50)}}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--webmix-cache", type=Path, default=Path("/tmp/bloom_bench/webmix"))
    args = ap.parse_args()
    val = SHARED / "eval" / "wiki_val.jsonl.gz"
    step = Decontaminate(Decontaminate.Options(evals=[str(val)], annotate_only=True))
    step.setup()
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        step.prepare([], work, LocalExecutor())
        build = time.perf_counter() - t
        summary = json.loads((Path(work) / "summary.json").read_text())
        print(json.dumps({"index_seconds": round(build, 2), "ngrams": summary["ngrams"],
                          "index_MB": round(summary["ngrams"] * 10 / 1e6, 1)}), flush=True)
        step.load(work, "")
        with gzip.open(SHARED / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
            ref = [Document(f"ref{i}", json.loads(line)["text"]) for i, line in enumerate(f)]
        measure("wiki_ref", ref, step)
        cache = sorted(args.webmix_cache.glob("*.parquet"))
        if cache:
            web = [d for p in cache for d in StageShard(p.stem, (str(p),)).documents()]
            measure("webmix extracted", web, step)


if __name__ == "__main__":
    main()
