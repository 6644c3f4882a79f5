"""``url_filter_v1`` on every webmix URL with the real blocklist (4.56M domains, 19,586 URLs)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepCheckError, StepContext, StepStats
from pipeline.text.url_filter import RULES, url_host


@pytest.fixture(scope="module")
def lists(shared_data: Path) -> str:
    return str(shared_data / "lists" / "url_blocklist")


@pytest.fixture(scope="module")
def webmix(shared_data: Path) -> list[Document]:
    """One document per webmix record (5,612), its URL and source label from labels.jsonl."""
    with open(shared_data / "webmix" / "labels.jsonl", encoding="utf-8") as f:
        labels = [json.loads(line) for line in f]
    return [Document(f"w{i}", "text", rec["url"], source=rec["source"])
            for i, rec in enumerate(labels)]


def _run(docs: list[Document], cache: Path, **options) -> tuple[list, list, StepStats]:
    cls = get_step_class("url_filter_v1")
    step = cls(cls.Options(cache_dir=str(cache), **options))
    step.check()
    step.setup()
    removed: list = []
    ctx = StepContext(StepStats(), lambda d, s, r: removed.append((d, r)))
    kept = list(step.run([copy.deepcopy(d) for d in docs], ctx))
    return kept, removed, ctx.stats


def test_domain_rule_removes_exactly_the_listed_hosts(webmix: list[Document], lists: str,
                                                      url_domain_cache: Path) -> None:
    """Checked against the list itself, read as text: a URL is blocked iff one of its
    host's dot-suffixes is a line of domains.gz."""
    suffixes: dict[str, set[str]] = {}
    for doc in webmix:
        labels = (url_host(doc.url) or "").split(".")
        suffixes[doc.url] = {".".join(labels[i:]) for i in range(len(labels))} - {""}
    wanted = set().union(*suffixes.values())
    with gzip.open(Path(lists) / "domains.gz", "rb") as f:
        wanted_bytes = {w.encode("ascii") for w in wanted}
        listed = {d.decode("ascii") for d in f.read().split(b"\n") if d in wanted_bytes}
    expected = {u for u, s in suffixes.items() if s & listed}
    kept, removed, stats = _run(webmix, url_domain_cache, lists=lists,
                                rules=["url_domain_blocklist"])
    assert {d.url for d, _ in removed} == expected
    assert expected and all(r == "url_domain_blocklist" for _, r in removed)
    assert not any(d.source.startswith(("wikipedia", "udhr")) for d, _ in removed)
    assert all(d.metadata["url_filter_rule"] is None for d in kept)


def test_all_rules_on_webmix(webmix: list[Document], lists: str,
                             url_domain_cache: Path) -> None:
    no_url = Document("no-url", "text without a URL")
    kept, removed, stats = _run([*webmix, no_url], url_domain_cache, lists=lists)
    assert stats.counters["no_url"] == 1 and no_url.id in {d.id for d in kept}
    assert {r for _, r in removed} <= set(RULES)
    assert sum(stats.dropped.values()) == len(removed) > 0
    for doc, reason in removed:
        assert doc.metadata["url_filter_rule"] == reason
    annotated, dropped, astats = _run(webmix, url_domain_cache, lists=lists, drop=False)
    assert not dropped and len(annotated) == len(webmix)
    rules = {d.id: d.metadata["url_filter_rule"] for d in annotated}
    assert {i for i, r in rules.items() if r} == {d.id for d, _ in removed}
    assert sum(v for k, v in astats.counters.items() if k.startswith("annotated:")) == len(removed)


def test_tricky_urls_through_the_step(lists: str, url_domain_cache: Path) -> None:
    urls = {
        "http://user:secret@WWW.0-1AVSEX.COM:8080/": "url_domain_blocklist",
        "https://cdn.images.0-1avsex.com/a.jpg": "url_domain_blocklist",
        "https://www.141jav.com/tag/Slut/": "url_list",
        "https://example.org/BDSM": "url_banned_word",
        "https://example.org/sexy/nude/": "url_soft_banned_words",
        "https://example.org/free-ball-gag-deals": "url_banned_subword",
        "https://en.wikipedia.org/wiki/Scunthorpe": None,
        "https://www.sussex.ac.uk/": None,
    }
    docs = [Document(str(i), "t", u) for i, u in enumerate(urls)]
    kept, removed, _ = _run(docs, url_domain_cache, lists=lists,
                            rules=["url_domain_blocklist", "url_list", "url_banned_word",
                                   "url_soft_banned_words", "url_banned_subword"])
    got = {d.url: d.metadata["url_filter_rule"] for d in kept + [d for d, _ in removed]}
    # 141jav.com is not a listed domain, so the URL list is what blocks that page
    assert got == urls


def test_domain_array_is_built_once_per_cache(lists: str, url_domain_cache: Path) -> None:
    cls = get_step_class("url_filter_v1")
    first = cls(cls.Options(lists=lists, cache_dir=str(url_domain_cache)))
    first.setup()
    [cache] = url_domain_cache.glob("domains-*.npy")
    stamp = cache.stat().st_mtime_ns
    assert os.path.getsize(cache) < 40_000_000  # 8 bytes a domain, 4.56M domains
    clone = pickle.loads(pickle.dumps(first))
    assert clone._rules is None  # the mapped array is not pickled
    clone.setup()
    assert cache.stat().st_mtime_ns == stamp
    doc = Document("d", "t", "https://a.0-1avsex.com/")
    assert clone.reject_reason(doc) == first.reject_reason(copy.deepcopy(doc))


def test_check_names_the_missing_list(tmp_path: Path, lists: str) -> None:
    cls = get_step_class("url_filter_v1")
    with pytest.raises(StepCheckError, match="folder 'nowhere' does not exist"):
        cls(cls.Options(lists="nowhere")).check()
    (tmp_path / "banned_words.txt").write_text("bdsm\n", encoding="utf-8")
    with pytest.raises(StepCheckError, match="has no 'domains.gz', 'urls.gz'"):
        cls(cls.Options(lists=str(tmp_path))).check()
    cls(cls.Options(lists=str(tmp_path), rules=["url_banned_word"])).check()
    with pytest.raises(ValueError, match="url_banned_wrd"):
        cls.Options(rules=["url_banned_wrd"])
