"""URL rules on the real blocklist files (domains: a real subset, for speed; the step tests
use all 4.56M), with the URL forms that trip parsers: ports, userinfo, ``www.``, upper
case, trailing dots, IDN hosts, no scheme."""

from __future__ import annotations

import gzip
import os
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from pipeline.text.url_filter import (
    FILES,
    URLRules,
    build_domain_hashes,
    contains_any,
    hash_domains,
    load_domain_hashes,
    normalize_url,
    read_url_list,
    read_word_file,
    suffix_hashes,
    url_host,
    url_tokens,
)


@pytest.fixture(scope="module")
def blocklist(shared_data: Path) -> Path:
    return shared_data / "lists" / "url_blocklist"


@pytest.fixture(scope="module")
def subset(blocklist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lists folder: the real word and URL lists, and the real domains of the first
    100,000 lines plus every bare TLD and IDN (``xn--``) entry of domains.gz."""
    folder = tmp_path_factory.mktemp("url_lists")
    with gzip.open(blocklist / "domains.gz", "rb") as f:
        raw = f.read()
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    dots = np.flatnonzero(buf == 46)
    idn = buf[starts] == ord("x")
    for i, ch in enumerate(b"n--", 1):
        idn &= buf[np.minimum(starts + i, len(buf) - 1)] == ch
    keep = idn | (np.searchsorted(dots, ends) == np.searchsorted(dots, starts))  # no "."
    keep[:100_000] = True
    with gzip.open(folder / "domains.gz", "wb", compresslevel=1) as out:
        out.write(b"".join(raw[s:e + 1] for s, e in zip(starts[keep], ends[keep], strict=True)))
    for rule, name in FILES.items():
        if rule != "url_domain_blocklist":
            os.symlink(blocklist / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def rules(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> URLRules:
    return URLRules.load(subset, cache_dir=tmp_path_factory.mktemp("cache"))


def test_python_and_numpy_hashes_agree(blocklist: Path) -> None:
    with gzip.open(blocklist / "domains.gz", "rb") as f:
        domains = [line.strip() for line in islice(f, 0, 300_000, 997)]
    buf = np.frombuffer(b"".join(domains), dtype=np.uint8)
    ends = np.cumsum([len(d) for d in domains])
    starts = ends - [len(d) for d in domains]
    vectorised = hash_domains(buf, starts, ends)
    assert [int(h) for h in vectorised] == [suffix_hashes(d.decode())[-1] for d in domains]
    assert suffix_hashes("a.b.com") == [suffix_hashes("com")[0], suffix_hashes("b.com")[-1],
                                        suffix_hashes("a.b.com")[-1]]


def test_build_skips_comments_blanks_and_lowercases(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"# a comment\n\nExample.COM\r\n  spaced.org \nlast.net")
    hashes = build_domain_hashes(path)
    assert len(hashes) == 3 and np.all(np.diff(hashes.astype(np.uint64)) > 0)
    for host in ("example.com", "spaced.org", "last.net"):
        assert contains_any(hashes, suffix_hashes(host))
    assert not contains_any(hashes, suffix_hashes("comment"))


def test_cache_is_built_once_and_mapped(subset: Path, tmp_path: Path) -> None:
    first = load_domain_hashes(subset / "domains.gz", tmp_path)
    [cache] = tmp_path.glob("domains-*.npy")
    stamp = cache.stat().st_mtime_ns
    again = load_domain_hashes(subset / "domains.gz", tmp_path)
    assert isinstance(again, np.memmap) and cache.stat().st_mtime_ns == stamp
    assert np.array_equal(first, again)
    with gzip.open(subset / "domains.gz", "rt") as f:
        n = sum(1 for _ in f)
    assert len(first) == n  # no two distinct domains share a 64-bit hash


def test_domain_rule_covers_subdomains_and_url_forms(rules: URLRules) -> None:
    listed = "0-1avsex.com"  # the second line of domains.gz
    for url in (f"http://{listed}/", f"https://www.{listed}/page?q=1",
                f"https://a.b.{listed}/", f"http://user:pw@WWW.{listed.upper()}:8080/x",
                f"http://{listed}./", f"{listed}/no/scheme", f"//{listed}"):
        assert rules.rule(url) == "url_domain_blocklist", url
    for url in (f"http://x{listed}/", f"http://{listed}.example.org/",
                f"http://example.org/{listed}", "http://[::1/broken"):
        assert rules.rule(url) != "url_domain_blocklist", url
    assert rules.rule("http://anything.xxx/") == "url_domain_blocklist"  # a listed TLD
    hit = rules.rule(f"https://cdn.{listed}/a.jpg")
    assert (hit.value, hit.threshold, hit.op) == (listed, "domains.gz", "in")
    assert rules.rule("http://anything.xxx/").value == "xxx"


def test_idn_hosts_are_looked_up_in_ascii(subset: Path, rules: URLRules) -> None:
    with gzip.open(subset / "domains.gz", "rt") as f:
        idn = [d.strip() for d in f if d.startswith("xn--")]
    found = 0
    for ace in idn[:200]:
        try:
            unicode = ace.encode("ascii").decode("idna")
        except UnicodeError:
            continue  # IDNA 2008 labels Python's IDNA 2003 codec cannot decode
        if unicode.encode("idna").decode("ascii") != ace:
            continue
        shouted = unicode.upper() if unicode.upper().lower() == unicode else unicode
        assert url_host(f"https://{shouted}/x") == ace  # (Turkish "ı" upper-cases to "I")
        assert rules.rule(f"https://sub.{unicode}/x") == "url_domain_blocklist"
        found += 1
    assert found > 20


def test_url_list_matches_normalised_urls(blocklist: Path) -> None:
    urls = read_url_list(blocklist / "urls.gz")
    assert len(urls) > 19_000
    only_list = URLRules(None, urls, (), (), ())
    assert "141jav.com/tag/Slut" in urls  # paths keep their case
    for url in ("https://141jav.com/tag/Slut", "http://www.141jav.com/tag/Slut/",
                "https://user@141JAV.com:443/tag/Slut#top"):
        assert only_list.rule(url) == "url_list", url
    assert only_list.rule("https://141jav.com/tag/slut") is None
    assert only_list.rule("https://141jav.com/tag") is None
    assert normalize_url("HTTPS://WWW.Example.com:8443/A/b/?x=1#f") == "example.com/A/b/?x=1"


def test_word_rules(rules: URLRules, blocklist: Path) -> None:
    banned = read_word_file(blocklist / "banned_words.txt")
    assert "bdsm" in banned and "ass" not in banned  # "#ass" is commented out
    assert rules.rule("https://example.com/BDSM-shop") == "url_banned_word"  # upper case
    assert rules.rule("https://example.com/BDSM-shop").value == "bdsm"
    soft = rules.rule("https://shop.example.com/Sex/Nude-photos")
    assert (soft.value, soft.threshold, soft.op) == (2, 2, ">=")
    assert rules.rule("https://example.com/the-ball-gag-store").value == "ballgag"
    assert rules.rule("https://example.com/bdsmshop") is None  # a token, not a substring
    assert rules.rule("https://shop.example.com/Sex/Nude-photos") == "url_soft_banned_words"
    assert rules.rule("https://example.com/sex-education") is None  # one soft word
    assert rules.rule("https://example.com/the-ball-gag-store") == "url_banned_subword"
    assert rules.rule("https://example.com/theballgagstore") == "url_banned_subword"
    for fine in ("https://www.sussex.ac.uk/", "https://en.wikipedia.org/wiki/Scunthorpe",
                 "https://en.wikipedia.org/wiki/Essex", "https://www.analytics.com/",
                 "https://expertsexchange.com/"):
        assert rules.rule(fine) is None, fine
    assert url_tokens("https://a.b/C-d_e?f=1") == {"https", "a", "b", "c", "d", "e", "f", "1"}
    strict = URLRules(None, frozenset(), (), rules.soft_banned_words, (), soft_word_threshold=1)
    assert strict.rule("https://example.com/sex-education") == "url_soft_banned_words"
