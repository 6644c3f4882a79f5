"""Measure the model-based filters on webmix: precision/recall at keeping Wikipedia, throughput.

Usage (from the repository root, after `pipeline run jobs/train_filters.yaml`)::

    python benchmarks/model_filters_webmix.py [--models out/models/filters] [--shards 4-7]

Documents are the webmix responses of the chosen shards (default 4-7: the models were
trained on shards 0-3), HTML reduced to its main text with resiliparse, ``text/plain`` kept
as is. Positives are ``wikipedia`` documents (planted duplicates included), negatives
``spam``, ``udhr_non_en``, ``web_page`` and ``web_page_2008`` (labels.jsonl). Each filter is
applied at the setting ``jobs/crawl_model_filters.yaml`` ships, through its step class, and
scored at a few other settings for context. Throughput is CPU seconds of this one process
(``time.process_time``), i.e. documents per second per core, for the step and for raw
``kenlm.Model.score`` / fastText ``f.predict`` on the same texts.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.core.document import Document
from pipeline.core.step import StepContext, StepStats
from pipeline.text.corpus import iter_warc_records

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSITIVE = {"wikipedia"}
NEGATIVE = {"spam", "udhr_non_en", "web_page", "web_page_2008"}


def load_docs(shards: list[int]) -> list[Document]:
    """Return the labelled documents of the given webmix shards (source = base label)."""
    labels = {}
    with open(SHARED / "webmix" / "labels.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            labels[rec["url"]] = rec["source"].split("+")[0]
    docs = []
    for s in shards:
        path = SHARED / "webmix" / f"webmix-{s:05d}.warc.gz"
        for i, (url, text) in enumerate(iter_warc_records(str(path))):
            src = labels.get(url, "unknown")
            if src in POSITIVE | NEGATIVE:
                docs.append(Document(f"{s}-{i}", text, url=url, source=src))
    return docs


def pr(kept: list[bool], docs: list[Document]) -> dict[str, float]:
    """Precision and recall of keeping the positive documents."""
    tp = sum(k and d.source in POSITIVE for k, d in zip(kept, docs, strict=True))
    n_kept = sum(kept)
    n_pos = sum(d.source in POSITIVE for d in docs)
    by_source = Counter(d.source for k, d in zip(kept, docs, strict=True) if k)
    total = Counter(d.source for d in docs)
    return {"precision": tp / n_kept if n_kept else math.nan, "recall": tp / n_pos,
            "kept": n_kept,
            "keep_rate": {s: round(by_source[s] / total[s], 3) for s in sorted(total)}}


def run_filter(step, docs: list[Document]) -> tuple[list[bool], list[Document], float]:
    """Run a Filter step over copies of ``docs``; return kept flags, annotated docs, CPU s."""
    copies = [Document(d.id, d.text, d.url, source=d.source) for d in docs]
    step.setup()
    t0 = time.process_time()
    kept_ids = {d.id for d in step.run(copies, StepContext(StepStats()))}
    cpu = time.process_time() - t0
    return [d.id in kept_ids for d in copies], copies, cpu


def main() -> None:
    """Print the figures as JSON (and a Markdown table) for benchmarks/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="out/models/filters")
    ap.add_argument("--shards", default="4-7")
    ap.add_argument("--fasttext-threshold", type=float, default=0.5)
    ap.add_argument("--dsir-fraction", type=float, default=0.3)
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.shards.split("-"))
    models = Path(args.models)
    t0 = time.time()
    docs = load_docs(list(range(lo, hi + 1)))
    print(f"{len(docs)} documents ({Counter(d.source for d in docs)}) in {time.time() - t0:.0f} s")
    results: dict[str, object] = {"documents": len(docs),
                                  "sources": dict(Counter(d.source for d in docs))}

    # --- KenLM: CCNet buckets from our percentile table (head+middle kept)
    from pipeline.steps.kenlm import KenLMPerplexity

    arpa = models / "kenlm_wiki5.arpa"
    lm_path = arpa.with_suffix(".binary") if arpa.with_suffix(".binary").exists() else arpa
    cutoff = str(arpa.with_suffix(".cutoff.csv"))
    step = KenLMPerplexity(KenLMPerplexity.Options(model=str(lm_path), cutoff_csv=cutoff,
                                                   keep_buckets=["head"]))
    kept, annotated, cpu = run_filter(step, docs)
    pps = np.array([d.metadata["perplexity"] or np.inf for d in annotated])
    buckets = [d.metadata["bucket"] for d in annotated]
    results["kenlm"] = {"setting": "keep_buckets [head] (pp < p30 of raw shards 0-3)",
                        **pr(kept, docs), "docs_per_cpu_s": len(docs) / cpu}
    results["kenlm_head_middle"] = {
        k: v for k, v in pr([b in ("head", "middle") for b in buckets], docs).items()}
    results["kenlm_max_perplexity"] = {
        str(t): {k: v for k, v in pr(list(pps <= t), docs).items() if k != "keep_rate"}
        for t in (300, 500, 1000, 2000)}
    import kenlm

    raw_lm = kenlm.Model(str(lm_path))
    texts = [d.text.replace("\n", " ") for d in docs]
    t1 = time.process_time()
    for t in texts:
        raw_lm.score(t)
    raw_cpu = time.process_time() - t1
    results["kenlm"]["raw_kenlm_docs_per_cpu_s"] = len(docs) / raw_cpu
    results["kenlm"]["step_vs_raw"] = raw_cpu / cpu

    # --- fastText classifier
    from pipeline.steps.fasttext_quality import FastTextQuality

    ft = str(models / "quality.bin")
    step = FastTextQuality(FastTextQuality.Options(model=ft, threshold=args.fasttext_threshold))
    kept, annotated, cpu = run_filter(step, docs)
    probs = np.array([d.metadata["quality_score"] if d.metadata["quality_score"] is not None
                      else -1.0 for d in annotated])
    results["fasttext"] = {"setting": f"P(hq) >= {args.fasttext_threshold}",
                           **pr(kept, docs), "docs_per_cpu_s": len(docs) / cpu}
    results["fasttext_thresholds"] = {
        str(t): {k: v for k, v in pr(list(probs >= t), docs).items() if k != "keep_rate"}
        for t in (0.3, 0.5, 0.7, 0.9)}
    import fasttext

    raw_ft = fasttext.load_model(ft)
    t1 = time.process_time()
    for t in texts:
        raw_ft.f.predict(t + "\n", 1, 0.0, "strict")
    raw_cpu = time.process_time() - t1
    results["fasttext"]["raw_fasttext_docs_per_cpu_s"] = len(docs) / raw_cpu
    results["fasttext"]["step_vs_raw"] = raw_cpu / cpu

    # --- DSIR: target counts from the fitted model, raw counts from this pool (as dsir_v1)
    from pipeline.text.dsir import DSIRModel, count_features, gumbel, log_probs
    from pipeline.text.selection import doc_key

    fitted = DSIRModel.load(models / "dsir.npz")
    t1 = time.process_time()
    raw_counts, _ = count_features((d.text for d in docs), fitted.features)
    lr = log_probs(fitted.target_counts, 1.0) - log_probs(raw_counts, 1.0)
    model = DSIRModel(fitted.target_counts, raw_counts, fitted.features)
    lw = [model.log_weight(d.text, lr) for d in docs]
    keys = np.array([-np.inf if w is None else w + gumbel(doc_key(d), 0)
                     for w, d in zip(lw, docs, strict=True)])
    cpu = time.process_time() - t1
    k = math.ceil(args.dsir_fraction * len(docs))
    thr = np.sort(keys)[::-1][k - 1]
    results["dsir"] = {"setting": f"fraction {args.dsir_fraction} (Gumbel top-k, seed 0)",
                       **pr(list(keys >= thr), docs),
                       "docs_per_cpu_s (features of 2 passes + weights)": len(docs) / cpu}
    lwa = np.array([-np.inf if w is None else w for w in lw])
    results["dsir_fractions"] = {
        str(f): {k2: v for k2, v in pr(list(keys >= np.sort(keys)[::-1][math.ceil(f * len(docs)) - 1]),
                                       docs).items() if k2 != "keep_rate"}
        for f in (0.2, 0.3, 0.5)}
    order = np.argsort(-lwa)[:k]
    top = np.zeros(len(docs), dtype=bool)
    top[order] = True
    results["dsir_deterministic_top_k"] = {
        k2: v for k2, v in pr(list(top), docs).items() if k2 != "keep_rate"}
    print(json.dumps(results, indent=1, default=lambda x: round(float(x), 4)))


if __name__ == "__main__":
    main()
