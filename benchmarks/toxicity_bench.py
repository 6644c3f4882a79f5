"""toxicity_v1: precision and recall against a profanity label, flag rates, throughput per core.

Usage (from the repository root)::

    python benchmarks/toxicity_bench.py [--shards 0-7] [--speed-shards 0-1] [--out FILE.json]

No labelled toxic-comment set is available offline (no installable package ships one: the
dataset packages on PyPI download theirs at run time), so the evaluation is built here and
measures **profanity detection, not toxicity in general**:

* positives: lines of the 6,046 SpamAssassin messages (bodies, headers cut off; 20 to 1,000
  characters, deduplicated) holding an entry of the English LDNOOBW list, matched as C4
  does (:class:`pipeline.text.badwords.WordMatcher`, word boundaries, lower case);
* negatives: as many lines of the 350 held-out Wikipedia articles (``eval/wiki_val``)
  holding no entry, drawn with a fixed seed (a 1:1 balance: precision depends on it).

The label is a word list's: a news line about "sex education" or a CSS line with ``xx`` is
a positive the model rightly scores low (recall looks worse than for toxicity), an insult
without a listed word ("you idiot") would be a negative it rightly flags (not in these
negatives: Wikipedia has few), and Wikipedia is the easiest clean register (precision
looks better than on web text). Flag rates on other clean text qualify it: SpamAssassin
ham lines with no listed word (informal English), Wikipedia lines with a listed word
(clinical and historical mentions), and non-English lines (webmix's German web pages and
UDHR translations: the model is English-only).

Document level: every webmix response (HTML reduced to its main text by resiliparse, as
``extract_v1`` does by default), flagged share per source (``labels.jsonl``) in document
and line mode, next to C4's bad-words rule with the English list.

Throughput: CPU seconds of this one process (``time.process_time``), so documents per
second per core, of the ``toxicity_v1`` step in each mode and of the peer, the package's
own ``profanity_check.predict_prob`` called once per document (the same model, through
scikit-learn); and of the fastText path with a stand-in model trained here on SpamAssassin
spam ("toxic") against ham, in dolma's format (its scores mean nothing; its speed does).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipeline.core.document import Document
from pipeline.core.step import StepContext, StepStats
from pipeline.steps.toxicity import Toxicity, ToxicityOptions
from pipeline.text.badwords import WordMatcher, read_word_list
from pipeline.text.corpus import iter_warc_records
from pipeline.text.toxicity import ProfanityCheckModel

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
THRESHOLDS = (0.3, 0.4, 0.5, 0.7, 0.9)


def email_bodies() -> list[tuple[str, str]]:
    """``(label, body)`` of every SpamAssassin message (the header block cut off)."""
    out = []
    with gzip.open(SHARED / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            m = json.loads(line)
            out.append((m["label"], m["raw"].split("\n\n", 1)[-1]))
    return out


def wiki_lines() -> list[str]:
    """Lines of the held-out Wikipedia articles."""
    with gzip.open(SHARED / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as f:
        return [ln for line in f for ln in json.loads(line)["text"].split("\n")]


def usable(lines: list[str]) -> list[str]:
    """Stripped lines of 20 to 1,000 characters, each once, in first-seen order."""
    seen: dict[str, None] = {}
    for ln in lines:
        s = ln.strip()
        if 20 <= len(s) <= 1000:
            seen.setdefault(s, None)
    return list(seen)


def roc_auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2  # 1-based average rank of the tie group
        rank_sum += avg * sum(lab for _, lab in ranked[i:j])
        i = j
    n_pos, n_neg = len(pos), len(neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def pr_table(pos: list[float], neg: list[float]) -> list[dict]:
    """Precision, recall and F1 of ``score >= t`` for each threshold."""
    rows = []
    for t in THRESHOLDS:
        tp = sum(s >= t for s in pos)
        fp = sum(s >= t for s in neg)
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / len(pos)
        rows.append({"threshold": t, "tp": tp, "fp": fp, "fn": len(pos) - tp,
                     "tn": len(neg) - fp, "precision": round(p, 4), "recall": round(r, 4),
                     "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0})
    return rows


def flag_rate(scores: list[float], t: float) -> float:
    return round(sum(s >= t for s in scores) / len(scores), 4) if scores else float("nan")


def webmix_docs(shards: list[int]) -> list[Document]:
    """Webmix responses with text, their base source label in ``source``."""
    labels = {}
    with open(SHARED / "webmix" / "labels.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            labels[rec["url"]] = rec["source"].split("+")[0]
    docs = []
    for s in shards:
        path = SHARED / "webmix" / f"webmix-{s:05d}.warc.gz"
        for i, (url, text) in enumerate(iter_warc_records(str(path))):
            docs.append(Document(f"{s}-{i}", text, url=url, source=labels.get(url, "unknown")))
    return docs


def run_step(options: dict, docs: list[Document]) -> tuple[list[Document], set[str], float]:
    """Run toxicity_v1 over copies of ``docs``; return them annotated, the kept ids, CPU s."""
    step = Toxicity(ToxicityOptions(**options))
    step.setup()
    copies = [Document(d.id, d.text, d.url, source=d.source) for d in docs]
    t0 = time.process_time()
    kept = {d.id for d in step.run(copies, StepContext(StepStats()))}
    return copies, kept, time.process_time() - t0


def train_stand_in(bodies: list[tuple[str, str]], folder: Path) -> Path:
    """A fastText model in dolma's Jigsaw format, spam as ``toxic`` and ham as ``non-toxic``."""
    from pipeline.text.quality import _train_in_subprocess

    data = folder / "train.txt"
    rows = [f"__label__{'toxic' if lab == 'spam' else 'non-toxic'} {' '.join(b.split())}\n"
            for lab, b in bodies]
    random.Random(0).shuffle(rows)
    data.write_text("".join(rows), encoding="utf-8")
    path = folder / "spam_as_toxic.bin"
    _train_in_subprocess(str(data), {"epoch": 5, "lr": 0.5, "wordNgrams": 2, "dim": 32,
                                     "bucket": 200_000, "minCount": 2, "thread": 1, "seed": 0,
                                     "loss": "softmax", "verbose": 0}, str(path))
    return path


