"""badwords_v1 and url_filter_v1 on webmix: throughput per core, list load cost, removals,
and the same decisions made by datatrove's C4BadWordsFilter and URLFilter.

Usage (from the repository root; datatrove is optional, ``pip install -e .[bench]``)::

    python benchmarks/toolbox_filters_bench.py [--shards 0-7] [--docs-cache PATH]

Documents: every webmix response with text (HTML reduced to its main text by resiliparse,
as ``extract_v1`` does by default; ``text/plain`` as is), language from fastText lid.176
(``langid``'s model), source from ``labels.jsonl``. Throughput is CPU seconds of this one
process (``time.process_time``), i.e. documents per second per core; the URL rules are
timed over ``--url-repeat`` passes over the URLs, so the figure is not dominated by timer
resolution.

Domain-list load cost is measured in fresh child processes, one per way of holding the
4.56M domains: building our hash array (first use on a node), mapping the built array
(every later worker; the parent maps and reads it too, so the child's PSS shows the
sharing), a worker's whole ``url_filter_v1`` setup (mapped domains, the normalised URL
list, the word lists), a plain Python set of the domain strings, and datatrove's
``URLFilter`` lists (a set as well). RSS is the process's resident memory over its value before loading;
peak is VmHWM over that same baseline.

Peers run offline: datatrove's ``URLFilter`` reads the lists it ships (the same files as
``../shared/data/lists/url_blocklist``) and gets a tldextract that uses its bundled public
suffix list snapshot instead of fetching one; ``C4BadWordsFilter`` gets our LDNOOBW JSON
lists written as the text files it would download.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LDNOOBW = SHARED / "lists" / "ldnoobw"
BLOCKLIST = SHARED / "lists" / "url_blocklist"


# --- documents -------------------------------------------------------------------------

def load_docs(shards: list[int], cache: str | None) -> list[dict]:
    """Return ``{url, text, source, language}`` for every webmix response with text."""
    if cache and os.path.isfile(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)
    from pipeline.text.corpus import iter_warc_records
    from pipeline.text.langid import get_identifier

    with open(SHARED / "webmix" / "labels.jsonl", encoding="utf-8") as f:
        labels = {(r := json.loads(line))["url"]: r["source"] for line in f}
    ident = get_identifier()
    docs = []
    for s in shards:
        for url, text in iter_warc_records(str(SHARED / "webmix" / f"webmix-{s:05d}.warc.gz")):
            docs.append({"url": url, "text": text, "source": labels.get(url, "unknown"),
                         "language": ident.identify(text)[0]})
    if cache:
        with open(cache, "wb") as f:
            pickle.dump(docs, f)
    return docs


def base_source(source: str) -> str:
    """``web_page+exact_dup`` -> ``web_page``."""
    return source.split("+")[0]


# --- memory of one child process -------------------------------------------------------

def _proc_kb(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure_load(kind: str, cache_dir: str) -> dict:
    """Load the domain list one way in this process; return seconds and memory in MB."""
    import numpy as np

    from pipeline.text.url_filter import contains_any, load_domain_hashes
    from pipeline.text.url_filter import suffix_hashes as _sh

    domains = BLOCKLIST / "domains.gz"
    base_rss, base_pss = _proc_kb("VmRSS"), _proc_kb("Pss", "/proc/self/smaps_rollup")
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "hash_build":  # first use on a node: hash, sort, save, map
        with tempfile.TemporaryDirectory() as fresh:
            held = load_domain_hashes(domains, fresh)  # the mapping outlives the file
    elif kind == "hash_mapped":
        held = load_domain_hashes(domains, cache_dir)
    elif kind == "url_filter_step":  # a worker's whole url_filter_v1 setup, cache built
        from pipeline.text.url_filter import URLRules

        held = URLRules.load(BLOCKLIST, cache_dir=cache_dir).domains
    elif kind == "python_set":
        with gzip.open(domains, "rt", encoding="ascii") as f:
            held = set(f.read().split())
    elif kind == "datatrove":
        held = _datatrove_url_filter()
        held.download_data()
    else:
        raise ValueError(kind)
    out = {"kind": kind, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if kind.startswith("hash") or kind == "url_filter_step":
        int(np.asarray(held).sum())  # fault in every page, as a long-running worker will
        assert contains_any(held, _sh("0-1avsex.com"))
    out["rss_mb"] = (_proc_kb("VmRSS") - base_rss) / 1024
    out["peak_mb"] = (_proc_kb("VmHWM") - base_rss) / 1024
    out["pss_mb"] = (_proc_kb("Pss", "/proc/self/smaps_rollup") - base_pss) / 1024
    return out


def load_costs(cache_dir: str) -> list[dict]:
    """Run :func:`measure_load` for each kind in a fresh child process."""
    import numpy as np

    from pipeline.text.url_filter import load_domain_hashes

    kinds = ["hash_build", "hash_mapped", "url_filter_step", "python_set"]
    with contextlib.suppress(ImportError):
        import datatrove  # noqa: F401

        kinds.append("datatrove")
    results = []
    for kind in kinds:
        if kind == "hash_mapped":  # this process builds the cache, maps and reads it too
            shared = load_domain_hashes(BLOCKLIST / "domains.gz", cache_dir)
            int(np.asarray(shared).sum())  # this process holds the pages too
        run = subprocess.run([sys.executable, __file__, "--measure-load", kind,
                              "--cache-dir", cache_dir], capture_output=True, text=True,
                             cwd=REPO)
        if run.returncode:
            raise RuntimeError(f"{kind}: {run.stderr[-2000:]}")
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


# --- peers -----------------------------------------------------------------------------

def _datatrove_url_filter():
    """datatrove's URLFilter with an offline tldextract (bundled suffix-list snapshot)."""
    import tldextract
    from datatrove.pipeline.filters import URLFilter

    filt = URLFilter()
    filt.tldextractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    return filt


