"""The C MinHash kernel (pipeline/dedup/_minhash.c) gives the numpy path's signatures bit for
bit, so every dedup decision and golden output is the same whichever path runs.

Marked ``native``: the suite fails when the extension is not built, unless
``REFINERY_ALLOW_PURE_PYTHON=1`` (tests/conftest.py), which skips these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup import minhash
from pipeline.dedup.minhash import MinHasher

pytestmark = pytest.mark.native("pipeline.dedup._minhash")


@pytest.fixture(scope="module")
def webmix_payloads(shared_data: Path) -> list[str]:
    """Every response payload of the first webmix shard, decoded: HTML and plain text of
    Wikipedia, web pages, spam and UDHR translations in dozens of scripts."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    texts = []
    with open(shared_data / "webmix" / "webmix-00000.warc.gz", "rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
            body = rec.reader.read()
            texts.append(bytes_to_str(body, detect_encoding(body)))
    return texts


@pytest.fixture(scope="module")
def tatoeba(shared_data: Path) -> list[str]:
    """462 long Tatoeba sentences in 84 languages (CJK, Thai, Arabic, Cyrillic, ...)."""
    lines = (shared_data / "langid" / "tatoeba_long_cld2.tsv").read_text("utf-8").splitlines()
    return [line.split("\t", 3)[3] for line in lines[1:]]


def _assert_same(texts: list[str], num_perm: int, ngram: int = 5, seed: int = 1) -> np.ndarray:
    sig, counts = MinHasher(num_perm, ngram, seed, native=True).signatures_batched(texts)
    ref, ref_counts = MinHasher(num_perm, ngram, seed, native=False).signatures_batched(texts)
    assert sig.shape == ref.shape == (len(texts), num_perm)
    assert sig.dtype == ref.dtype == np.uint32
    np.testing.assert_array_equal(counts, ref_counts)
    mismatched = np.flatnonzero((sig != ref).any(axis=1))
    assert len(mismatched) == 0, f"{len(mismatched)} documents differ, first {mismatched[:5]}"
    return counts


@pytest.mark.parametrize("num_perm", [120, 256])
def test_native_equals_numpy_on_webmix(webmix_payloads: list[str], num_perm: int) -> None:
    counts = _assert_same(webmix_payloads, num_perm)
    # the sample exercises what it should: many documents, every string width CPython has
    assert len(webmix_payloads) > 500 and counts.sum() > 500_000
    widths = {max(map(ord, t), default=0).bit_length() for t in webmix_payloads}
    assert max(widths) > 16 and any(8 < w <= 16 for w in widths) and min(widths) <= 8


@pytest.mark.parametrize(("num_perm", "ngram", "seed"), [(120, 5, 1), (256, 5, 7), (64, 3, 2),
                                                          (100, 1, 3)])
def test_native_equals_numpy_in_84_languages(tatoeba: list[str], num_perm: int, ngram: int,
                                             seed: int) -> None:
    counts = _assert_same(tatoeba, num_perm, ngram, seed)
    assert (counts == 1).any() and (counts > 20).any()  # short (CJK runs) and long texts


EDGE_CASES = [
    "",
    "   \n\t  ",
    "!!! ... --- ???",
    "one",
    "two words",
    "exactly five words right here",
    "Six Words, With CAPITALS And Digits 2026",
    "no\u00a0break\u00a0space and\u2003em\u2003space and\u3000ideographic\u3000space",
    "quotes \u201ccurly\u201d \u2014 dash \u00abguillemets\u00bb \u00bfinverted? \u3001\u3002 done",
    "U+3003 \u3003 is not a separator, U+00C0 \u00c0 neither",
    "caf\u00e9 na\u00efve \u00fcber \u00c5ngstr\u00f6m",  # Latin-1: one byte per code point
    "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439 \u043c\u0438\u0440",
    "emoji \U0001f600 astral \U00010348 plane \U0001f680 words",
    "lone \ud800 surrogate \udfff here",
    "a" * 5000 + " long word " + "\u00e9" * 3000 + " and " + "\U0001f600" * 1500,
    "\u00a0\u2000\u3000",  # only separators
    "x\u0085y\u00a0z",  # U+0085 is a word code point here (C2 85)
]


@pytest.mark.parametrize("num_perm", [1, 7, 120, 256, 300])
@pytest.mark.parametrize("ngram", [1, 5])
def test_native_equals_numpy_on_edge_cases(num_perm: int, ngram: int) -> None:
    counts = _assert_same(EDGE_CASES, num_perm, ngram)
    assert counts[0] == counts[1] == counts[2] == counts[15] == 0
    if ngram == 5:
        assert counts[3] == counts[4] == counts[5] == 1 and counts[6] == 3
    sig = MinHasher(num_perm, ngram, native=True).signatures(EDGE_CASES)
    assert (sig[0] == minhash.EMPTY).all() and (sig[3] != minhash.EMPTY).all()


def test_each_text_alone_equals_the_batch() -> None:
    # a document's signature does not depend on its neighbours (no state leaks between them)
    mh = MinHasher(120, native=True)
    batch = mh.signatures(EDGE_CASES)
    for i, text in enumerate(EDGE_CASES):
        np.testing.assert_array_equal(mh.signatures([text])[0], batch[i])


def test_native_equals_numpy_on_a_huge_document(webmix_payloads: list[str]) -> None:
    # ~6 MB in one text: the numpy path splits it over many chunks, the kernel takes it whole
    huge = "\n".join(webmix_payloads[:400])
    assert len(huge) > 4_000_000
    counts = _assert_same([huge, "short one", huge[: len(huge) // 3]], 256)
    assert counts[0] > 10 * 16384


def test_every_kernel_gives_the_same_signatures(tatoeba: list[str]) -> None:
    from pipeline.dedup import _minhash

    mh = MinHasher(256, native=False)
    ref = mh.signatures(tatoeba)
    kernels = _minhash.kernels()
    assert kernels[0] == "baseline"
    for level in range(len(kernels)):
        sig, _ = _minhash.signatures(tatoeba, mh.a, mh.shingler.weights, kernel=level)
        np.testing.assert_array_equal(np.frombuffer(sig, np.uint32).reshape(ref.shape), ref)
    with pytest.raises(ValueError, match="kernel"):
        _minhash.signatures(tatoeba, mh.a, mh.shingler.weights, kernel=7)


def test_minhasher_takes_the_native_path_when_built() -> None:
    assert minhash.native_available()
    assert MinHasher().native
    assert not MinHasher(native=False).native
    # any sequence of str, not only lists
    texts = ("alpha beta gamma delta epsilon zeta", "eta theta")
    np.testing.assert_array_equal(MinHasher(native=True).signatures(iter(texts)),
                                  MinHasher(native=False).signatures(list(texts)))


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes, not str"):
        MinHasher(native=True).signatures(["fine", b"bytes"])
    from pipeline.dedup import _minhash

    with pytest.raises(ValueError, match="num_perm"):
        _minhash.signatures(["x"], b"", np.ones(5, np.uint64))


# ------------------------------------------------ Arrow input: the UTF-8 buffer, no str per text


def _valid(texts: list[str]) -> list[str]:
    """The texts an Arrow string column can hold (UTF-8: no lone surrogates)."""
    out = []
    for t in texts:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            continue
        out.append(t)
    return out


def test_arrow_signatures_equal_the_str_kernel(webmix_payloads: list[str],
                                               tatoeba: list[str]) -> None:
    import pyarrow as pa

    texts = _valid(webmix_payloads + tatoeba + EDGE_CASES)
    assert len(texts) > 900
    mh = MinHasher(120, native=True)
    ref, ref_counts = MinHasher(120, native=False).signatures_batched(texts)
    for arr in (pa.array(texts), pa.array(texts, pa.large_string()),
                pa.chunked_array([texts[:300], texts[300:]])):
        sig, counts = mh.signatures_arrow(arr)
        np.testing.assert_array_equal(sig, ref)
        np.testing.assert_array_equal(counts, ref_counts)
    # a slice reads its own rows of the shared buffers; a null is an empty text
    sig, _ = mh.signatures_arrow(pa.array(texts).slice(17, 40))
    np.testing.assert_array_equal(sig, ref[17:57])
    sig, _ = mh.signatures_arrow(pa.array(texts, pa.large_string()).slice(17, 40))
    np.testing.assert_array_equal(sig, ref[17:57])
    sig, counts = mh.signatures_arrow(pa.array([texts[0], None, ""]))
    np.testing.assert_array_equal(sig[0], ref[0])
    assert counts[1] == counts[2] == 0 and (sig[1] == minhash.EMPTY).all()
    assert mh.signatures_arrow(pa.array([], pa.string()))[0].shape == (0, 120)
    # the numpy fallback takes the same column
    sig, counts = MinHasher(120, native=False).signatures_arrow(pa.array(texts[:200]), 1 << 16)
    np.testing.assert_array_equal(sig, ref[:200])


def test_arrow_shingle_sets_equal_the_numpy_sets(webmix_payloads: list[str]) -> None:
    import pyarrow as pa

    texts = _valid(webmix_payloads[:300] + EDGE_CASES)
    values, offsets = MinHasher(native=True).shingle_sets_arrow(pa.array(texts))
    sets = MinHasher(native=False).shingler.shingle_sets(texts)
    assert len(offsets) == len(texts) + 1 and values.dtype == np.uint64
    for i, want in enumerate(sets):
        np.testing.assert_array_equal(values[offsets[i] : offsets[i + 1]], want)
    assert offsets[-1] > 100_000
    fallback = MinHasher(native=False).shingle_sets_arrow(pa.array(texts), 1 << 16)
    np.testing.assert_array_equal(fallback[0], values)
    np.testing.assert_array_equal(fallback[1], offsets)


class _Bytes(str):
    """A str whose UTF-8 encoding is given bytes: feeds invalid UTF-8 to the numpy path."""

    def __new__(cls, raw: bytes) -> _Bytes:
        obj = super().__new__(cls, "x")
        obj.raw = raw
        return obj

    def encode(self, *args: object) -> bytes:
        return self.raw


def test_utf8_words_follow_the_numpy_byte_rule_on_invalid_utf8() -> None:
    import pyarrow as pa

    # overlapping and truncated separator sequences, stray continuation bytes, ASCII inside
    # a sequence; each is followed by a word so no sequence is cut by the end of the text
    raws = [b"ab \xe2\x80\xc2\xa0 cd ef gh ij", b"w\xe3\x80Ax y z q r s", b"k\xc2\xff m n o p q",
            b"\x80\x80 \xbf word two three four", b"\xe2\x80 z1 z2 z3 z4 z5",
            b"a\xc2\xc2\xa0b c d e f", b"caf\xc3\xa9 \xf0\x9f\x98\x80 mixed valid ones"]
    data = b"".join(raws)
    offsets = np.cumsum([0] + [len(r) for r in raws]).astype(np.int64)
    mh = MinHasher(64, 3, native=True)
    from pipeline.dedup import _minhash

    sig, counts = _minhash.signatures_utf8(data, offsets, mh.a, mh.shingler.weights)
    ref, ref_counts = MinHasher(64, 3, native=False).signatures_batched(
        [_Bytes(r) for r in raws])
    np.testing.assert_array_equal(np.frombuffer(counts, np.int64), ref_counts)
    np.testing.assert_array_equal(np.frombuffer(sig, np.uint32).reshape(ref.shape), ref)
    # the same bytes through an Arrow column (unchecked UTF-8, as a Parquet reader may give)
    arr = pa.Array.from_buffers(pa.string(), len(raws), [None, pa.py_buffer(
        offsets.astype(np.int32).tobytes()), pa.py_buffer(data)])
    np.testing.assert_array_equal(mh.signatures_arrow(arr)[0], ref)


def test_arrow_input_is_checked() -> None:
    import pyarrow as pa

    from pipeline.dedup import _minhash

    mh = MinHasher(native=True)
    with pytest.raises(TypeError, match="Arrow string column"):
        mh.signatures_arrow(pa.array([1, 2]))
    for offsets in ([0, 5, 3], [0, 99], [-1, 2]):
        with pytest.raises(ValueError, match=r"offsets\[\d\] = -?\d+"):
            _minhash.signatures_utf8(b"hello", np.array(offsets, np.int64), mh.a,
                                     mh.shingler.weights)
    with pytest.raises(ValueError, match="a has 2 rows and b 1"):
        z = np.zeros(3, np.uint64)
        _minhash.intersections(z, np.array([0, 1, 3]), z, np.array([0, 3]))


@pytest.mark.parametrize("native", [True, False])
def test_ragged_jaccard_equals_jaccard(webmix_payloads: list[str], native: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.dedup.text import jaccard

    texts = webmix_payloads[:200] + ["", "", "one two three four five six"]
    sets = MinHasher(native=False).shingler.shingle_sets(texts)
    rows = minhash.ragged(sets, np.uint64)
    rng = np.random.default_rng(3)
    ia = rng.integers(0, len(texts), 600)
    ib = np.where(rng.random(600) < 0.2, ia, rng.integers(0, len(texts), 600))
    ia[:3], ib[:3] = [200, 200, 202], [201, 202, 202]  # both empty; one empty; the same
    if not native:
        monkeypatch.setattr(minhash, "_minhash", None)
    got = minhash.ragged_jaccard(minhash.take_rows(rows, ia), minhash.take_rows(rows, ib))
    want = [jaccard(sets[a], sets[b]) for a, b in zip(ia, ib, strict=True)]
    assert got.tolist() == want  # float for float, not approximately
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == 1.0
    assert ((got > 0) & (got < 1)).sum() > 50
