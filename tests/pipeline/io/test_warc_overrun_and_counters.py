"""WARC reading fixes found by feeding bad input: a Content-Length that runs over the
records after it (or past the end of the file) in the middle of a file, invalid UTF-8,
and payloads over ``max_doc_bytes``. Every archive here is cut from a real one."""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers import ReadOptions, detect_format, read_shard
from pipeline.io.readers.common import LOG_FIRST

WEBMIX = "webmix/webmix-00000.warc.gz"  # per-record gzip, response records only
PLAIN = "cc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"  # 13 records
WET = "cc/whirlwind_CC-MAIN-2024-22_whirlwind.warc.wet.gz"

_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length: *(\d+)\r\n")


def read(path: Path, **options: object) -> tuple[list[Document], StepStats]:
    stats = StepStats()
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    return list(read_shard(str(path), detect_format(str(path)), 0, 1, opts, stats)), stats


def errors(stats: StepStats) -> dict[str, int]:
    return {k: v for k, v in stats.counters.items() if k.startswith("error:")}


def members(data: bytes) -> list[bytes]:
    """The decompressed gzip members of a per-record .warc.gz, in order."""
    out, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        out.append(inflater.decompress(data[pos:]))
        pos = len(data) - len(inflater.unused_data)
    return out


def grow_content_length(record: bytes, by: int) -> bytes:
    """``record`` (starting at its WARC header) with its Content-Length made ``by`` larger."""
    m = _CONTENT_LENGTH.search(record)
    assert m is not None
    return record[: m.start(1)] + str(int(m.group(1)) + by).encode() + record[m.end(1) :]


def record_id(record: bytes) -> str:
    m = re.search(rb"\r\nWARC-Record-ID: <([^>]+)>\r\n", record)
    assert m is not None
    return m.group(1).decode()


@pytest.fixture(scope="module")
def webmix_records(shared_data: Path) -> list[bytes]:
    """The first 10 records of a webmix shard (real pages), one bytes object each."""
    return members((shared_data / WEBMIX).read_bytes())[:10]


# A record in the middle whose Content-Length is made larger by a few bytes (it eats the
# next record's first header line), by a few kilobytes (several records) or past the end
# of the file: only that record is lost, counted once, and every record after it is read.
GROWTH = [10, 300, 5000, 10**10]


@pytest.mark.parametrize("by", GROWTH)
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
def test_content_length_too_large_in_the_middle_loses_only_that_record(
    tmp_path: Path, webmix_records: list[bytes], by: int, compressed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    suffix = ".warc.gz" if compressed else ".warc"
    intact = tmp_path / f"intact{suffix}"
    damaged = tmp_path / f"damaged{suffix}"
    bad = 4
    records = list(webmix_records)
    broken = records[:bad] + [grow_content_length(records[bad], by)] + records[bad + 1 :]

    def write(path: Path, recs: list[bytes]) -> None:
        if compressed:
            path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in recs))
        else:
            path.write_bytes(b"".join(recs))

    write(intact, records)
    write(damaged, broken)
    expected, _ = read(intact)
    assert len(expected) >= 8 and record_id(records[bad]) in [d.id for d in expected]
    with caplog.at_level(logging.WARNING, logger="pipeline.io.readers"):
        docs, stats = read(damaged)
    want = [d for d in expected if d.id != record_id(records[bad])]
    assert [(d.id, d.text) for d in docs] == [(d.id, d.text) for d in want]
    assert errors(stats) == {"error:bad_content_length": 1}
    assert str(damaged) in caplog.text and "bad_content_length" in caplog.text


@pytest.mark.parametrize("by", GROWTH)
@pytest.mark.parametrize("bad", [4, 5], ids=["request", "response"])
def test_content_length_too_large_in_a_plain_cc_warc(
    tmp_path: Path, shared_data: Path, by: int, bad: int
) -> None:
    """Real Common Crawl sequence (warcinfo, request, response, metadata, ...): a request
    that runs over its response loses nothing; a response loses only itself."""
    data = (shared_data / PLAIN).read_bytes()
    starts = [m.start() for m in re.finditer(rb"(?:^|(?<=\n))WARC/1\.0\r\n", data)]
    records = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]
    kind = re.search(rb"WARC-Type: (\w+)", records[bad]).group(1)  # type: ignore[union-attr]
    assert kind == (b"request" if bad == 4 else b"response")
    expected, _ = read(shared_data / PLAIN)
    path = tmp_path / "cl.warc"
    path.write_bytes(b"".join(records[:bad] + [grow_content_length(records[bad], by)]
                              + records[bad + 1 :]))
    docs, stats = read(path)
    lost = {record_id(records[bad])} if kind == b"response" else set()
    assert [d.id for d in docs] == [d.id for d in expected if d.id not in lost]
    assert errors(stats) == {"error:bad_content_length": 1}


