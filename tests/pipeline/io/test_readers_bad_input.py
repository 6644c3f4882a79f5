"""Damaged input never kills the Read step: each kind of damage, built in tmp_path from a
real file, is counted as error:<kind> (with a warning naming file and offset) and every
record before it, and after it where the format allows re-sync, is still read."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers import ReadOptions, detect_format, plan_splits, read_shard


@pytest.fixture(scope="module")
def sample_warc(cc_dir: Path) -> Path:
    """50 gzip members, 16 responses."""
    return cc_dir / "resiliparse_CC-MAIN-2020-34_sample.warc.gz"


@pytest.fixture(scope="module")
def plain_warc(cc_dir: Path) -> Path:
    """An uncompressed WARC."""
    return cc_dir / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"


@pytest.fixture(scope="module")
def arc_path(cc_dir: Path) -> Path:
    return cc_dir / "aut_heritrix2008_example.arc.gz"


def read(path: Path, **options: object) -> tuple[list[Document], StepStats]:
    stats = StepStats()
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    docs = list(read_shard(str(path), detect_format(str(path)), 0, 1, opts, stats))
    assert stats.docs_out == len(docs)
    return docs, stats


def errors(stats: StepStats) -> dict[str, int]:
    return {k: v for k, v in stats.counters.items() if k.startswith("error:")}


def ids(docs: list[Document]) -> list[str]:
    return [d.id for d in docs]


@pytest.fixture(scope="module")
def sample(sample_warc: Path) -> tuple[bytes, list[str]]:
    """The intact sample WARC and the ids of its 16 documents, in order."""
    docs, stats = read(sample_warc)
    assert len(docs) == 16 and errors(stats) == {}
    return sample_warc.read_bytes(), ids(docs)


# --------------------------------------------------------------- whole files


def test_missing_file_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone.warc.gz"
    with caplog.at_level(logging.WARNING, logger="pipeline.io.readers"):
        docs, stats = read(path)
    assert docs == [] and errors(stats) == {"error:missing_file": 1}
    assert str(path) in caplog.text
    assert plan_splits(str(tmp_path / "gone.jsonl"), "jsonl", ReadOptions()) == 1
    for name in ("gone.jsonl", "gone.parquet", "gone.arc.gz"):
        assert errors(read(tmp_path / name)[1]) == {"error:missing_file": 1}


@pytest.mark.parametrize(
    "name", ["e.warc.gz", "e.warc", "e.arc.gz", "e.wet.gz", "e.jsonl", "e.parquet"]
)
def test_empty_file_is_counted(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    docs, stats = read(path)
    assert docs == [] and errors(stats) == {"error:empty_file": 1}


@pytest.mark.parametrize("name", ["g.warc.gz", "g.warc", "g.arc.gz", "g.jsonl.gz", "g.parquet"])
def test_garbage_file_is_counted(tmp_path: Path, name: str, damage: SimpleNamespace) -> None:
    path = tmp_path / name
    path.write_bytes(damage.garbage(20_000, seed=1))
    docs, stats = read(path)
    assert docs == [] and sum(errors(stats).values()) >= 1


# ---------------------------------------------------------- gzip WARC damage


def test_truncated_mid_record(tmp_path: Path, sample: tuple[bytes, list[str]], caplog,
                              damage: SimpleNamespace) -> None:
    data, expected = sample
    start, end = damage.member_span(data, damage.member_of_record(data, "response", 7))
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: (start + end) // 2])  # cut inside the 8th response
    with caplog.at_level(logging.WARNING, logger="pipeline.io.readers"):
        docs, stats = read(path)
    assert ids(docs) == expected[:7]
    assert errors(stats) == {"error:truncated": 1}
    assert str(path) in caplog.text and f"at byte {start}" in caplog.text


def test_truncated_in_a_record_header(tmp_path: Path, sample: tuple[bytes, list[str]],
                                      damage: SimpleNamespace) -> None:
    data, expected = sample
    start, _ = damage.member_span(data, damage.member_of_record(data, "request", 9))
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: start + 40])  # a few bytes into the gzip member of a request
    docs, stats = read(path)
    assert ids(docs) == expected[:9]
    assert errors(stats) == {"error:truncated": 1}


def test_flipped_bytes_resync_at_next_member(
    tmp_path: Path, sample: tuple[bytes, list[str]], damage: SimpleNamespace
) -> None:
    data, expected = sample
    start, end = damage.member_span(data, damage.member_of_record(data, "response", 7))
    path = tmp_path / "flip.warc.gz"
    path.write_bytes(damage.flip_bytes(data, (start + end) // 2))
    docs, stats = read(path)
    assert ids(docs) == expected[:7] + expected[8:]  # only the damaged record is lost
    assert errors(stats) == {"error:corrupt_gzip": 1}
    assert stats.counters["resynced"] == 1


def test_flipped_gzip_header_of_a_member(tmp_path: Path, sample: tuple[bytes, list[str]],
                                         damage: SimpleNamespace) -> None:
    data, expected = sample
    start, _ = damage.member_span(data, damage.member_of_record(data, "response", 3))
    path = tmp_path / "flip.warc.gz"
    path.write_bytes(damage.flip_bytes(data, start + 10, 8))  # the start of the deflate stream
    docs, stats = read(path)
    assert ids(docs) == expected[:3] + expected[4:]
    assert errors(stats) == {"error:corrupt_gzip": 1}


def test_crc_mismatch_drops_the_record(tmp_path: Path, sample: tuple[bytes, list[str]],
                                       damage: SimpleNamespace) -> None:
    """Data that inflates cleanly but fails the member CRC is never emitted.

    The CRC is checked only at the end of the member, after the payload was read, so the
    reader holds a record's document until the library has moved past the member.
    """
    data, expected = sample
    members = [out for _, out in damage.gzip_members(data)]
    index = damage.member_of_record(data, "response", 6)
    original = gzip.compress(members[index], mtime=0)
    changed = bytearray(members[index])
    changed[len(changed) // 2] ^= 0x20  # one letter's case, deep in the HTML
    member = bytearray(gzip.compress(bytes(changed), mtime=0))
    member[-8:-4] = original[-8:-4]  # the CRC of the unchanged data: a mismatch
    members_gz = [gzip.compress(m, mtime=0) for m in members]
    members_gz[index] = bytes(member)
    path = tmp_path / "crc.warc.gz"
    path.write_bytes(b"".join(members_gz))
    docs, stats = read(path)
    assert ids(docs) == expected[:6] + expected[7:]
    assert errors(stats) == {"error:corrupt_gzip": 1}


def test_garbage_between_members(tmp_path: Path, sample: tuple[bytes, list[str]],
                                 damage: SimpleNamespace) -> None:
    data, expected = sample
    start, _ = damage.member_span(data, damage.member_of_record(data, "request", 5))
    path = tmp_path / "mid.warc.gz"
    path.write_bytes(data[:start] + damage.garbage(3000) + data[start:])
    docs, stats = read(path)
    assert ids(docs) == expected
    assert errors(stats) == {"error:garbage": 1} and stats.counters["resynced"] == 1


def test_garbage_appended(tmp_path: Path, sample: tuple[bytes, list[str]],
                          damage: SimpleNamespace) -> None:
    data, expected = sample
    path = tmp_path / "tail.warc.gz"
    path.write_bytes(data + damage.garbage(5000))
    docs, stats = read(path)
    assert ids(docs) == expected
    assert errors(stats) == {"error:trailing_garbage": 1}


def test_bad_content_length_in_gzip_member(tmp_path: Path, sample: tuple[bytes, list[str]],
                                           damage: SimpleNamespace) -> None:
    """A Content-Length too large swallows the following members; they are recovered."""
    data, expected = sample
    members = [out for _, out in damage.gzip_members(data)]
    index = damage.member_of_record(data, "response", 4)
    extra = sum(len(m) for m in members[index + 1 : index + 4]) + 25
    # the response is followed by its metadata, the next request and the next response:
    assert b"WARC-Type: response" in members[index + 3][:400]
    members[index] = damage.set_content_length(
        members[index], 0, str(damage.content_length(members[index], 0) + extra).encode()
    )
    path = tmp_path / "cl.warc.gz"
    path.write_bytes(damage.regzip(members))
    docs, stats = read(path)
    assert ids(docs) == expected[:4] + expected[5:]  # the mislabelled record only is lost
    assert errors(stats) == {"error:bad_content_length": 1}


# ------------------------------------------------------ uncompressed WARC damage


def _plain_docs(plain_warc: Path) -> list[str]:
    docs, stats = read(plain_warc)
    assert len(docs) == 3 and errors(stats) == {}
    return ids(docs)


def test_plain_warc_truncated(tmp_path: Path, damage: SimpleNamespace, plain_warc: Path) -> None:
    data = plain_warc.read_bytes()
    expected = _plain_docs(plain_warc)
    starts = damage.warc_record_starts(data)
    big = starts[8]  # the 222 KB response
    assert b"WARC-Type: response" in data[big : big + 300]
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: big + 50_000])
    docs, stats = read(path)
    assert ids(docs) == expected[:1]
    assert errors(stats) == {"error:truncated": 1}


@pytest.mark.parametrize("value", [b"abc", b"-5", b""])
def test_plain_warc_content_length_not_a_number(tmp_path: Path, value: bytes, plain_warc: Path,
                                                damage: SimpleNamespace) -> None:
    data = plain_warc.read_bytes()
    expected = _plain_docs(plain_warc)
    first_html = damage.warc_record_starts(data)[5]
    path = tmp_path / "cl.warc"
    path.write_bytes(damage.set_content_length(data, first_html, value))
    docs, stats = read(path)
    assert ids(docs) == expected[1:]
    assert errors(stats) == {"error:bad_content_length": 1}


def test_plain_warc_content_length_past_end_of_file(tmp_path: Path, damage: SimpleNamespace,
                                                    plain_warc: Path) -> None:
    data = plain_warc.read_bytes()
    expected = _plain_docs(plain_warc)
    starts = damage.warc_record_starts(data)
    path = tmp_path / "cl.warc"
    assert b"WARC-Type: response" in data[starts[8] : starts[8] + 300]
    path.write_bytes(damage.set_content_length(data, starts[8], b"99999999999"))
    docs, stats = read(path)
    assert ids(docs) == [expected[0], expected[2]]  # the records after it are re-found
    assert errors(stats) == {"error:bad_content_length": 1}


def test_plain_warc_content_length_swallows_records(tmp_path: Path, damage: SimpleNamespace,
                                                    plain_warc: Path) -> None:
    data = plain_warc.read_bytes()
    expected = _plain_docs(plain_warc)
    starts = damage.warc_record_starts(data)
    html = starts[5]  # a response; starts[6:9] = its metadata, a request, the next response
    grow = starts[10] - starts[6] + 60  # swallow up to 60 bytes into the record after that
    new = str(damage.content_length(data, html) + grow).encode()
    path = tmp_path / "cl.warc"
    path.write_bytes(damage.set_content_length(data, html, new))
    docs, stats = read(path)
    assert ids(docs) == expected[1:]  # the swallowed response is recovered
    assert errors(stats) == {"error:bad_content_length": 1}


def test_plain_warc_bytes_inserted_in_a_payload(tmp_path: Path, damage: SimpleNamespace,
                                                plain_warc: Path) -> None:
    data = plain_warc.read_bytes()
    expected = _plain_docs(plain_warc)
    starts = damage.warc_record_starts(data)
    middle = (starts[5] + starts[6]) // 2  # inside the first HTML payload
    path = tmp_path / "ins.warc"
    path.write_bytes(data[:middle] + damage.garbage(300) + data[middle:])
    docs, stats = read(path)
    assert ids(docs) == expected[1:]  # the damaged record is dropped, not cut short
    assert errors(stats) == {"error:bad_content_length": 1}


def test_plain_warc_trailing_garbage(tmp_path: Path, damage: SimpleNamespace,
                                     plain_warc: Path) -> None:
    path = tmp_path / "tail.warc"
    path.write_bytes(plain_warc.read_bytes() + damage.garbage(2000))
    docs, stats = read(path)
    assert ids(docs) == _plain_docs(plain_warc)
    assert errors(stats) == {"error:trailing_garbage": 1}


# ------------------------------------------------------------------ ARC damage


def test_arc_truncated_and_flipped(tmp_path: Path, arc_path: Path, damage: SimpleNamespace) -> None:
    data = arc_path.read_bytes()
    intact, _ = read(arc_path, html_only=False)

    def key(docs: list[Document]) -> list[tuple[int, str]]:  # (record offset, text)
        return [(int(d.id.rsplit(":", 1)[1]), d.text) for d in docs]

    offsets = [offset for offset, _ in damage.gzip_members(data)]
    cut = (offsets[100] + offsets[101]) // 2  # inside ARC record 100 (the 99th response)
    (tmp_path / "cut.arc.gz").write_bytes(data[:cut])
    docs, stats = read(tmp_path / "cut.arc.gz", html_only=False)
    assert key(docs) == [k for k in key(intact) if k[0] < offsets[100]]
    assert errors(stats) == {"error:truncated": 1}
    (tmp_path / "flip.arc.gz").write_bytes(damage.flip_bytes(data, cut))
    docs, stats = read(tmp_path / "flip.arc.gz", html_only=False)
    assert key(docs) == [k for k in key(intact) if k[0] != offsets[100]]
    assert errors(stats) == {"error:corrupt_gzip": 1} and stats.counters["resynced"] == 1


# ------------------------------------------------------------ JSONL / Parquet


def test_jsonl_gz_truncated_and_corrupt(tmp_path: Path, moby_path: Path,
                                        damage: SimpleNamespace) -> None:
    raw = gzip.decompress(moby_path.read_bytes())
    data = gzip.compress(raw, mtime=0)
    whole, _ = read(moby_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    docs, stats = read(tmp_path / "cut.jsonl.gz")
    assert 10 < len(docs) < 138 and ids(docs) == ids(whole)[: len(docs)]
    assert errors(stats) == {"error:truncated": 1}
    (tmp_path / "bad.jsonl.gz").write_bytes(damage.flip_bytes(data, len(data) // 2))
    docs, stats = read(tmp_path / "bad.jsonl.gz")
    # gzip checks its CRC only at the end of the member: lines inflated from the damaged
    # deflate data before that are mangled and fail as JSON; the good lines come first.
    good = [(d.id, d.text) for d in whole]
    assert 10 < len(docs) < 138 and [(d.id, d.text) for d in docs] == good[: len(docs)]
    assert stats.counters["error:corrupt_gzip"] == 1


def test_parquet_truncated(tmp_path: Path, moby_path: Path) -> None:
    import json

    import pyarrow as pa

    rows = [json.loads(line) for line in gzip.decompress(moby_path.read_bytes()).splitlines()]
    path = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}), path
    )
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:-100])
    assert plan_splits(str(cut), "parquet", ReadOptions()) == 1
    docs, stats = read(cut)
    assert docs == [] and errors(stats) == {"error:bad_parquet": 1}


def test_parquet_corrupt_page_skips_its_row_group(tmp_path: Path, damage: SimpleNamespace,
                                                  moby_path: Path) -> None:
    import json

    import pyarrow as pa

    rows = [json.loads(line) for line in gzip.decompress(moby_path.read_bytes()).splitlines()]
    path = tmp_path / "m.parquet"
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    pq.write_table(table, path, row_group_size=10, write_page_checksum=True)
    chunk = pq.ParquetFile(path).metadata.row_group(5).column(1)  # the text of rows 50-59
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    at = start + chunk.total_compressed_size // 2
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(damage.flip_bytes(path.read_bytes(), at, 8))
    docs, stats = read(bad)
    assert ids(docs) == [r["id"] for r in rows[:50] + rows[60:]]
    assert [d.text for d in docs] == [r["text"] for r in rows[:50] + rows[60:]]
    assert errors(stats) == {"error:bad_parquet": 1}
