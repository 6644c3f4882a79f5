"""Partitioned shuffle files: one file per writing unit, each reader reads its partitions."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup.phases import partfile
from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
from pipeline.dedup.phases.partfile import (
    SHUFFLE_FORMAT,
    PartFileError,
    iter_parts,
    part_bytes,
    part_rows,
    read_parts,
    write_parts,
)
from pipeline.dedup.phases.store import (
    check_config,
    list_phase_files,
    load_config,
    mark_done,
    marker_path,
)
from pipeline.dedup.text import U64, document_key
from pipeline.execution.executor import LocalExecutor


@pytest.fixture(scope="module")
def key_rows(wiki_ref_articles) -> dict[str, np.ndarray]:
    """The exact-dedup rows (128-bit key halves and ref) of 300 real Wikipedia articles."""
    keys = [document_key(t) for t in wiki_ref_articles(300, 50)]
    return {"hi": np.array([k[0] for k in keys], dtype=U64),
            "lo": np.array([k[1] for k in keys], dtype=U64),
            "ref": np.arange(len(keys), dtype=np.int64) * 7,
            "para": np.arange(len(keys), dtype=np.int32)}


@pytest.mark.parametrize("parts", [1, 7, 10_000])
def test_every_partition_reads_back_its_rows_in_order(key_rows, tmp_path, parts) -> None:
    # 10_000 partitions: the offsets no longer fit the first read, so they are sought
    key = (key_rows["hi"] % U64(parts)).astype(np.int64)
    path = tmp_path / "m.parts"
    counts = write_parts(path, key, parts, key_rows)
    np.testing.assert_array_equal(counts, np.bincount(key, minlength=parts))
    np.testing.assert_array_equal(part_rows(path), counts)
    np.testing.assert_array_equal(part_bytes(path), counts * (8 + 8 + 8 + 4))
    for p in sorted(set(range(min(parts, 7))) | {parts - 1, int(key[0])}):
        got = read_parts(path, p)
        for name, col in key_rows.items():
            assert got[name].dtype == col.dtype
            np.testing.assert_array_equal(got[name], col[key == p])  # row order kept
    # a range of partitions, whole and in batches
    lo, hi = 0, max(1, parts // 2)
    want = (key >= lo) & (key < hi)
    order = np.argsort(key[want], kind="stable")
    whole = read_parts(path, lo, hi)
    batches = list(iter_parts(path, lo, hi, 37))
    assert all(len(b["ref"]) <= 37 for b in batches)
    for name, col in key_rows.items():
        np.testing.assert_array_equal(whole[name], col[want][order])
        got = np.concatenate([b[name] for b in batches]) if batches else col[:0]
        np.testing.assert_array_equal(got, col[want][order])


def test_integer_columns_of_a_small_span_are_stored_narrow(key_rows, tmp_path) -> None:
    refs = key_rows["ref"] + (np.int64(3) << 32)  # one shard's refs: a span of 2**11
    cols = {"hi": key_rows["hi"], "ref": refs, "neg": -refs, "band": (refs % 20).astype(np.int16),
            "count": np.full(len(refs), 1 << 40, dtype=np.int64),
            "sim": np.linspace(0.8, 1.0, len(refs))}
    key = (key_rows["hi"] % U64(5)).astype(np.int64)
    narrow, wide = tmp_path / "narrow.parts", tmp_path / "wide.parts"
    write_parts(narrow, key, 5, cols)
    write_parts(wide, key, 5, {"hi": cols["hi"], "sim": cols["sim"]})
    # ref and neg in 2 bytes, band and the constant count in 1: 6 bytes a row, not 26
    assert narrow.stat().st_size - wide.stat().st_size < 7 * len(refs) + 200
    np.testing.assert_array_equal(part_bytes(narrow), part_rows(narrow) * (8 + 8 + 8 + 2 + 8 + 8))
    for p in range(5):
        got = read_parts(narrow, p)
        for name, col in cols.items():
            assert got[name].dtype == col.dtype
            np.testing.assert_array_equal(got[name], col[key == p])


def test_bad_files_and_columns_are_refused_naming_the_file(key_rows, tmp_path) -> None:
    key = (key_rows["lo"] % U64(4)).astype(np.int64)
    path = tmp_path / "m.parts"
    write_parts(path, key, 4, key_rows)
    with pytest.raises(ValueError, match="partition 5 outside 0..4"):
        read_parts(path, 5, 6)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(PartFileError, match="m.parts: truncated"):
        read_parts(path, 3)
    other = tmp_path / "other.parquet"
    other.write_bytes(b"PAR1" + bytes(100))
    with pytest.raises(PartFileError, match="other.parquet: not a partitioned shuffle file"):
        read_parts(other, 0)
    with pytest.raises(ValueError, match="column 'id' must be a 1-D numeric array"):
        write_parts(tmp_path / "x.parts", key, 4, {"id": np.array(["a"] * len(key), dtype=object)})
    with pytest.raises(ValueError, match="partition keys must lie in 0..3"):
        write_parts(tmp_path / "x.parts", key + 1, 4, {"ref": key_rows["ref"]})


def test_the_shuffle_writes_one_file_per_unit(corpus, tmp_path) -> None:
    stage, _ = corpus
    work = str(tmp_path)
    prepare_exact(stage, work, ExactConfig(partitions=5, max_map_tasks=3), LocalExecutor())
    # 3 map units and 5 reducers, whatever the partition count: not 3 x 5 and 5 x groups
    assert [Path(f).name for f in list_phase_files(work, "map")] == [
        "m00000.parts", "m00001.parts", "m00002.parts"]
    assert len(list_phase_files(work, "reduce")) == 5
    assert len(list_phase_files(work, "decisions")) == len(stage)


def _offsets_at(path: Path, columns: int) -> int:
    """Where a partitioned file's row offsets start (after its header and column bases)."""
    header_len = struct.unpack_from("<Q", path.read_bytes(), 8)[0]
    return 16 + header_len + 8 * columns


