"""Partitioned column files: the one file a shuffle unit writes, its rows grouped by partition.

A map unit (or a reducer routing decisions to shard groups, or a components round) writes
ONE file whose rows are sorted by partition, and each reader reads only its partitions'
rows from every writer's file. The shuffle then has one file per writing unit instead of
one per (unit, partition), and a reader's cost is its rows plus a small fixed cost per
file it opens.

Layout (little-endian): :data:`MAGIC` (8 bytes), the header's length (uint64), the header
(JSON: ``{"columns": [[name, numpy dtype, stored dtype], ...], "parts": n}``, padded with
spaces to a multiple of 8 bytes), one 8-byte base per column, the row offsets (``n + 1``
int64: partition ``i`` is rows ``offsets[i]`` to ``offsets[i + 1]``), then each column's
stored values for every row, contiguous, in partition order. Reading partitions
``[lo, hi)`` reads the header, two offsets and one contiguous slice per column. Columns are
fixed-width numpy arrays of numbers; an integer column whose values span less than
2**8, 2**16 or 2**32 is stored as ``value - base`` in 1, 2 or 4 bytes (its minimum is the
base: a map unit's shard indexes and refs, counts, band numbers), which keeps the files
near the size zstd Parquet gave them at no measurable CPU; nothing else is compressed.

Why not Parquet row groups or Arrow IPC batches: reading one partition of a 128-partition
file cost ~1,300 us with ``ParquetFile.read_row_group`` (the footer describes every row
group; a Parquet file per partition, the former layout, ~1,100 us) and ~230 us with an
Arrow IPC file (``open_file`` + ``get_batch``), against ~55 us here
(``benchmarks/dedup_shuffle.py formats``: 22 rows of three 64-bit columns per partition,
2-core VM, 2026-11-27); at 64x webmix a reduce phase reads 128 x 128 such slices.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from pipeline.dedup.phases.store import marker_listing
from pipeline.io.atomic import atomic_path

MAGIC = b"RFPART1\n"
#: the shuffle's on-disk layout, recorded in the configuration of every job that writes
#: these files: a work directory an older layout started is refused, not half-resumed
#: (1: a Parquet file per (unit, partition); 2: one partitioned file per unit)
SHUFFLE_FORMAT = 2
_PREFIX = struct.Struct("<8sQ")
_OFFSET = struct.Struct("<q")
#: bytes read at once from a file's start (header and, for <= ~400 partitions, the offsets)
_HEAD = 4096

Columns = dict[str, np.ndarray]


class PartFileError(ValueError):
    """A partitioned file is not one :func:`write_parts` wrote whole."""


def write_parts(path: str | os.PathLike, key: np.ndarray, n: int, columns: Columns) -> np.ndarray:
    """Write ``columns`` to ``path`` (atomically) grouped by ``key`` (values ``0..n-1``).

    Rows keep their order within a partition. Returns the rows of each partition (int64,
    length ``n``). Every column must be a 1-D numeric numpy array as long as ``key``.
    """
    key = np.asarray(key, dtype=np.int64)
    for name, col in columns.items():
        if col.ndim != 1 or len(col) != len(key) or col.dtype.kind not in "biuf":
            raise ValueError(f"{path}: column {name!r} must be a 1-D numeric array of "
                             f"{len(key)} rows, got {col.dtype} of shape {col.shape}")
    if len(key) and (key.min() < 0 or key.max() >= n):
        raise ValueError(f"{path}: partition keys must lie in 0..{n - 1}")
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=n).astype(np.int64)
    offsets = np.zeros(n + 1, dtype="<i8")
    np.cumsum(counts, out=offsets[1:])
    stored = {k: _narrow(v) for k, v in columns.items()}
    header = json.dumps({"columns": [[k, v.dtype.newbyteorder("<").str, stored[k][0].dtype.str]
                                     for k, v in columns.items()], "parts": n}).encode()
    header += b" " * (-len(header) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, len(header)))
        f.write(header)
        for k, v in columns.items():
            f.write(np.array([stored[k][1]], dtype="<u8" if v.dtype.kind == "u" else "<i8")
                    .tobytes())
        f.write(offsets.tobytes())
        for values, _ in stored.values():
            f.write(np.ascontiguousarray(values[order]).tobytes())
    return counts


def _narrow(col: np.ndarray) -> tuple[np.ndarray, int]:
    """Return ``(stored values, base)`` of a column: ``col - base`` in the fewest of 1, 2 or 4
    bytes that hold its span for an integer column, else ``col`` itself (little-endian)."""
    dt = col.dtype
    if dt.kind in "iu" and len(col):
        lo = int(col.min())
        span = int(col.max()) - lo
        for width in (1, 2, 4):
            if width < dt.itemsize and span < 1 << (8 * width):
                # values lie in [lo, lo + span]: the difference cannot overflow the dtype
                return (col - dt.type(lo)).astype(f"<u{width}"), lo
    return col.astype(dt.newbyteorder("<"), copy=False), 0


class _Column(NamedTuple):
    name: str
    dtype: np.dtype  #: the column's dtype once read (native byte order)
    stored: np.dtype  #: its dtype in the file
    narrowed: bool  #: stored as value - base
    base_format: str  #: struct format of its base


@functools.lru_cache(maxsize=64)
def _columns(header: bytes) -> tuple[tuple[_Column, ...], int, int]:
    """Parse a header (cached: a phase's files share theirs): its columns, partition count
    and stored bytes per row. Raises ValueError, TypeError or KeyError on a header
    :func:`write_parts` did not write."""
    meta = json.loads(header)
    cols = []
    for name, dt, st in meta["columns"]:
        dt, st = np.dtype(dt), np.dtype(st)
        if not isinstance(name, str) or dt.kind not in "biuf" or st.kind not in "biuf":
            raise ValueError(f"column {name!r}: {dt}/{st} is not a numeric column")
        narrowed = dt != st
        if narrowed and (dt.kind not in "iu" or st.kind != "u" or st.itemsize >= dt.itemsize):
            raise ValueError(f"column {name!r}: {dt} cannot be stored as {st}")
        cols.append(_Column(name, dt.newbyteorder("="), st, narrowed,
                            "<Q" if dt.kind == "u" else "<q"))
    parts = meta["parts"]
    if type(parts) is not int or parts < 0:
        raise ValueError(f"partition count {parts!r}")
    return tuple(cols), parts, sum(c.stored.itemsize for c in cols)


def _damaged(path: str | os.PathLike, what: str) -> PartFileError:
    """The error for a damaged file: what is wrong, and the marker to delete (the unit that
    wrote the file then runs again on a rerun)."""
    marker = marker_listing(path)
    fix = (f"delete its unit's marker {marker} and rerun" if marker is not None else
           "delete the marker (<phase>/_done/<unit>.json) of the unit that wrote it and rerun")
    return PartFileError(f"{path}: {what}; {fix}")


def _read_into(fd: int, buf: memoryview, at: int, path: str | os.PathLike) -> None:
    """Fill ``buf`` (bytes) from ``fd`` at ``at``: one read returns at most ~2 GiB on Linux,
    so this reads until full; end of file first means the file was cut."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], at + done)
        if n <= 0:
            raise _damaged(path, "truncated")
        done += n


def _pread(fd: int, n: int, at: int, path: str | os.PathLike) -> bytes:
    """``n`` bytes of ``fd`` at ``at``; the end of the file first means the file was cut."""
    buf = bytearray(n)
    _read_into(fd, memoryview(buf), at, path)
    return bytes(buf)


class _Header:
    """A partitioned file's columns, partition count and where its offsets and data start.

    The file's first :data:`_HEAD` bytes are read at once: for up to a few hundred
    partitions they hold the header and every offset, so a reader makes one small read
    before its column slices (``pread``, no seeks).

    A damaged file fails naming itself instead of yielding wrong rows: the header must
    parse, the file must be exactly as long as the header, offsets and ``total`` rows of its
    columns need (``total`` = the last offset), and the offsets must start at 0 and never
    decrease. The offsets are all checked when they came with the first read (a few us
    for 128); beyond (files of more than ~500 partitions), a read checks those it uses (in
    ``0..total``, not decreasing over the range) and :meth:`all_offsets` checks them all,
    so that a reader of one partition does not read every offset of every file.
    """

    def __init__(self, fd: int, path: str | os.PathLike) -> None:
        self.path = path
        self.fd = fd
        size = os.fstat(fd).st_size
        self.head = os.pread(fd, _HEAD, 0)
        if len(self.head) < _PREFIX.size or self.head[:8] != MAGIC:
            raise PartFileError(f"{path}: not a partitioned shuffle file (bad magic); delete "
                                "the job's work directory and rerun")
        header_len = _PREFIX.unpack_from(self.head)[1]
        if header_len % 8 or header_len > size - _PREFIX.size:
            raise _damaged(path, f"header length {header_len} does not fit its {size} bytes")
        bases_at = _PREFIX.size + header_len
        header = self.head[_PREFIX.size : bases_at]
        if len(header) != header_len:
            header = _pread(fd, header_len, _PREFIX.size, path)
        try:
            self.columns, self.parts, row = _columns(header)
        except (ValueError, TypeError, KeyError) as e:
            raise _damaged(path, f"unreadable header ({e})") from None
        self.offsets_at = bases_at + 8 * len(self.columns)
        self.data_at = self.offsets_at + 8 * (self.parts + 1)
        if self.data_at > size:
            raise _damaged(path, f"{self.parts} partitions do not fit its {size} bytes")
        raw = self._bytes(8 * len(self.columns), bases_at)
        self.bases = [struct.unpack_from(c.base_format, raw, 8 * i)[0]
                      for i, c in enumerate(self.columns)]
        self.total = self._offset(self.parts)
        want = self.data_at + self.total * row
        if self.total < 0 or want != size:
            raise _damaged(path, f"{'truncated' if size < want else 'too long'}: {self.total} "
                           f"rows of {row} bytes need {want} bytes, it has {size}")
        if self.data_at <= len(self.head):  # every offset came with the first read
            self._check(np.frombuffer(self.head, "<i8", self.parts + 1, self.offsets_at))
        elif self._offset(0) != 0:
            raise _damaged(path, f"its first offset is {self._offset(0)}, not 0")

    def _bytes(self, n: int, at: int) -> bytes:
        if at + n <= len(self.head):
            return self.head[at : at + n]
        return _pread(self.fd, n, at, self.path)

    def _offset(self, i: int) -> int:
        return _OFFSET.unpack(self._bytes(8, self.offsets_at + 8 * i))[0]

    def offset(self, i: int) -> int:
        """Row offset ``i`` (0..parts): where partition ``i`` starts, or the row count."""
        if not 0 <= i <= self.parts:
            raise ValueError(f"{self.path}: partition {i} outside 0..{self.parts}")
        at = self._offset(i)
        if not 0 <= at <= self.total:
            raise _damaged(self.path, f"offset {i} is {at}, outside 0..{self.total}")
        return at

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The rows ``(start, stop)`` of partitions ``lo..hi-1``."""
        start, stop = self.offset(lo), self.offset(hi)
        if start > stop:
            raise _damaged(self.path, f"offsets decrease (partition {lo} starts at row "
                           f"{start}, partition {hi} at {stop})")
        return start, stop

    def _check(self, offsets: np.ndarray) -> None:
        """Raise unless ``offsets`` (all of them) start at 0 and never decrease."""
        if offsets[0] != 0:
            raise _damaged(self.path, f"its first row offset is {offsets[0]}, not 0")
        down = offsets[1:] < offsets[:-1]
        if down.any():
            i = int(down.argmax())
            raise _damaged(self.path, f"its row offsets decrease (partition {i} starts at row "
                           f"{offsets[i]}, partition {i + 1} at {offsets[i + 1]})")

    def all_offsets(self) -> np.ndarray:
        """Every row offset (``parts + 1`` int64), checked."""
        raw = self._bytes(8 * (self.parts + 1), self.offsets_at)
        offsets = np.frombuffer(raw, dtype="<i8").astype(np.int64)
        self._check(offsets)
        return offsets

    def read_rows(self, start: int, stop: int) -> Columns:
        """Rows ``start..stop`` of every column (``0 <= start <= stop <= total``)."""
        out: Columns = {}
        at = self.data_at
        for c, base in zip(self.columns, self.bases, strict=True):
            size = c.stored.itemsize
            arr = np.empty(stop - start, dtype=c.stored)
            _read_into(self.fd, memoryview(arr).cast("B"), at + start * size, self.path)
            if c.narrowed:
                arr = arr.astype(c.dtype)
                arr += c.dtype.type(base)
            elif arr.dtype != c.dtype:  # a big-endian machine
                arr = arr.astype(c.dtype)
            out[c.name] = arr
            at += self.total * size
        return out


@contextlib.contextmanager
def _header(path: str | os.PathLike) -> Iterator[_Header]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield _Header(fd, path)
    finally:
        os.close(fd)


def read_parts(path: str | os.PathLike, lo: int, hi: int | None = None) -> Columns:
    """Return the rows of partitions ``lo..hi-1`` (``hi`` defaults to ``lo + 1``) of ``path``."""
    hi = lo + 1 if hi is None else hi
    with _header(path) as h:
        return h.read_rows(*h.span(lo, hi))


def iter_parts(path: str | os.PathLike, lo: int, hi: int, batch_rows: int) -> Iterator[Columns]:
    """Yield the rows of partitions ``lo..hi-1`` of ``path`` in batches of at most
    ``batch_rows`` rows (a reader that keeps a subset never holds all of them)."""
    with _header(path) as h:
        a, b = h.span(lo, hi)
        for start in range(a, b, batch_rows):
            yield h.read_rows(start, min(b, start + batch_rows))


def part_rows(path: str | os.PathLike) -> np.ndarray:
    """Return the rows of each partition of ``path`` (int64, one per partition)."""
    with _header(path) as h:
        return np.diff(h.all_offsets())


def part_bytes(path: str | os.PathLike) -> np.ndarray:
    """Return the bytes each partition's rows take once read (rows x the columns' dtype
    widths; narrowed columns take less in the file)."""
    with _header(path) as h:
        return np.diff(h.all_offsets()) * sum(c.dtype.itemsize for c in h.columns)