def test_intact_files_report_no_overrun(shared_data: Path) -> None:
    for name in (WEBMIX, PLAIN, "cc/resiliparse_CC-MAIN-2020-34_sample.warc.gz", WET):
        docs, stats = read(shared_data / name)
        assert docs and errors(stats) == {} and "resynced" not in stats.counters, name


# ------------------------------------------------------------------ decoding


def test_invalid_utf8_in_a_wet_payload_is_counted_and_text_unchanged(
    tmp_path: Path, shared_data: Path
) -> None:
    info, conversion = members((shared_data / WET).read_bytes())
    head, _, payload = conversion.partition(b"\r\n\r\n")
    at = payload.index(b"Escopete")
    bad_payload = payload[:at] + b"\xff\xfe" + payload[at + 2 :]  # same length
    path = tmp_path / "bad.warc.wet.gz"
    path.write_bytes(gzip.compress(info, mtime=0)
                     + gzip.compress(head + b"\r\n\r\n" + bad_payload, mtime=0))
    (intact,), clean = read(shared_data / WET)
    (doc,), stats = read(path)
    assert "decode:replaced_invalid_utf8" not in clean.counters
    assert stats.counters["decode:replaced_invalid_utf8"] == 1
    body = bad_payload[: len(bad_payload) - 4]  # the record ends with its \r\n\r\n
    assert doc.text == body.decode("utf-8", "replace") and "\ufffd" in doc.text
    assert doc.id == intact.id and errors(stats) == {}


def test_invalid_utf8_in_an_html_payload_is_counted_and_text_unchanged(
    tmp_path: Path, webmix_records: list[bytes]
) -> None:
    record = webmix_records[0]
    assert b"charset" not in record[:2000].lower() or b"utf-8" in record[:2000].lower()
    at = record.index(b"<body") + 5
    bad = record[:at] + b"\xc3\x28" + record[at + 2 :]  # an invalid 2-byte sequence
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(gzip.compress(bad, mtime=0))
    (doc,), stats = read(path)
    payload = bad.split(b"\r\n\r\n", 2)[2][:-4]  # after the WARC and HTTP headers
    assert doc.text == payload.decode("utf-8", "replace")
    assert stats.counters["decode:replaced_invalid_utf8"] == 1


def test_replacement_counter_on_a_real_shard(shared_data: Path) -> None:
    """Webmix holds real pages with invalid bytes: each counted, no valid page counted."""
    docs, stats = read(shared_data / WEBMIX)
    counted = sum(v for k, v in stats.counters.items() if k.startswith("decode:replaced_invalid_"))
    assert 0 < counted <= sum("\ufffd" in d.text for d in docs)


# ------------------------------------------------------------- too large


def test_documents_over_max_doc_bytes_get_a_warning_line_each_then_a_summary(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = shared_data / WEBMIX
    with caplog.at_level(logging.WARNING, logger="pipeline.io.readers"):
        docs, stats = read(path, max_doc_bytes=20_000)
    skipped = stats.counters["skipped:too_large"]
    assert skipped > LOG_FIRST and docs
    lines = [r.getMessage() for r in caplog.records]
    each = [m for m in lines if "over max_doc_bytes (20000)" in m]
    assert len(each) == LOG_FIRST
    for message in each:
        assert message.startswith(f"{path}: record at byte ") and "bytes" in message
        size = int(re.search(r"skipped: (\d+) bytes", message).group(1))  # type: ignore[union-attr]
        assert size > 20_000
    summary = [m for m in lines if f"{skipped} records in all counted as skipped:too_large" in m]
    assert len(summary) == 1 and len(lines) == LOG_FIRST + 1
