"""Partitioned shuffle files: one file per writing unit, each reader reads its partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
from pipeline.dedup.phases.partfile import (
    PartFileError,
    iter_parts,
    part_bytes,
    part_rows,
    read_parts,
    write_parts,
)
from pipeline.dedup.phases.store import list_phase_files
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
    with pytest.raises(ValueError, match="partition 5 outside 0..4"):
        read_parts(tmp_path / "m.parts", 5, 6)


def test_the_shuffle_writes_one_file_per_unit(corpus, tmp_path) -> None:
    stage, _ = corpus
    work = str(tmp_path)
    prepare_exact(stage, work, ExactConfig(partitions=5, max_map_tasks=3), LocalExecutor())
    # 3 map units and 5 reducers, whatever the partition count: not 3 x 5 and 5 x groups
    assert [Path(f).name for f in list_phase_files(work, "map")] == [
        "m00000.parts", "m00001.parts", "m00002.parts"]
    assert len(list_phase_files(work, "reduce")) == 5
    assert len(list_phase_files(work, "decisions")) == len(stage)
