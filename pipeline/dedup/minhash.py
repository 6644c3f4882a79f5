"""MinHash signatures, LSH banding and the in-memory near-duplicate API.

Permutations: ``h_k(x) = a_k * x mod 2**32`` with ``a_k`` odd, applied to ``x``, the top
31 bits of :class:`~pipeline.dedup.text.ShingleHasher`'s well-mixed 64-bit shingle hash
with the low bit set. ``x`` is odd, so each ``h_k`` permutes the odd residues and has no
fixed point. This is datasketch's default ``affine32`` scheme (``a_k * h + b_k``) without
the additive term, which costs a third of the matrix work and changes nothing measurable:
on 300 Wikipedia pairs x 5 seeds both give the theoretical error of k-permutation MinHash
(RMSE 0.041 at 120 permutations; bias below 0.001), see docs/dedup-at-scale.md.

Signatures come from the C extension ``pipeline.dedup._minhash`` when it is built (word
splitting, shingle hashing and the permutation minimum in one pass per document, see
``_minhash.c``), else from the numpy path, which stays the reference: both give the same
signatures bit for bit (tests/pipeline/dedup/test_minhash_native.py). The kernel also takes an Arrow string
column as its UTF-8 buffer and offsets (:meth:`MinHasher.signatures_arrow`,
:meth:`MinHasher.shingle_sets_arrow`), so the dedup phases hash stage text without a
Python ``str`` per document, and counts the intersections of sorted shingle sets for
exact Jaccard over many pairs at once (:func:`ragged_jaccard`). The numpy path
computes a whole batch at once: per chunk of shingles a ``(num_perm, n_shingles)`` uint32
matrix is one broadcast multiply, and ``np.minimum.reduceat`` over each document's columns
gives the minima.

LSH: the signature is cut into ``bands`` bands of ``rows`` values; two documents are
candidates when any band is identical. The probability that a pair with Jaccard ``s``
becomes a candidate is ``1 - (1 - s**rows)**bands`` (:func:`s_curve`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.dedup.components import connected_components
from pipeline.dedup.text import U64, ShingleHasher, mix64, utf8_buffers

try:
    from pipeline.dedup import _minhash
except ImportError:  # built by setup.py when a C compiler is there
    _minhash = None

EMPTY = np.uint32(0xFFFFFFFF)

#: Defaults for a Jaccard threshold of 0.8 (see :func:`s_curve` and docs/dedup-at-scale.md):
#: P(candidate) is 0.998 at J=0.8, 0.918 at 0.7, 0.27 at 0.5 and 0.015 at 0.3.
DEFAULT_NUM_PERM = 120
DEFAULT_BANDS = 20
DEFAULT_ROWS = 6
DEFAULT_NGRAM = 5
DEFAULT_THRESHOLD = 0.8

Verify = Literal["exact", "signature", "none"]


def s_curve(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Return the probability that a pair with Jaccard ``similarity`` shares a band."""
    s = np.asarray(similarity, dtype=np.float64)
    p = 1.0 - (1.0 - s**rows) ** bands
    return float(p) if p.ndim == 0 else p