def _datatrove_badwords(tmp: str):
    """datatrove's C4BadWordsFilter reading our LDNOOBW lists as its downloaded files."""
    from datatrove.pipeline.filters import c4_filters

    from pipeline.text.badwords import read_word_list

    def local(remote_path: str, **_kw) -> str:
        lang = remote_path.rstrip("/").rsplit("/", 1)[-1]
        path = os.path.join(tmp, lang + ".txt")
        words = read_word_list(LDNOOBW / f"{lang}.json")
        Path(path).write_text("\n".join(words) + "\n", encoding="utf-8")
        return path

    c4_filters.cached_asset_path_or_download = local
    return c4_filters.C4BadWordsFilter(fail_on_missing_language=False)


# --- the two steps ---------------------------------------------------------------------

def bench_badwords(docs: list[dict]) -> dict:
    """Throughput and removals of badwords_v1 (and datatrove's C4 filter if installed)."""
    from pipeline.core.document import Document
    from pipeline.core.step import StepContext, StepStats
    from pipeline.steps.badwords import BadWordsFilter

    step = BadWordsFilter(BadWordsFilter.Options(lists=str(LDNOOBW)))
    t = time.process_time()
    step.setup()
    setup_s = time.process_time() - t
    ours = [Document(str(i), d["text"], d["url"], metadata={"language": d["language"]})
            for i, d in enumerate(docs)]
    ctx = StepContext(StepStats())
    t = time.process_time()
    kept = {d.id for d in step.run(ours, ctx)}
    cpu = time.process_time() - t
    dropped = [str(i) not in kept for i in range(len(docs))]
    mb = sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6
    out = {"docs": len(docs), "setup_cpu_s": setup_s, "docs_per_cpu_s": len(docs) / cpu,
           "mb_per_cpu_s": mb / cpu, "removed": sum(dropped),
           "removed_by_source": dict(Counter(base_source(d["source"])
                                             for d, x in zip(docs, dropped, strict=True) if x)),
           "removed_by_language": dict(Counter(d["language"] for d, x
                                               in zip(docs, dropped, strict=True) if x)),
           "no_list": sum(v for k, v in ctx.stats.counters.items() if k.startswith("no_list:"))}
    try:
        from datatrove.data import Document as DTDocument
    except ImportError:
        out["datatrove"] = "not installed"
        return out
    with tempfile.TemporaryDirectory() as tmp:
        peer = _datatrove_badwords(tmp)
        dt_docs = [DTDocument(text=d["text"], id=str(i), metadata={"language": d["language"]})
                   for i, d in enumerate(docs)]
        for lang in {d["language"] for d in docs}:  # lists compiled outside the timing
            with contextlib.suppress(ValueError):
                peer._get_badwords(lang)
        t = time.process_time()
        peer_drop = [peer.filter(d) is not True for d in dt_docs]
        peer_cpu = time.process_time() - t
    differ = [i for i, (a, b) in enumerate(zip(dropped, peer_drop, strict=True)) if a != b]
    out["datatrove"] = {
        "docs_per_cpu_s": len(docs) / peer_cpu, "removed": sum(peer_drop),
        "speed_ratio_ours_over_datatrove": peer_cpu / cpu, "decisions_differ": len(differ),
        "differ_examples": [(docs[i]["language"], dropped[i], peer_drop[i])
                            for i in differ[:10]]}
    return out


