"""Text normalisation and hashing shared by the three deduplication steps.

Three views of a document's text are hashed:

* the whole document for exact deduplication (:func:`normalize_document`,
  :func:`document_key`): Unicode case folding and whitespace collapsed, nothing else, so
  "exact" means the same words, punctuation and digits; :func:`document_keys` gives the
  same keys for a whole Arrow text column, natively (``_exact.c``) when it is built;
* each line for line deduplication (:func:`normalize_line`, :func:`line_hash`): as CCNet
  does, case folded, digits replaced by ``0``, punctuation dropped and whitespace
  collapsed, so "Posted on 3 May" and "Posted on 17 June" stay different but
  "Share this!" and "share this" are the same line;
* word n-gram shingles for MinHash (:class:`ShingleHasher`), computed over the UTF-8 bytes
  of many documents at once with numpy.

The C kernels that read an Arrow text column in place (exact keys, line hashing and cutting,
MinHash) all take its UTF-8 data and offsets from :func:`utf8_buffers`.

Word segmentation for shingles works on bytes: a word is a maximal run of ASCII letters,
ASCII digits and non-ASCII bytes; ASCII letters are lower-cased (other scripts keep their
case, which costs nothing in practice: near-duplicates share their capitalisation). ASCII punctuation, whitespace and
control bytes separate words, as do the Latin-1 punctuation block (U+00A0 to U+00BF: no-break
space, guillemets, inverted marks), the General Punctuation block U+2000 to U+203F (typographic
spaces, dashes, curly quotes, bullets) and the CJK marks U+3000 to U+3002. Scripts written
without spaces (Chinese, Japanese, Thai) therefore shingle by runs between punctuation, which
is coarser than words; see docs/dedup-at-scale.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from pipeline.dedup import _exact
except ImportError:  # built by setup.py when a C compiler is there
    _exact = None

U64 = np.uint64
log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
_LINE_PUNCT = re.compile(r"[^\w\s]+")
_DIGIT = re.compile(r"\d")

# splitmix64 finalizer constants
_MIX1 = U64(0xBF58476D1CE4E5B9)
_MIX2 = U64(0x94D049BB133111EB)


def normalize_document(text: str) -> str:
    """Return the text exact deduplication compares: case folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def document_key(text: str) -> tuple[int, int]:
    """Return the 128-bit key of a document's normalised text as two unsigned 64-bit ints."""
    d = hashlib.blake2b(normalize_document(text).encode("utf-8", "surrogatepass"), digest_size=16)
    raw = d.digest()
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def native_keys_available() -> bool:
    """Whether :func:`document_keys` runs natively: ``pipeline.dedup._exact`` is built and its
    tables come from this Python's Unicode version (else the keys could differ)."""
    return _exact is not None and _exact.UNIDATA_VERSION == unicodedata.unidata_version


if _exact is not None and not native_keys_available():
    log.warning("pipeline.dedup._exact was generated for Unicode %s but Python has %s: exact "
                "keys use the slower Python path; run `python -m pipeline.dedup.exact_tables` "
                "and rebuild (`pip install -e .`)", _exact.UNIDATA_VERSION,
                unicodedata.unidata_version)


def _string_chunks(texts: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    """Return the chunks of an Arrow string column; raise ``ValueError`` on another type or
    on nulls (a document's text is never null)."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            raise ValueError(f"document keys need a string column, got {chunk.type}")
        if chunk.null_count:
            raise ValueError(f"the text column has {chunk.null_count} null values; every "
                             "document needs a text (empty is fine)")
    return chunks


_INT32_MAX = np.iinfo(np.int32).max


def utf8_buffers(texts: pa.Array | pa.ChunkedArray, offset_dtype: type = np.int64
                 ) -> tuple[pa.Buffer | bytes, np.ndarray]:
    """Return an Arrow ``string``/``large_string`` column's UTF-8 data and its ``len + 1``
    offsets into it, as ``offset_dtype`` (``np.int64``, or ``np.int32`` for a kernel that
    reads int32 offsets), for the C kernels that read a column in place.

    The data is a zero-copy slice of the column's buffer holding exactly its rows, so the
    offsets start at 0 whatever the array's offset or type (a slice of a large_string column
    fits int32 offsets if its own rows hold under 2 GiB). A chunked column is combined first
    (a copy unless it has one chunk); nulls read as empty texts (callers that refuse nulls
    check before). Raises ``TypeError`` for another type, ``ValueError`` when the rows
    hold more bytes than ``offset_dtype`` can index.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if pa.types.is_string(texts.type):
        width = np.int32
    elif pa.types.is_large_string(texts.type):
        width = np.int64
    else:
        raise TypeError(f"expected an Arrow string column, got {texts.type}")
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    n = len(texts)
    _, off, data = texts.buffers()
    if off is None:  # a zero-length array may have no buffers
        return b"", np.zeros(1, dtype=offset_dtype)
    offsets = np.frombuffer(off, dtype=width, count=n + 1,
                            offset=texts.offset * np.dtype(width).itemsize).astype(np.int64)
    start = int(offsets[0])
    if start:
        offsets -= start
    size = int(offsets[-1])
    if offset_dtype == np.int32 and size > _INT32_MAX:
        raise ValueError(f"the column's {n} texts hold {size} bytes, more than int32 offsets "
                         "can index")
    body = data.slice(start, size) if data is not None and size else b""
    return body, offsets.astype(offset_dtype, copy=False)