def lsh_params(
    threshold: float, num_perm: int, min_candidate_prob: float = 0.997
) -> tuple[int, int]:
    """Choose ``(bands, rows)`` for a Jaccard ``threshold`` and ``num_perm`` permutations.

    Among the pairs with ``bands * rows <= num_perm`` whose S-curve makes a pair at the
    threshold a candidate with probability at least ``min_candidate_prob`` (recall), take
    the one with the least candidate probability mass below the threshold (the least
    verification work); ties go to the pair using more permutations. For 0.8 and 120
    permutations this gives the defaults, 20 bands of 6 rows. Raises ValueError when no
    pair reaches ``min_candidate_prob``.
    """
    grid = np.linspace(0.0, threshold, 801)
    best: tuple[float, int, int, int] | None = None
    for rows in range(1, num_perm + 1):
        bands = np.arange(1, num_perm // rows + 1)
        at_threshold = 1.0 - (1.0 - threshold**rows) ** bands
        below = 1.0 - (1.0 - grid[None, :] ** rows) ** bands[:, None]
        mass = np.trapezoid(below, grid, axis=1)
        for b, p, m in zip(bands, at_threshold, mass, strict=True):
            if p >= min_candidate_prob:
                key = (float(m), -int(b) * rows, int(b), rows)
                if best is None or key < best:
                    best = key
    if best is None:
        raise ValueError(
            f"no bands x rows within {num_perm} permutations gives P(candidate) >= "
            f"{min_candidate_prob} at Jaccard {threshold}; raise num_perm"
        )
    return best[2], best[3]


def s_curve_midpoint(bands: int, rows: int) -> float:
    """Return the Jaccard at which the candidate probability is 0.5."""
    return float((1.0 - 0.5 ** (1.0 / bands)) ** (1.0 / rows))


def native_available() -> bool:
    """Whether the compiled signature kernel (``pipeline.dedup._minhash``) was built."""
    return _minhash is not None


class MinHasher:
    """Computes MinHash signatures of word n-gram shingle sets, many documents at a time.

    ``native``: None uses the C kernel when it is built and numpy otherwise; True requires
    the C kernel (RuntimeError if it is not built); False always uses numpy. Both give the
    same signatures.
    """

    def __init__(
        self,
        num_perm: int = DEFAULT_NUM_PERM,
        ngram: int = DEFAULT_NGRAM,
        seed: int = 1,
        chunk: int = 16384,
        native: bool | None = None,
    ) -> None:
        if num_perm < 1:
            raise ValueError("num_perm must be >= 1")
        if native and _minhash is None:
            raise RuntimeError("the native MinHash kernel (pipeline.dedup._minhash) is not "
                               "built: reinstall with `pip install -e .` and read its compiler "
                               "errors, or pass native=None to use numpy")
        self.native = _minhash is not None if native is None else native
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self.chunk = chunk
        self.shingler = ShingleHasher(ngram)
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2)) + np.uint32(1)
        self._buf: np.ndarray | None = None  # reused work matrix (num_perm x chunk)

    def signatures_from_hashes(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Return the ``(n_docs, num_perm)`` uint32 signatures of concatenated shingle hashes.

        ``counts[i]`` shingles belong to document ``i``; a document with none gets a row of
        ``0xFFFFFFFF`` (callers must not put such rows into LSH).
        """
        nd = len(counts)
        x = (hashes >> U64(32)).astype(np.uint32) | np.uint32(1)
        out = np.full((self.num_perm, nd), EMPTY, dtype=np.uint32)
        offsets = np.zeros(nd + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        nz = np.flatnonzero(counts > 0)
        if len(nz) == 0:
            return np.ascontiguousarray(out.T)
        starts = offsets[nz]
        ends = offsets[nz + 1]
        chunk = self.chunk
        if self._buf is None or self._buf.shape[1] < min(chunk, len(x)):
            self._buf = np.empty((self.num_perm, min(chunk, max(len(x), 1024))), dtype=np.uint32)
        buf = self._buf
        a = self.a[:, None]
        i = 0
        while i < len(nz):
            # a group of whole documents whose shingles fit one chunk (at least one document)
            r0 = starts[i]
            j = max(int(np.searchsorted(ends, r0 + chunk, side="right")), i + 1)
            r1 = ends[j - 1]
            if r1 - r0 <= chunk:
                m = buf[:, : r1 - r0]
                np.multiply(a, x[None, r0:r1], out=m)
                out[:, nz[i:j]] = np.minimum.reduceat(m, starts[i:j] - r0, axis=1)
            else:  # one document longer than a chunk
                acc = out[:, nz[i]]
                for c0 in range(r0, r1, chunk):
                    c1 = min(r1, c0 + chunk)
                    m = buf[:, : c1 - c0]
                    np.multiply(a, x[None, c0:c1], out=m)
                    np.minimum(acc, m.min(axis=1), out=acc)
                out[:, nz[i]] = acc
            i = j
        return np.ascontiguousarray(out.T)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """Return the ``(len(texts), num_perm)`` uint32 signatures of ``texts``."""
        if self.native:
            return self._native(texts)[0]
        h, counts = self.shingler.hashes(texts)
        return self.signatures_from_hashes(h, counts)

    def _native(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures, shingle count per text) from the C kernel, in one call."""
        if not isinstance(texts, list | tuple):
            texts = list(texts)
        sig, counts = _minhash.signatures(texts, self.a, self.shingler.weights)
        return (np.frombuffer(sig, dtype=np.uint32).reshape(len(texts), self.num_perm),
                np.frombuffer(counts, dtype=np.int64))

    def signatures_arrow(self, texts: pa.Array | pa.ChunkedArray, batch_bytes: int = 1 << 20
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Return (signatures, shingle count per text) of an Arrow string column.

        The C kernel reads the column's UTF-8 buffer directly (no Python ``str`` per text);
        the numpy path decodes the texts and hashes batches of ~``batch_bytes``. A null
        counts as an empty text.
        """
        if not self.native:
            return self.signatures_batched(_arrow_texts(texts), batch_bytes)
        data, offsets = utf8_buffers(texts)
        sig, counts = _minhash.signatures_utf8(data, offsets, self.a, self.shingler.weights)
        return (np.frombuffer(sig, dtype=np.uint32).reshape(len(offsets) - 1, self.num_perm),
                np.frombuffer(counts, dtype=np.int64))

    def shingle_sets_arrow(self, texts: pa.Array | pa.ChunkedArray, batch_bytes: int = 1 << 20
                           ) -> Ragged:
        """Return each text's sorted distinct shingle hashes (exact-Jaccard payloads) as
        ragged rows ``(values, offsets)``: text ``i``'s are ``values[offsets[i]:offsets[i+1]]``.
        The same hashes as :meth:`ShingleHasher.shingle_sets`, from the C kernel when built.
        """
        if not self.native:
            sets = [s for batch in iter_batches(_arrow_texts(texts), batch_bytes)
                    for s in self.shingler.shingle_sets(batch)]
            return ragged(sets, U64)
        data, offsets = utf8_buffers(texts)
        values, counts = _minhash.shingle_sets_utf8(data, offsets, self.shingler.weights)
        return np.frombuffer(values, dtype=U64), counts_to_offsets(
            np.frombuffer(counts, dtype=np.int64))

    def signatures_batched(
        self, texts: Sequence[str], batch_bytes: int = 1 << 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (signatures, shingle count per text).

        The numpy path hashes batches of ~``batch_bytes`` (its work arrays grow with the
        batch); the C kernel takes all ``texts`` in one call, its memory bounded by the
        longest text.
        """
        if self.native:
            return self._native(texts)
        sigs: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        for batch in iter_batches(texts, batch_bytes):
            h, c = self.shingler.hashes(batch)
            sigs.append(self.signatures_from_hashes(h, c))
            counts.append(c)
        if not sigs:
            return np.zeros((0, self.num_perm), dtype=np.uint32), np.zeros(0, dtype=np.int64)
        return np.concatenate(sigs), np.concatenate(counts)


#: Ragged rows: ``(values, offsets)``, row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
Ragged = tuple[np.ndarray, np.ndarray]


def counts_to_offsets(counts: np.ndarray) -> np.ndarray:
    """Return the ``len(counts) + 1`` int64 offsets of rows of ``counts`` values each."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def ragged(rows: Sequence[np.ndarray], dtype: type) -> Ragged:
    """Return a list of 1-D arrays as ragged rows of ``dtype``."""
    offsets = counts_to_offsets(np.fromiter((len(r) for r in rows), np.int64, len(rows)))
    values = np.concatenate(rows).astype(dtype, copy=False) if rows else np.zeros(0, dtype)
    return values, offsets


def concat_ragged(parts: Sequence[Ragged], dtype: type) -> Ragged:
    """Return the rows of every part in order as one ragged array of ``dtype``."""
    if not parts:
        return np.zeros(0, dtype), np.zeros(1, dtype=np.int64)
    values = np.concatenate([v for v, _ in parts]).astype(dtype, copy=False)
    shift = np.cumsum([0] + [o[-1] for _, o in parts[:-1]])
    offsets = np.concatenate([[0]] + [o[1:] + d for (_, o), d in zip(parts, shift, strict=True)])
    return values, offsets.astype(np.int64)


def take_rows(rows: Ragged, idx: np.ndarray) -> Ragged:
    """Return rows ``idx`` (any order, repeats allowed) of ragged ``rows``, whole-array."""
    values, offsets = rows
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    out = counts_to_offsets(lengths)
    # position j of output row k reads values[starts[k] + j]
    src = np.repeat(starts - out[:-1], lengths) + np.arange(out[-1], dtype=np.int64)
    return values[src], out


def ragged_jaccard(a: Ragged, b: Ragged) -> np.ndarray:
    """Return the Jaccard similarity of row ``i`` of ``a`` and row ``i`` of ``b`` for every
    ``i`` (sorted distinct uint64 rows; 1.0 when both are empty), as :func:`jaccard` gives
    it, float for float. The intersections are counted by the C kernel when it is built."""
    (av, ao), (bv, bo) = a, b
    n = len(ao) - 1
    if _minhash is not None:
        inter = np.frombuffer(_minhash.intersections(
            np.ascontiguousarray(av, dtype=U64), np.ascontiguousarray(ao, dtype=np.int64),
            np.ascontiguousarray(bv, dtype=U64), np.ascontiguousarray(bo, dtype=np.int64)),
            dtype=np.int64)
    else:
        inter = np.fromiter((len(np.intersect1d(av[ao[i]:ao[i + 1]], bv[bo[i]:bo[i + 1]],
                                                assume_unique=True)) for i in range(n)),
                            np.int64, n)
    union = np.diff(ao) + np.diff(bo) - inter
    out = np.ones(n, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _arrow_texts(texts: pa.Array | pa.ChunkedArray) -> list[str]:
    """An Arrow string column as a list of str (nulls as empty texts)."""
    return ["" if t is None else t for t in texts.to_pylist()]


def batch_bounds(texts: Sequence[str], batch_bytes: int = 1 << 20) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of consecutive slices of ``texts`` of about ``batch_bytes``
    characters each."""
    start, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t) + 1
        if size >= batch_bytes:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def iter_batches(texts: Sequence[str], batch_bytes: int = 1 << 20):
    """Yield consecutive slices of ``texts`` of about ``batch_bytes`` characters each."""
    for start, end in batch_bounds(texts, batch_bytes):
        yield texts[start:end]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Return the fraction of equal signature values (rows of 2-D arrays, or two vectors)."""
    eq = np.asarray(sig_a) == np.asarray(sig_b)
    return eq.mean(axis=-1)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Return ``(n_docs, bands)`` uint64 bucket keys; equal key in a column = equal band."""
    n, k = signatures.shape
    if bands * rows > k:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {k}")
    rng = np.random.default_rng(0xB4D5)
    coef = rng.integers(0, 1 << 63, (bands, rows), dtype=np.int64).view(U64) | U64(1)
    salt = rng.integers(0, 1 << 63, bands, dtype=np.int64).view(U64)
    keys = np.empty((n, bands), dtype=U64)
    sig64 = signatures.astype(U64)
    for j in range(bands):
        acc = np.full(n, salt[j], dtype=U64)
        for r in range(rows):
            acc += sig64[:, j * rows + r] * coef[j, r]
        keys[:, j] = mix64(acc)
    return keys


def candidate_pairs(keys: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Return the distinct candidate pairs ``(i, j)``, ``i < j``, as an ``(m, 2)`` int64 array.

    For each band, the documents sharing a bucket are linked to the bucket's smallest index
    (a star), which connects the bucket with ``size - 1`` edges.
    """
    n, bands = keys.shape
    idx = np.arange(n, dtype=np.int64)
    if valid is not None:
        idx = idx[valid]
    edges: list[np.ndarray] = []
    for j in range(bands):
        edges.append(_bucket_edges(np.full(len(idx), j, dtype=np.int64), keys[idx, j], idx))
    return unique_pairs(np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64))


def _bucket_edges(band: np.ndarray, key: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Return star edges (smallest ref, other ref) of every (band, key) group of size > 1."""
    if len(ref) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((ref, key, band))
    band, key, ref = band[order], key[order], ref[order]
    new = np.ones(len(ref), dtype=bool)
    new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    group_start = np.flatnonzero(new)
    head = np.repeat(ref[group_start], np.diff(np.append(group_start, len(ref))))
    member = ~new
    return np.stack([head[member], ref[member]], axis=1)


def bucket_edges(band: np.ndarray, key: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Public form of the bucket grouping: rows (band, key, ref) to distinct star edges."""
    return unique_pairs(_bucket_edges(band.astype(np.int64), key.astype(U64), ref.astype(np.int64)))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Return distinct rows of an ``(m, 2)`` int64 pair array, sorted."""
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    p = pairs[order]
    keep = np.ones(len(p), dtype=bool)
    keep[1:] = (p[1:, 0] != p[:-1, 0]) | (p[1:, 1] != p[:-1, 1])
    return p[keep]


def minhash_keep_mask(
    docs: list[str],
    num_perm: int = DEFAULT_NUM_PERM,
    bands: int = DEFAULT_BANDS,
    ngram: int = DEFAULT_NGRAM,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    verify: Verify = "exact",
    seed: int = 1,
) -> list[bool]:
    """Return one flag per document: True to keep it, False for a near duplicate.

    Documents are candidates when any of ``bands`` bands of ``num_perm // bands`` signature
    rows agree; a candidate pair is accepted when its exact shingle Jaccard (``verify=
    "exact"``) or its signature estimate (``"signature"``) is at least ``threshold``, or
    always (``"none"``). Accepted pairs are joined into clusters (connected components) and
    exactly one document of each cluster is kept: the one with the smallest index.
    Documents with no words are never near duplicates of anything.
    """
    keep, _, _ = minhash_clusters(
        docs, num_perm, bands, ngram, threshold, verify=verify, seed=seed
    )
    return keep


def minhash_clusters(
    docs: list[str],
    num_perm: int = DEFAULT_NUM_PERM,
    bands: int = DEFAULT_BANDS,
    ngram: int = DEFAULT_NGRAM,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    verify: Verify = "exact",
    seed: int = 1,
) -> tuple[list[bool], np.ndarray, np.ndarray]:
    """Like :func:`minhash_keep_mask`, also returning each document's cluster and its size.

    The cluster of a document is the index of its cluster's kept document.
    """
    if bands < 1 or num_perm // bands < 1:
        raise ValueError("need 1 <= bands <= num_perm")
    rows = num_perm // bands
    hasher = MinHasher(num_perm, ngram, seed)
    sigs, counts = hasher.signatures_batched(docs)
    n = len(docs)
    keys = band_keys(sigs, bands, rows)
    pairs = candidate_pairs(keys, counts > 0)
    pairs = verify_pairs(pairs, docs, sigs, hasher, threshold, verify)
    cluster, size = connected_components(pairs[:, 0], pairs[:, 1], n)
    keep = (cluster == np.arange(n)).tolist()
    return keep, cluster, size


def verify_pairs(
    pairs: np.ndarray,
    docs: Sequence[str],
    sigs: np.ndarray,
    hasher: MinHasher,
    threshold: float,
    verify: Verify,
) -> np.ndarray:
    """Return the candidate pairs whose similarity passes ``threshold`` under ``verify``."""
    if len(pairs) == 0 or verify == "none":
        return pairs
    if verify == "signature":
        est = estimated_jaccard(sigs[pairs[:, 0]], sigs[pairs[:, 1]])
        return pairs[est >= threshold]
    if verify != "exact":
        raise ValueError(f"unknown verify mode {verify!r}")
    needed = np.unique(pairs)
    texts = [docs[i] for i in needed.tolist()]
    sets: list[np.ndarray] = []
    for batch in iter_batches(texts):
        sets.extend(hasher.shingler.shingle_sets(batch))
    rows = ragged(sets, U64)
    sims = ragged_jaccard(take_rows(rows, np.searchsorted(needed, pairs[:, 0])),
                          take_rows(rows, np.searchsorted(needed, pairs[:, 1])))
    return pairs[sims >= threshold]
