"""``utf8_buffers``: the one place an Arrow string column's UTF-8 data and offsets are taken
for the C kernels (exact keys, line hashing and cutting, MinHash)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.text import utf8_buffers

TEXTS = ["", "héllo", "wörld\n", "日本語", "", "🙂 last"]


def _rows(data: pa.Buffer | bytes, offsets: np.ndarray) -> list[str]:
    raw = bytes(data)
    return [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_layouts_give_the_rows_from_zero(kind: pa.DataType, dtype: type) -> None:
    """Whole, sliced and chunked columns of either width give exactly their rows' bytes, with
    offsets from 0 in the asked dtype."""
    column = pa.array(TEXTS, kind)
    cases = [(column, TEXTS), (column.slice(2, 3), TEXTS[2:5]), (column.slice(5), TEXTS[5:]),
             (pa.chunked_array([column.slice(0, 2), column.slice(2)]), TEXTS),
             (column.slice(0, 0), []), (pa.array([], kind), [])]
    for texts, expected in cases:
        data, offsets = utf8_buffers(texts, dtype)
        assert offsets.dtype == dtype and offsets[0] == 0
        assert len(data) == offsets[-1] == sum(len(t.encode()) for t in expected)
        assert _rows(data, offsets) == expected


def test_nulls_read_as_empty_and_other_types_are_refused() -> None:
    data, offsets = utf8_buffers(pa.array(["a", None, "bc"]))
    assert _rows(data, offsets) == ["a", "", "bc"]
    with pytest.raises(TypeError, match="Arrow string column"):
        utf8_buffers(pa.array([b"bytes"]))


def test_int32_offsets_refuse_more_than_2_gib() -> None:
    """A large_string column whose rows hold over 2 GiB cannot go to an int32 kernel (its
    callers then fall back); its int64 offsets and a small slice of it are fine. The 2 GiB
    buffer is calloc'd and never touched, so it costs no memory."""
    size = 2**31 + 2
    big = pa.py_buffer(np.zeros(size, dtype=np.uint8))
    offsets = pa.py_buffer(np.array([0, 1, size], dtype=np.int64).tobytes())
    column = pa.Array.from_buffers(pa.large_string(), 2, [None, offsets, big])
    with pytest.raises(ValueError, match="int32"):
        utf8_buffers(column, np.int32)
    assert utf8_buffers(column)[1].tolist() == [0, 1, size]
    data, off = utf8_buffers(column.slice(0, 1), np.int32)
    assert off.tolist() == [0, 1] and bytes(data) == b"\0"
