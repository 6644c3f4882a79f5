"""Fixtures of the reader tests: the shared archives they read, and helpers that build
damaged copies of real archives (and small real WARCs) in tmp dirs.

Nothing here invents content: every helper takes the bytes of a real file from the shared
data and cuts, flips, pads or re-labels them, or wraps real text into a WARC record.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


@pytest.fixture(scope="session")
def cc_dir(shared_data: Path) -> Path:
    """Real Common Crawl, Heritrix, pywb, wget and CCNet samples (``shared/data/cc``)."""
    return shared_data / "cc"


@pytest.fixture(scope="session")
def webmix_dir(shared_data: Path) -> Path:
    """The webmix WARC shards."""
    return shared_data / "webmix"


@pytest.fixture(scope="session")
def moby_path(shared_data: Path) -> Path:
    """Moby Dick's chapters as gzipped JSONL (138 lines)."""
    return shared_data / "reference" / "moby_dick_chapters_stdlib.jsonl.gz"


@pytest.fixture(scope="session")
def damage() -> SimpleNamespace:
    """The helpers below that take archives apart and damage them, as attributes."""
    return SimpleNamespace(**{f.__name__: f for f in (
        gzip_members, member_of_record, member_span, flip_bytes, garbage, warc_record_starts,
        set_content_length, content_length, regzip)})


@pytest.fixture(scope="session")
def write_warc() -> Callable[[Path, list[tuple[str, str | None, bytes]]], list[str]]:
    """``(path, records) -> record ids``: see :func:`_write_warc`."""
    return _write_warc




def gzip_members(data: bytes) -> list[tuple[int, bytes]]:
    """Split a multi-member gzip file into ``(offset, decompressed bytes)`` per member."""
    members = []
    pos = 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        out = inflater.decompress(data[pos:])
        members.append((pos, out))
        pos = len(data) - len(inflater.unused_data)
    return members


def member_of_record(data: bytes, warc_type: str, nth: int) -> int:
    """Index of the gzip member holding the ``nth`` (0-based) record of ``warc_type``."""
    seen = 0
    for index, (_, out) in enumerate(gzip_members(data)):
        if re.search(rb"(?m)^WARC-Type: " + warc_type.encode() + rb"\r$", out[:4096]):
            if seen == nth:
                return index
            seen += 1
    raise ValueError(f"no {warc_type} record number {nth}")


def member_span(data: bytes, index: int) -> tuple[int, int]:
    """``(start, end)`` byte offsets of gzip member ``index`` in ``data``."""
    offsets = [offset for offset, _ in gzip_members(data)] + [len(data)]
    return offsets[index], offsets[index + 1]


def flip_bytes(data: bytes, at: int, count: int = 16) -> bytes:
    """``data`` with ``count`` bytes from ``at`` inverted (bit-flipped)."""
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + count]) + data[at + count :]


def garbage(count: int, seed: int = 0) -> bytes:
    """``count`` reproducible random bytes without gzip magic or ``WARC/`` in them."""
    out = bytearray(random.Random(seed).randbytes(count))
    for i in range(len(out)):
        if out[i] in (0x1F, ord("W")):
            out[i] = 0x20
    return bytes(out)


def warc_record_starts(data: bytes) -> list[int]:
    """Offsets of the records of an uncompressed WARC (lines starting ``WARC/1.0``)."""
    return [m.start() for m in re.finditer(rb"(?:^|(?<=\n))WARC/1\.0\r\n", data)]


def set_content_length(data: bytes, record_start: int, value: bytes) -> bytes:
    """Replace the Content-Length value of the WARC record header starting at ``record_start``."""
    match = re.compile(rb"\r\nContent-Length: *([^\r\n]*)\r\n").search(data, record_start)
    assert match is not None
    return data[: match.start(1)] + value + data[match.end(1) :]


def content_length(data: bytes, record_start: int) -> int:
    """The Content-Length of the WARC record header starting at ``record_start``."""
    match = re.compile(rb"\r\nContent-Length: *(\d+)\r\n").search(data, record_start)
    assert match is not None
    return int(match.group(1))


def regzip(members: list[bytes]) -> bytes:
    """Gzip each decompressed member on its own and concatenate (a per-record .warc.gz)."""
    return b"".join(gzip.compress(member, mtime=0) for member in members)


def _write_warc(path: Path, records: list[tuple[str, str | None, bytes]]) -> list[str]:
    """Write a per-record gzipped WARC of HTTP responses; return their record ids.

    ``records`` holds ``(url, content_type header or None, payload bytes)``.
    """
    ids = []
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, content_type, payload in records:
            headers = [("Content-Length", str(len(payload)))]
            if content_type is not None:
                headers.insert(0, ("Content-Type", content_type))
            http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(payload), http_headers=http
            )
            writer.write_record(record)
            ids.append(record.rec_headers.get_header("WARC-Record-ID").strip("<>"))
    return ids