def blocklist_urls() -> list[str]:
    """URLs made from the blocklist itself, where the rules differ from datatrove's: every
    10th listed URL with ``https://`` (and every 20th of those with ``www.``), and
    ``https://www.DOMAIN/`` and ``https://cdn.DOMAIN:8080/`` for every 2,000th domain (not
    for IP addresses)."""
    with gzip.open(BLOCKLIST / "urls.gz", "rt", encoding="utf-8") as f:
        listed = [u.strip() for u in f][::10]
    urls = [f"https://{u}" for u in listed] + [f"http://www.{u}" for u in listed[::20]]
    with gzip.open(BLOCKLIST / "domains.gz", "rt", encoding="ascii") as f:
        for i, d in enumerate(f):
            if i % 2000 == 0 and not d.strip().replace(".", "").isdigit():  # not an IP
                urls += [f"https://www.{d.strip()}/", f"https://cdn.{d.strip()}:8080/a.js"]
    return urls


def compare_url_rules(urls: list[str], cache_dir: str) -> dict:
    """Our rule and datatrove's reason for each URL, where one blocks and the other not."""
    from datatrove.data import Document as DTDocument

    from pipeline.text.url_filter import URLRules

    rules = URLRules.load(BLOCKLIST, cache_dir=cache_dir)
    peer = _datatrove_url_filter()
    peer.download_data()
    ours = [rules.rule(u) for u in urls]
    theirs = [peer.filter(DTDocument(text="", id=str(i), metadata={"url": u}))
              for i, u in enumerate(urls)]
    theirs = [None if r is True else r[1] for r in theirs]
    pairs = Counter(f"{a or 'kept'} / {b or 'kept'}" for a, b in zip(ours, theirs, strict=True))
    differ = [(u, a, b) for u, a, b in zip(urls, ours, theirs, strict=True)
              if (a is None) != (b is None)]
    return {"urls": len(urls), "ours_blocked": sum(a is not None for a in ours),
            "datatrove_blocked": sum(b is not None for b in theirs),
            "ours_vs_datatrove": dict(pairs.most_common()), "differ": len(differ),
            "differ_examples": [(u, a and str(a), b) for u, a, b in differ[:12]]}


def bench_url_filter(docs: list[dict], cache_dir: str, repeat: int) -> dict:
    """Throughput and removals by rule of url_filter_v1 (and datatrove's URLFilter)."""
    from pipeline.text.url_filter import URLRules

    rules = URLRules.load(BLOCKLIST, cache_dir=cache_dir)
    urls = [d["url"] for d in docs]
    t = time.process_time()
    for _ in range(repeat):
        ours = [rules.rule(u) for u in urls]
    cpu = (time.process_time() - t) / repeat
    by_rule = Counter(r for r in ours if r)
    by_rule_source = Counter(f"{r} / {base_source(d['source'])}"
                             for r, d in zip(ours, docs, strict=True) if r)
    out = {"docs": len(docs), "docs_per_cpu_s": len(docs) / cpu, "removed": sum(by_rule.values()),
           "removed_by_rule": dict(by_rule), "removed_by_rule_and_source": dict(by_rule_source),
           "removed_urls": sorted(u for u, r in zip(urls, ours, strict=True) if r)}
    try:
        from datatrove.data import Document as DTDocument
    except ImportError:
        out["datatrove"] = "not installed"
        return out
    peer = _datatrove_url_filter()
    peer.download_data()
    dt_docs = [DTDocument(text="", id=str(i), metadata={"url": u}) for i, u in enumerate(urls)]
    t = time.process_time()
    for _ in range(repeat):
        theirs = [peer.filter(d) for d in dt_docs]
    peer_cpu = (time.process_time() - t) / repeat
    peer_reason = [None if r is True else r[1] for r in theirs]
    differ = [(u, a, b) for u, a, b in zip(urls, ours, peer_reason, strict=True)
              if (a is None) != (b is None)]
    out["datatrove"] = {
        "docs_per_cpu_s": len(docs) / peer_cpu, "removed": sum(r is not None for r in peer_reason),
        "removed_by_reason": dict(Counter(r for r in peer_reason if r)),
        "speed_ratio_ours_over_datatrove": peer_cpu / cpu,
        "decisions_differ": differ,
        "blocklist_urls": compare_url_rules(blocklist_urls(), cache_dir)}
    return out