def main() -> None:
    """Print the figures as JSON and write them to ``--out`` if given."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="0-7", help="webmix shards for the document table")
    ap.add_argument("--speed-shards", default="0-1", help="webmix shards timed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.shards.split("-"))
    slo, shi = (int(x) for x in args.speed_shards.split("-"))
    res: dict = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
                 "cpus": os.cpu_count()}
    model = ProfanityCheckModel.load()
    res["model"] = model.description
    matcher = WordMatcher(read_word_list(SHARED / "lists" / "ldnoobw" / "en.json"))

    def listed(line: str) -> bool:
        return matcher.count(line.lower()) > 0

    # --- line-level evaluation against the LDNOOBW label
    bodies = email_bodies()
    mail = usable([ln for _, b in bodies for ln in b.split("\n")])
    ham = usable([ln for lab, b in bodies if lab == "ham" for ln in b.split("\n")])
    wiki = usable(wiki_lines())
    pos = [ln for ln in mail if listed(ln)]
    wiki_clean = [ln for ln in wiki if not listed(ln)]
    wiki_listed = [ln for ln in wiki if listed(ln)]
    neg = random.Random(0).sample(wiki_clean, min(len(pos), len(wiki_clean)))
    ham_clean = [ln for ln in ham if not listed(ln)]
    entries = Counter(e for ln in pos for s, e_ in matcher.occurrences(ln.lower())
                      for e in [ln.lower()[s:e_]])
    p_scores, n_scores = model.scores(pos), model.scores(neg)
    res["profanity_eval"] = {
        "positives": len(pos), "negatives": len(neg),
        "positive_source": "SpamAssassin lines with an English LDNOOBW entry",
        "negative_source": "wiki_val lines without one",
        "top_entries": entries.most_common(12),
        "roc_auc": round(roc_auc(p_scores, n_scores), 4),
        "by_threshold": pr_table(p_scores, n_scores),
    }
    ham_scores = model.scores(ham_clean)
    wl_scores = model.scores(wiki_listed)
    res["flag_rates_clean_text"] = {
        "ham_lines_without_entry": {"lines": len(ham_clean), "at_0.4": flag_rate(ham_scores, .4),
                                    "at_0.5": flag_rate(ham_scores, .5)},
        "wiki_lines_with_entry": {"lines": len(wiki_listed), "at_0.4": flag_rate(wl_scores, .4),
                                  "at_0.5": flag_rate(wl_scores, .5)},
    }

    # --- webmix documents
    t0 = time.time()
    docs = webmix_docs(list(range(lo, hi + 1)))
    res["webmix_docs"] = len(docs)
    print(f"{len(docs)} webmix documents extracted in {time.time() - t0:.0f} s", flush=True)
    for src in ("web_page", "udhr_non_en"):
        lines = usable([ln for d in docs if d.source == src for ln in d.text.split("\n")])
        sc = model.scores(lines)
        res["flag_rates_clean_text"][f"{src}_lines"] = {
            "lines": len(lines), "at_0.4": flag_rate(sc, .4), "at_0.5": flag_rate(sc, .5)}
    annotated_doc, kept_doc, _ = run_step({"threshold": 0.5}, docs)
    annotated_line, kept_line, _ = run_step({"mode": "line", "threshold": 0.5}, docs)
    total = Counter(d.source for d in docs)
    by_source = {}
    for src in sorted(total):
        ids = [d.id for d in docs if d.source == src]
        texts = [d.text for d in docs if d.source == src]
        by_source[src] = {
            "docs": total[src],
            "document_mode_0.5": round(sum(i not in kept_doc for i in ids) / len(ids), 4),
            "line_mode_max_0.5": round(sum(i not in kept_line for i in ids) / len(ids), 4),
            "ldnoobw_en_any": round(sum(listed(t) for t in texts) / len(ids), 4),
        }
    res["webmix_flagged_share"] = by_source
    frac = [d.metadata["toxic_line_fraction"] for d in annotated_line
            if d.metadata["toxic_line_fraction"] is not None]
    res["webmix_mean_toxic_line_fraction"] = round(sum(frac) / len(frac), 4)
    del annotated_doc

    # --- throughput per core
    speed_docs = [d for d in docs if int(d.id.split("-")[0]) in range(slo, shi + 1)]
    mb = sum(len(d.text.encode("utf-8")) for d in speed_docs) / 1e6
    speed: dict = {"docs": len(speed_docs), "mb": round(mb, 2)}
    for name, opts in (("document", {}), ("line", {"mode": "line"}),
                       ("line_drop", {"mode": "line", "threshold": None,
                                      "drop_toxic_lines": True})):
        _, _, cpu = run_step(opts, speed_docs)
        speed[f"step_{name}_docs_per_cpu_s"] = round(len(speed_docs) / cpu, 1)
        speed[f"step_{name}_mb_per_cpu_s"] = round(mb / cpu, 2)
    from profanity_check import predict_prob

    t0 = time.process_time()
    for d in speed_docs:
        predict_prob([d.text])
    cpu = time.process_time() - t0
    speed["peer_predict_prob_per_doc_docs_per_cpu_s"] = round(len(speed_docs) / cpu, 1)
    t0 = time.process_time()
    for d in speed_docs:
        predict_prob([ln for ln in d.text.split("\n") if ln.strip()] or [""])
    cpu = time.process_time() - t0
    speed["peer_predict_prob_lines_docs_per_cpu_s"] = round(len(speed_docs) / cpu, 1)
    speed["document_vs_peer"] = round(speed["step_document_docs_per_cpu_s"]
                                      / speed["peer_predict_prob_per_doc_docs_per_cpu_s"], 2)
    speed["line_vs_peer"] = round(speed["step_line_docs_per_cpu_s"]
                                  / speed["peer_predict_prob_lines_docs_per_cpu_s"], 2)
    with tempfile.TemporaryDirectory() as tmp:
        ft = train_stand_in(bodies, Path(tmp))
        for name, opts in (("document", {}), ("line", {"mode": "line"})):
            _, _, cpu = run_step({"model": str(ft), **opts}, speed_docs)
            speed[f"fasttext_{name}_docs_per_cpu_s"] = round(len(speed_docs) / cpu, 1)
    res["throughput"] = speed
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
