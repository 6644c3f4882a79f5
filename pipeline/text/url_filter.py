"""URL rules as datatrove's ``URLFilter`` applies them, with a compact domain blocklist.

Rules, in the order they are tried (the first that fires names the removal):

``url_domain_blocklist``
    the URL's host or any parent domain of it is listed: ``a.b.example.com`` is blocked
    when ``example.com`` (or ``b.example.com``) is. Every dot-suffix of the host is looked
    up, so no public-suffix list is needed; this is how squidGuard, which the UT1 lists are
    written for, reads a domain list. Most UT1 entries are hosts below a registered domain
    (``x.tumblr.com``); datatrove checks only the registered domain and the exact host, so
    it keeps ``www.`` or other subdomains of those. A listed bare TLD blocks all of it (the
    list names ``adult``, ``porn``, ``sex`` and ``xxx``). Hosts are lowercased, without
    userinfo, port and trailing dot; an internationalised host is looked up in its IDNA
    (``xn--``) form.
``url_list``
    the normalised URL (:func:`normalize_url`: no scheme, userinfo, port, ``www.`` or
    fragment; host lowercased; trailing ``/`` dropped) is in the URL list, normalised the
    same way. (datatrove 0.10 compares the raw URL, scheme included, with entries that
    have none, so this rule never fires there.)
``url_banned_word``
    a token of the lowercased URL (split on non-alphanumerics) is a banned word
    (datatrove does not lowercase the URL: ``/BDSM`` passes there).
``url_soft_banned_words``
    at least ``soft_word_threshold`` distinct tokens are soft-banned words.
``url_banned_subword``
    a banned subword occurs in the URL without its scheme, lowercased, with everything
    but ``[a-z0-9]`` removed (so entries match across separators: ``2girls1cup``).

Word-list lines starting with ``#`` are comments, and entries are normalised like the
URL (datatrove's ``parse_list``).

The domain list (4.56M domains) is held as a sorted array of 64-bit hashes (FNV-1a of the
reversed domain, murmur3's finaliser), 8 bytes a domain instead of ~90 for a Python set of
strings. It is built once into a cache file (``domains-<sha256 of the list>.u64.npy``) and
memory-mapped, so every worker on a node shares its pages. With n listed domains, an
unlisted host suffix collides with one of them with probability n / 2**64 (2.5e-13 for
4.56M); a URL looks up about 3 suffixes, so one false block in ~1.3e12 URLs.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import ahocorasick
import numpy as np

from pipeline.core.step import Rejection
from pipeline.io.atomic import atomic_path

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
#: bumped when the hash or the cache layout changes (part of the cache file name)
CACHE_VERSION = 1
#: bytes of compressed list read per block while building the hash array
_BLOCK = 8 << 20


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def suffix_hashes(host: str) -> list[int]:
    """Return the hashes of every dot-suffix of ``host`` (``a.b.c``: ``c``, ``b.c``, ``a.b.c``).

    ``host`` is ASCII and lowercased (see :func:`url_host`). The hash is FNV-1a over the
    reversed bytes then murmur3's finaliser, as :func:`hash_domains` computes it.
    """
    out = []
    h = _FNV_OFFSET
    for b in reversed(host.encode("ascii", "replace")):
        if b == 46:  # "." : the bytes after it are a suffix
            out.append(_fmix64(h))
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    out.append(_fmix64(h))
    return out


def _np_fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def hash_domains(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the hashes of the domains ``buf[starts[i]:ends[i]]`` (uint8 buffer, lowercase).

    Vectorised over domains: one pass per character position, longest domains first.
    """
    lengths = ends - starts
    order = np.argsort(-lengths, kind="stable")
    last = ends[order] - 1  # index of each domain's last byte
    sorted_len = lengths[order]
    h = np.full(len(order), _FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(_FNV_PRIME)
    for j in range(int(sorted_len[0]) if len(order) else 0):
        k = int(np.searchsorted(-sorted_len, -j, side="left"))  # domains longer than j
        hk = h[:k]
        hk ^= buf[last[:k] - j].astype(np.uint64)
        hk *= prime
    out = np.empty_like(h)
    out[order] = _np_fmix64(h)
    return out


def _blocks(path: str | os.PathLike) -> Iterator[bytes]:
    """Yield whole lines of a (gzipped or plain) list file in blocks of about 8 MB."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rest = b""
    with opener(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
    if rest:
        yield rest + b"\n"


def build_domain_hashes(path: str | os.PathLike) -> np.ndarray:
    """Return the sorted unique hashes of the domains listed in ``path``, one a line.

    Lines are lowercased and stripped of spaces and ``\\r``; empty lines and ``#``
    comments are skipped. Memory: one 8 MB block at a time plus 8 bytes a domain.
    """
    parts = []
    for block in _blocks(path):
        buf = np.frombuffer(block, dtype=np.uint8).copy()
        upper = (buf >= 65) & (buf <= 90)
        buf[upper] += 32
        newlines = np.flatnonzero(buf == 10)
        starts = np.concatenate(([0], newlines[:-1] + 1))
        ends = newlines.copy()
        blank = (buf == 32) | (buf == 13) | (buf == 9)
        # strip leading and trailing blanks (rare: a loop only over lines that have them)
        for i in np.flatnonzero(blank[np.minimum(starts, len(buf) - 1)] | blank[ends - 1]):
            s, e = int(starts[i]), int(ends[i])
            while s < e and blank[s]:
                s += 1
            while e > s and blank[e - 1]:
                e -= 1
            starts[i], ends[i] = s, e
        keep = (ends > starts) & (buf[np.minimum(starts, len(buf) - 1)] != 35)  # "#"
        parts.append(hash_domains(buf, starts[keep], ends[keep]))
    if not parts:
        return np.empty(0, np.uint64)
    hashes = np.concatenate(parts)
    hashes.sort()  # np.unique would hash-deduplicate first: several times slower here
    return hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))]


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/refinery/url_filter`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "refinery" / "url_filter"


def load_domain_hashes(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
                       ) -> np.ndarray:
    """Return the memory-mapped sorted hash array of the domain list ``path``.

    The array is built once per cache folder (keyed by the list's SHA-256, under a file
    lock so concurrent workers build it once) and then only mapped: every process on the
    node shares the same pages.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / f"domains-{file_sha256(path)[:32]}-v{CACHE_VERSION}.u64.npy"
    if not cache.is_file():
        with open(folder / (cache.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not cache.is_file():
                hashes = build_domain_hashes(path)
                with atomic_path(cache, suffix=".npy") as tmp:
                    np.save(tmp, hashes)
    return np.load(cache, mmap_mode="r")


def first_listed(hashes: np.ndarray, values: list[int]) -> int | None:
    """Return the index of the first of ``values`` in the sorted array ``hashes``, or None."""
    if not len(hashes) or not values:
        return None
    v = np.array(values, dtype=np.uint64)
    i = np.searchsorted(hashes, v)
    i[i == len(hashes)] = 0
    found = np.flatnonzero(hashes[i] == v)
    return int(found[0]) if len(found) else None


def contains_any(hashes: np.ndarray, values: list[int]) -> bool:
    """True when one of ``values`` is in the sorted array ``hashes``."""
    return first_listed(hashes, values) is not None


def _split(url: str) -> tuple[str | None, str]:
    """Return ``(host or None, rest)`` of a URL with or without a scheme.

    ``rest`` is path, ``?query`` (fragment dropped). A URL that ``urlsplit`` refuses (a
    broken IPv6 literal) has no host and its whole text as ``rest``.
    """
    text = url.strip()
    if "://" not in text and not text.startswith("//"):
        text = "//" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None, url
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return host, rest


def ascii_host(host: str) -> str:
    """Return ``host`` lowercased, without a trailing dot, IDNA-encoded if not ASCII."""
    host = host.lower().rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # an invalid label: looked up as is (its suffixes still match)
    return host


def url_host(url: str) -> str | None:
    """Return the ASCII lowercased host of ``url`` (no userinfo, port), or None."""
    host, _ = _split(url)
    return ascii_host(host) if host else None


def normalize_url(url: str) -> str:
    """Return ``url`` as the URL list stores it: ``host/path?query`` without scheme,
    userinfo, port, fragment, ``www.`` and trailing ``/``; host lowercased, path as is."""
    host, rest = _split(url)
    return _joined(ascii_host(host) if host else None, rest)


def _joined(host: str | None, rest: str) -> str:
    """Return :func:`normalize_url`'s form of an ASCII host and path."""
    host = host or ""
    if host.startswith("www."):
        host = host[4:]
    return (host + rest).rstrip("/")


def url_tokens(url: str) -> set[str]:
    """Return the distinct tokens of the lowercased URL, split on non-alphanumerics."""
    return set(_NON_ALNUM.split(url.lower())) - {""}


def compact(text: str) -> str:
    """Return ``text`` lowercased with everything but ``[a-z0-9]`` removed."""
    return _NON_ALNUM.sub("", text.lower())


def read_word_file(path: str | os.PathLike) -> set[str]:
    """Return the entries of a word list (one a line, ``#`` lines skipped), compacted."""
    with open(path, encoding="utf-8") as f:
        return {w for line in f if line.strip() and not line.startswith("#")
                if (w := compact(line))}


def read_url_list(path: str | os.PathLike) -> frozenset[str]:
    """Return the normalised URLs of a (gzipped) URL list, one a line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return frozenset(normalize_url(line) for line in f
                         if line.strip() and not line.startswith("#"))


#: the rule names, in the order they are tried
RULES = ("url_domain_blocklist", "url_list", "url_banned_word", "url_soft_banned_words",
         "url_banned_subword")


class URLRules:
    """The loaded lists and the rule check; build with :meth:`load`.

    ``domains`` is a sorted uint64 hash array (or None to skip the rule); ``urls`` the
    normalised URL set; the three word sets compacted entries.
    """

    def __init__(self, domains: np.ndarray | None, urls: frozenset[str],
                 banned_words: Iterable[str], soft_banned_words: Iterable[str],
                 banned_subwords: Iterable[str], soft_word_threshold: int = 2) -> None:
        self.domains = domains
        self.urls = urls
        self.banned_words = frozenset(banned_words)
        self.soft_banned_words = frozenset(soft_banned_words)
        self.soft_word_threshold = soft_word_threshold
        subwords = sorted(set(banned_subwords))
        self._subwords = ahocorasick.Automaton() if subwords else None
        if self._subwords is not None:
            for w in subwords:
                self._subwords.add_word(w, w)
            self._subwords.make_automaton()

    @classmethod
    def load(cls, folder: str | os.PathLike, rules: Iterable[str] = RULES,
             soft_word_threshold: int = 2, cache_dir: str | os.PathLike | None = None
             ) -> URLRules:
        """Load the lists of ``folder`` that the enabled ``rules`` need (see :data:`FILES`)."""
        rules = set(rules)
        folder = Path(folder)

        def words(rule: str) -> set[str]:
            return read_word_file(folder / FILES[rule]) if rule in rules else set()

        domains = (load_domain_hashes(folder / FILES["url_domain_blocklist"], cache_dir)
                   if "url_domain_blocklist" in rules else None)
        urls = read_url_list(folder / FILES["url_list"]) if "url_list" in rules else frozenset()
        return cls(domains, urls, words("url_banned_word"), words("url_soft_banned_words"),
                   words("url_banned_subword"), soft_word_threshold)

    def rule(self, url: str) -> Rejection | None:
        """Return the first rule that blocks ``url`` (its name, with what matched), or None.

        The :class:`Rejection` is the rule's name as a string; ``value`` is what matched
        (the listed domain, the normalised URL, the word or subword, or the number of
        soft-banned words), ``threshold`` the list file (the count threshold for soft words).
        """
        host, rest = _split(url)
        host = ascii_host(host) if host else None
        if host and self.domains is not None:
            k = first_listed(self.domains, suffix_hashes(host))
            if k is not None:
                domain = ".".join(host.split(".")[-(k + 1):])
                return Rejection("url_domain_blocklist", domain, FILES["url_domain_blocklist"],
                                 "in", "domain of the URL")
        if self.urls and (bare := _joined(host, rest)) in self.urls:
            return Rejection("url_list", bare, FILES["url_list"], "in", "normalised URL")
        if self.banned_words or self.soft_banned_words:
            tokens = url_tokens(url)
            banned = tokens & self.banned_words
            if banned:
                return Rejection("url_banned_word", min(banned), FILES["url_banned_word"], "in",
                                 "word of the URL")
            soft = tokens & self.soft_banned_words
            if self.soft_banned_words and len(soft) >= self.soft_word_threshold:
                return Rejection("url_soft_banned_words", len(soft), self.soft_word_threshold,
                                 ">=", f"soft-banned words of the URL ({', '.join(sorted(soft))})")
        if self._subwords is not None:
            scheme_less = url.split("://", 1)[1] if "://" in url else url
            hit = next(self._subwords.iter(compact(scheme_less)), None)
            if hit is not None:
                return Rejection("url_banned_subword", hit[1], FILES["url_banned_subword"], "in",
                                 "URL without separators")
        return None


#: the list file each rule reads, inside the lists folder
FILES = {"url_domain_blocklist": "domains.gz", "url_list": "urls.gz",
         "url_banned_word": "banned_words.txt", "url_soft_banned_words": "soft_banned_words.txt",
         "url_banned_subword": "banned_subwords.txt"}