# --- report ----------------------------------------------------------------------------

def markdown(res: dict) -> str:
    """Format the results as the RESULTS.md section's tables."""
    bw, uf, loads = res["badwords"], res["url_filter"], res["load"]
    lines = [f"Machine: {res['machine']}; date {res['date']}; "
             f"command `python benchmarks/toolbox_filters_bench.py`; {bw['docs']} webmix "
             "documents (all 8 shards, resiliparse main text, lid.176 language).", "",
             "| filter | docs/s per core | removed | peer docs/s per core | peer removed | "
             "ratio | decisions that differ |", "|---|---|---|---|---|---|---|"]
    for name, r in (("badwords_v1 vs datatrove C4BadWordsFilter", bw),
                    ("url_filter_v1 vs datatrove URLFilter", uf)):
        p = r["datatrove"]
        if isinstance(p, dict):
            differ = p["decisions_differ"]
            n = differ if isinstance(differ, int) else len(differ)
            lines.append(f"| {name} | {r['docs_per_cpu_s']:,.0f} | {r['removed']} | "
                         f"{p['docs_per_cpu_s']:,.0f} | {p['removed']} | "
                         f"{p['speed_ratio_ours_over_datatrove']:.2f}x | {n} |")
        else:
            lines.append(f"| {name} | {r['docs_per_cpu_s']:,.0f} | {r['removed']} | "
                         f"{p} | | | |")
    lines += ["", "| 4.56M domains held as | load wall s | load CPU s | RSS MB | peak MB | "
              "PSS MB |", "|---|---|---|---|---|---|"]
    for r in loads:
        lines.append(f"| {r['kind']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['rss_mb']:.0f} | {r['peak_mb']:.0f} | {r['pss_mb']:.0f} |")
    lines += ["", "url_filter_v1 removals by rule and source: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(uf["removed_by_rule_and_source"].items())),
              "", "url_filter_v1 vs datatrove on URLs made from the blocklist (ours / theirs): "
              + (", ".join(f"{k}: {v}" for k, v in uf["datatrove"]["blocklist_urls"]
                           ["ours_vs_datatrove"].items())
                 if isinstance(uf["datatrove"], dict) else "datatrove not installed"),
              "", "badwords_v1 removals by source: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(bw["removed_by_source"].items()))]
    return "\n".join(lines)


def main() -> None:
    """Print the figures as JSON, then as Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="0-7")
    ap.add_argument("--docs-cache", default=None,
                    help="pickle of the extracted documents (written if missing)")
    ap.add_argument("--url-repeat", type=int, default=5)
    ap.add_argument("--measure-load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_load:
        print(json.dumps(measure_load(args.measure_load, args.cache_dir)))
        return
    lo, hi = (int(x) for x in args.shards.split("-"))
    t0 = time.time()
    docs = load_docs(list(range(lo, hi + 1)), args.docs_cache)
    print(f"{len(docs)} documents in {time.time() - t0:.0f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as cache_dir:
        res = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs",
               "date": str(datetime.date.today()),
               "load": load_costs(cache_dir),
               "badwords": bench_badwords(docs),
               "url_filter": bench_url_filter(docs, cache_dir, args.url_repeat)}
    print(json.dumps(res, indent=1, ensure_ascii=False))
    print(markdown(res))


if __name__ == "__main__":
    main()