def document_keys(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (hi, lo) uint64 halves of :func:`document_key` for every string of an Arrow
    ``string``/``large_string`` column, in order.

    The native path (``pipeline/dedup/_exact.c``) normalises and hashes straight from the
    column's UTF-8 buffer, with no Python ``str`` per document; a value that is not valid
    UTF-8 goes through Python (which decodes it as pyarrow does, so it raises as reading the
    document would). Without the extension every value goes through :func:`document_key`.
    """
    out = []
    for chunk in _string_chunks(texts):
        n = len(chunk)
        if n == 0:
            continue
        if native_keys_available():
            digests = np.empty((n, 2), dtype="<u8")
            data, offsets = utf8_buffers(chunk)
            bad = _exact.keys(offsets, data, True, 0, n, digests)  # wide: int64 offsets
            for i in np.frombuffer(bad, dtype=np.int64):
                digests[i] = document_key(chunk[int(i)].as_py())
        else:
            digests = np.array([document_key(t) for t in chunk.to_pylist()],
                               dtype=U64).reshape(n, 2)
        out.append(digests)
    keys = np.concatenate(out) if out else np.zeros((0, 2), dtype=U64)
    return keys[:, 0].astype(U64), keys[:, 1].astype(U64)


def normalize_documents(texts: pa.Array | pa.ChunkedArray) -> list[str]:
    """Return :func:`normalize_document` of every string of an Arrow string column, computed
    by the native normaliser that :func:`document_keys` hashes (so tests can show where the
    two paths would differ); requires the extension."""
    if not native_keys_available():
        raise RuntimeError("pipeline.dedup._exact is not built for this Python's Unicode")
    result: list[str] = []
    for chunk in _string_chunks(texts):
        if len(chunk) == 0:
            continue
        data, offsets = utf8_buffers(chunk)
        text, bounds, bad = _exact.normalize(offsets, data, True, 0, len(chunk))
        b = np.frombuffer(bounds, dtype=np.int64)
        rows = [text[b[i]:b[i + 1]].decode("utf-8") for i in range(len(chunk))]
        for i in np.frombuffer(bad, dtype=np.int64):
            rows[i] = normalize_document(chunk[int(i)].as_py())
        result.extend(rows)
    return result


def normalize_line(line: str) -> str:
    """Return a line as line deduplication compares it (CCNet-style); may be empty."""
    s = _DIGIT.sub("0", line.casefold())
    s = _LINE_PUNCT.sub(" ", s)
    return _WS.sub(" ", s).strip()


def line_hash(normalized: str) -> int:
    """Return the 64-bit hash (signed, so it fits an int64 column) of a normalised line."""
    raw = hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


def mix64(x: np.ndarray) -> np.ndarray:
    """Return splitmix64's finalizer applied to a uint64 array (a bijection that avalanches)."""
    x = x ^ (x >> U64(30))
    x *= _MIX1
    x ^= x >> U64(27)
    x *= _MIX2
    return x ^ (x >> U64(31))


_U32 = np.uint32
_POLY_BASE = 0x01000193  # odd, so invertible modulo 2**32
_POLY_BASE_INV = pow(_POLY_BASE, -1, 1 << 32)
_POW = np.ones(1, dtype=_U32)
_IPOW = np.ones(1, dtype=_U32)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``B**t`` and ``B**-t`` (mod 2**32) for ``t < n``; cached per process.

    Grown by doubling: ``pow[m:2m] = pow[:m] * B**m``, a handful of vector multiplies.
    """
    global _POW, _IPOW
    if len(_POW) < n:
        pw, ipw = _POW, _IPOW
        while len(pw) < n:
            m = len(pw)
            pw = np.concatenate([pw, pw * _U32(pow(_POLY_BASE, m, 1 << 32))])
            ipw = np.concatenate([ipw, ipw * _U32(pow(_POLY_BASE_INV, m, 1 << 32))])
        _POW, _IPOW = pw, ipw
    return _POW[:n], _IPOW[:n]


class ShingleHasher:
    """Hashes word n-gram shingles of many documents at once, vectorised with numpy.

    For a batch of texts the UTF-8 bytes are joined into one array; word boundaries, a
    polynomial prefix hash over the bytes (so each word's hash is two lookups and a
    multiply) and the n-gram combination are whole-array numpy operations. There is no
    Python loop per word or per shingle; the only per-document Python work is
    ``str.encode``.

    A word's hash is the polynomial ``sum_t byte_t * B**t mod 2**32`` of its bytes (ASCII
    lower-cased). Shingle ``i`` of a document is words ``i .. i+n-1``; its 64-bit hash is
    ``mix64(sum_j word_hash[i+j] * K_j)`` with fixed odd constants ``K_j``, so it
    depends on the words and their order but not on the separators between them. A
    document with at least one but fewer than ``n`` words has one shingle (all its words);
    a document without words has none.
    """

    def __init__(self, ngram: int = 5) -> None:
        if ngram < 1:
            raise ValueError("ngram must be >= 1")
        self.ngram = ngram
        rng = np.random.default_rng(0x5EED)
        self._k = rng.integers(0, 1 << 63, ngram, dtype=np.int64).view(U64) | U64(1)
        self._buffers: dict[str, np.ndarray] = {}

    @property
    def weights(self) -> np.ndarray:
        """The ``ngram`` odd uint64 constants ``K_j`` that combine word hashes into a shingle."""
        return self._k

    def _scratch(self, name: str, n: int, dtype: type) -> np.ndarray:
        """Return a reusable length-``n`` work array (avoids page faults on fresh memory)."""
        arr = self._buffers.get(name)
        if arr is None or len(arr) < n:
            arr = np.empty(max(n, 1 << 16), dtype=dtype)
            self._buffers[name] = arr
        return arr[:n]

    def word_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (uint32 hash per word of all texts in order, word count per text)."""
        words, counts, _ = self._words(texts, False)
        return words, counts

    def word_hashes_numeric(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
        """Like :meth:`word_hashes`, plus per word whether it is only ASCII digits."""
        words, counts, numeric = self._words(texts, True)
        return words, counts, numeric

    def _words(self, texts: Sequence[str], numeric: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        data = b"\n".join(encoded)
        nd = len(encoded)
        if not data:
            return np.zeros(0, dtype=_U32), np.zeros(nd, dtype=np.int64), np.zeros(0, dtype=bool)
        raw = np.frombuffer(data, dtype=np.uint8)
        n = len(raw)
        # ASCII lower-casing: set bit 0x20 on A-Z
        buf = self._scratch("buf", n, np.uint8)
        upper = self._scratch("upper", n, np.uint8)
        np.subtract(raw, np.uint8(0x41), out=upper)
        np.less(upper, np.uint8(26), out=upper.view(bool))
        np.multiply(upper, np.uint8(32), out=upper)
        np.bitwise_or(raw, upper, out=buf)
        # word bytes: a-z, 0-9 and every non-ASCII byte (comparisons beat a table lookup)
        isword = self._scratch("isword", n + 2, bool)
        isword[0] = isword[-1] = False
        inner = isword[1:-1]
        tmp = self._scratch("tmp", n, np.uint8)
        tmpb = self._scratch("tmpb", n, bool)
        np.greater_equal(buf, np.uint8(0x80), out=inner)
        np.subtract(buf, np.uint8(0x61), out=tmp)
        np.less(tmp, np.uint8(26), out=tmpb)
        inner |= tmpb
        np.subtract(buf, np.uint8(0x30), out=tmp)
        np.less(tmp, np.uint8(10), out=tmpb)
        inner |= tmpb
        digit = tmpb.copy() if numeric else None
        np.equal(buf, np.uint8(0xC2), out=tmpb)
        tmpb |= buf == np.uint8(0xE2)
        tmpb |= buf == np.uint8(0xE3)
        leads = np.flatnonzero(tmpb)
        if len(leads):
            _mark_unicode_separators(buf, inner, leads)
        # word boundaries alternate: start, end, start, end, ...
        edges = self._scratch("edges", n + 1, bool)
        np.not_equal(isword[1:], isword[:-1], out=edges)
        bounds = np.flatnonzero(edges)
        starts = bounds[0::2]
        ends = bounds[1::2]
        pw, ipw = _powers(n)
        prod = self._scratch("prod", n, _U32)
        np.multiply(buf, pw, out=prod)
        prefix = self._scratch("prefix", n + 1, _U32)
        prefix[0] = 0
        np.cumsum(prod, out=prefix[1:])
        words = prefix[ends] - prefix[starts]
        words *= ipw[starts]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=nd)
        doc_start = np.zeros(nd + 1, dtype=np.int64)
        np.cumsum(lengths + 1, out=doc_start[1:])
        first_word = np.searchsorted(starts, doc_start, side="left")
        counts = np.diff(first_word)
        if digit is None:
            return words, counts, None
        nondigit = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(~digit, out=nondigit[1:])
        return words, counts, nondigit[ends] == nondigit[starts]

    def hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (uint64 shingle hashes of all texts, concatenated in order; count per text)."""
        words, wcounts = self.word_hashes(texts)
        return self.shingles_from_words(words, wcounts)

    def shingles_from_words(
        self, words: np.ndarray, wcounts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Combine per-word hashes into n-gram shingle hashes (see the class docstring)."""
        n = self.ngram
        words = words.astype(U64)
        nw = len(words)
        nd = len(wcounts)
        counts = np.where(wcounts >= n, wcounts - n + 1, np.minimum(wcounts, 1)).astype(np.int64)
        if nw == 0:
            return np.zeros(0, dtype=U64), counts
        first = np.zeros(nd, dtype=np.int64)
        np.cumsum(wcounts[:-1], out=first[1:])
        short = np.flatnonzero((wcounts > 0) & (wcounts < n))
        if len(short) == 0 and n > 1:
            # every window of n words that stays inside one document
            nwin = nw - n + 1
            if nwin <= 0:
                return np.zeros(0, dtype=U64), counts
            acc = words[:nwin] * self._k[0]
            for j in range(1, n):
                acc += words[j : j + nwin] * self._k[j]
            doc = np.repeat(np.arange(nd), wcounts)
            inside = doc[:nwin] == doc[n - 1 :]
            return mix64(acc[inside]), counts
        # general case (documents shorter than n words): pad with a zero word
        padded = np.append(words, U64(0))
        doc = np.repeat(np.arange(nd), wcounts)
        idx = np.arange(nw)
        last_of = (first + wcounts - 1)[doc]
        valid = (idx + (n - 1) <= last_of) | ((idx == first[doc]) & (wcounts[doc] < n))
        starts = idx[valid]
        stop = last_of[valid]
        acc = padded[starts] * self._k[0]
        for j in range(1, n):
            pos = starts + j
            acc += padded[np.where(pos <= stop, pos, nw)] * self._k[j]
        return mix64(acc), counts

    def shingle_sets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Return each text's sorted distinct shingle hashes (for exact Jaccard)."""
        h, counts = self.hashes(texts)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [np.unique(h[bounds[i] : bounds[i + 1]]) for i in range(len(texts))]


def _mark_unicode_separators(buf: np.ndarray, isword: np.ndarray, leads: np.ndarray) -> None:
    """Clear ``isword`` on UTF-8 sequences of Unicode punctuation and spaces (in place).

    ``leads`` are the positions of bytes C2, E2 and E3, the only lead bytes of the
    separator ranges U+00A0..U+00BF (C2 A0..BF), U+2000..U+203F (E2 80 80..BF) and
    U+3000..U+3002 (E3 80 80..82).
    """
    n = len(buf)
    leads = leads[leads + 1 < n]
    second = buf[leads + 1]
    lead = buf[leads]
    two = leads[(lead == 0xC2) & (second >= 0xA0)]
    isword[two] = False
    isword[two + 1] = False
    three = leads[(lead != 0xC2) & (second == 0x80) & (leads + 2 < n)]
    third = buf[np.minimum(three + 2, n - 1)]
    three = three[(buf[three] == 0xE2) | (third <= 0x82)]
    isword[three] = False
    isword[three + 1] = False
    isword[three + 2] = False


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Jaccard similarity of two sorted distinct hash arrays (1.0 if both empty)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