def _put(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def _set_offset(path: Path, columns: int, i: int, value: int) -> None:
    _put(path, _offsets_at(path, columns) + 8 * i, struct.pack("<q", value))


def _offset(path: Path, columns: int, i: int) -> int:
    return struct.unpack_from("<q", path.read_bytes(), _offsets_at(path, columns) + 8 * i)[0]


def _swap_offsets(path: Path) -> None:
    a, b = _offset(path, 4, 1), _offset(path, 4, 2)
    assert a < b  # partition 1 has rows: swapped, the offsets decrease
    _set_offset(path, 4, 1, b)
    _set_offset(path, 4, 2, a)


def _replace(old: bytes, new: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        raw = path.read_bytes()
        assert raw.count(old) == 1 and len(old) == len(new)
        path.write_bytes(raw.replace(old, new))
    return damage


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "decreasing offsets": (_swap_offsets, "row offsets decrease"),
    "a negative offset": (lambda p: _set_offset(p, 4, 2, -5), "row offsets decrease"),
    "a first offset not 0": (lambda p: _set_offset(p, 4, 0, 3), "first row offset is 3"),
    "a last offset past the rows": (lambda p: _set_offset(p, 4, 4, 301), "truncated: 301 rows"),
    "garbage header": (lambda p: _put(p, 16, b"{garbage"), "unreadable header"),
    "an unknown dtype": (_replace(b'["hi", "<u8"', b'["hi", "<x8"'), "unreadable header"),
    "another partition count": (_replace(b'"parts": 4', b'"parts": 9'), "need \\d+ bytes"),
    "a huge header length": (lambda p: _put(p, 8, struct.pack("<Q", 1 << 40)),
                             "header length 1099511627776 does not fit"),
    "bytes appended": (lambda p: p.write_bytes(p.read_bytes() + bytes(8)), "too long"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_files_are_refused_naming_the_file_and_its_marker(key_rows, tmp_path,
                                                                   damage) -> None:
    # a map unit's file and marker, as a job leaves them
    path = tmp_path / "map" / "m00000.parts"
    path.parent.mkdir()
    key = (key_rows["lo"] % U64(4)).astype(np.int64)
    write_parts(path, key, 4, key_rows)
    mark_done(tmp_path, "map", "m00000", [path])
    fn, what = DAMAGES[damage]
    fn(path)
    marker = marker_path(tmp_path, "map", "m00000")
    match = f"{re.escape(str(path))}: .*{what}.*delete its unit's marker {re.escape(str(marker))}"
    for read in (lambda: read_parts(path, 1), lambda: part_rows(path),
                 lambda: list(iter_parts(path, 0, 4, 50))):
        with pytest.raises(PartFileError, match=match):
            read()


def test_offsets_past_the_first_read_are_checked_where_used(key_rows, tmp_path) -> None:
    # 2,000 partitions: the offsets do not come with the first read, so a reader checks
    # the ones it uses, and part_rows all of them
    parts = 2000
    key = (key_rows["hi"] % U64(parts)).astype(np.int64)
    path = tmp_path / "m.parts"
    counts = write_parts(path, key, parts, key_rows)
    p = int(np.flatnonzero(counts[1500:])[0]) + 1500  # a partition with rows, past 4 KiB
    read_parts(path, p)
    _set_offset(path, 4, p + 1, _offset(path, 4, p) - 1)
    for read in (lambda: read_parts(path, p), lambda: part_rows(path)):
        with pytest.raises(PartFileError, match=f"m.parts: .*offsets decrease .*partition {p} "):
            read()
    _set_offset(path, 4, p + 1, -3)
    with pytest.raises(PartFileError, match=f"m.parts: offset {p + 1} is -3, outside 0..300"):
        read_parts(path, p)


def test_a_read_cut_short_is_continued_until_the_slice_is_full(key_rows, tmp_path,
                                                                monkeypatch) -> None:
    # one preadv returns at most ~2 GiB on Linux: a short read is not the end of the file
    key = (key_rows["lo"] % U64(3)).astype(np.int64)
    path = tmp_path / "m.parts"
    write_parts(path, key, 3, key_rows)
    want = read_parts(path, 0, 3)
    real = os.preadv
    calls: list[int] = []

    def short(fd: int, buffers: list[memoryview], at: int) -> int:
        calls.append(at)
        return real(fd, [memoryview(buffers[0])[:7]], at)

    monkeypatch.setattr(partfile.os, "preadv", short)
    got = read_parts(path, 0, 3)
    assert len(calls) > 300  # 7 bytes at a time
    for name, col in want.items():
        np.testing.assert_array_equal(got[name], col)

    def cut(fd: int, buffers: list[memoryview], at: int) -> int:  # the file ends mid-read
        return 0 if calls else short(fd, buffers, at)

    calls.clear()
    monkeypatch.setattr(partfile.os, "preadv", cut)
    with pytest.raises(PartFileError, match="m.parts: truncated"):
        read_parts(path, 0, 3)


def test_a_work_directory_of_an_older_shuffle_layout_is_refused(corpus, tmp_path) -> None:
    stage, _ = corpus
    work, config = tmp_path / "job", ExactConfig(partitions=3, max_map_tasks=2)
    prepare_exact(stage, str(work), config, LocalExecutor())
    recorded = load_config(work)
    assert recorded["shuffle_format"] == SHUFFLE_FORMAT
    # the record of a run with the same options and shards under an older layout (before
    # the format was recorded, or another one): its markers would validate, its files not
    for older in ({}, {"shuffle_format": SHUFFLE_FORMAT - 1}):
        (work / "_config.json").unlink()
        check_config(work, {**{k: v for k, v in recorded.items() if k != "shuffle_format"},
                            **older})
        with pytest.raises(ValueError, match="_config.json was written by a different "
                                             "configuration"):
            prepare_exact(stage, str(work), config, LocalExecutor())
