"""WARC, WET (FastWARC) and ARC (warcio) readers that survive damaged archives.

WARC: ``response`` records become documents (HTML only unless ``html_only`` is off); every
other record type is counted as ``skipped:<type>``. WET: ``conversion`` records become
``text/plain`` documents. WAT files are WARCs of ``metadata`` records, so they yield none.
ARC: FastWARC cannot parse ARC, so warcio reads it (without ``arc2warc``, whose generated
record ids are random); a document's id is ``<basename>:<offset of its record>``.

Damage never ends the job. A read error (bad gzip CRC or data, unparsable record header)
is counted as ``error:<kind>`` and reading resumes at the next gzip member or ``WARC/``
line after the last good record. A short payload is ``error:truncated``. A Content-Length
that is not a number, that is too small (the record goes on after it), or that is too
large (it runs over the following records, or past the end of the file, in the middle of
it) is ``error:bad_content_length``: the record is dropped and reading resumes at the
first record it ran over, so every intact record after it is still read. After the last
record, the rest of the file is checked: an incomplete gzip member is ``error:truncated``
and bytes that are not records are ``error:trailing_garbage``.

Kept documents whose payload was not valid in its charset are counted as
``decode:replaced_invalid_<codec>`` (their text holds U+FFFD there, as before); payloads
over ``max_doc_bytes`` are ``skipped:too_large`` with a warning line (the first few of a file).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecordType
from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers.charset import decode_html
from pipeline.io.readers.common import (
    Reader,
    ReadOptions,
    count_replaced,
    count_skip,
    emit,
    report_error,
    skip_too_large,
)
from pipeline.io.readers.http import (
    HTML_TYPES,
    dechunk,
    decode_content,
    parse_content_type,
    sniff_html,
)

_GZIP_MAGIC = b"\x1f\x8b\x08"
_RESYNC = re.compile(rb"\x1f\x8b\x08|(?<=\n)WARC/[01]\.\d")
_WARC_LINE = re.compile(rb"WARC/[01]\.\d+\r?\n")
_HDR_FIELD = re.compile(rb"(?im)^(WARC-Type|Content-Length):")
_CONTENT_LENGTH = re.compile(rb"(?im)^Content-Length:[ \t]*(\d+)[ \t]*\r?$")
_SCAN_CHUNK = 1 << 20
_MAX_HEADER = 64 << 10
_HEADER_PROBE = 16 << 10  # bytes read (or inflated) to tell whether a record starts there

_TYPE_NAMES = {
    int(WarcRecordType.warcinfo): "warcinfo",
    int(WarcRecordType.response): "response",
    int(WarcRecordType.resource): "resource",
    int(WarcRecordType.request): "request",
    int(WarcRecordType.metadata): "metadata",
    int(WarcRecordType.revisit): "revisit",
    int(WarcRecordType.conversion): "conversion",
    int(WarcRecordType.continuation): "continuation",
}


class _Damage(Exception):
    """Damage found by a check (not raised by a library): report it, maybe resume at ``resume``.

    ``drop``: the record at ``offset`` is itself bad, so documents read from it (not yet
    emitted) are dropped.
    """

    def __init__(self, kind: str, offset: int, detail: str, resume: int | None,
                 drop: bool = False) -> None:
        super().__init__(detail)
        self.kind, self.offset, self.detail, self.resume = kind, offset, detail, resume
        self.drop = drop


def _classify(exc: BaseException) -> str:
    msg = str(exc).lower()
    if any(word in msg for word in ("gzip", "zlib", "decompress", "crc", "deflate")):
        return "corrupt_gzip"
    if "header" in msg or "archive format" in msg or "warc" in msg:
        return "bad_record_header"
    return "read_error"


def _record_id(value: str | None, source: str, offset: int) -> str:
    rid = (value or "").strip()
    if rid.startswith("<") and rid.endswith(">"):
        rid = rid[1:-1].strip()
    return rid or f"{source}:{offset}"


def target_uri(value: str | None) -> str | None:
    """Return a WARC-Target-URI without whitespace and the ``<...>`` wrapping wget writes."""
    if value is None:
        return None
    uri = value.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri or None


def _is_record_header(head: bytes) -> bool:
    """True when ``head`` starts with a WARC record header: a ``WARC/x.y`` line, then
    (before the blank line that ends the header) both ``WARC-Type`` and ``Content-Length``."""
    if not _WARC_LINE.match(head):
        return False
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    block = head if end < 0 else head[:end]
    return len({m.group(1).lower() for m in _HDR_FIELD.finditer(block)}) == 2


class _ArchiveReader:
    """Reads one WARC/WET/ARC file for :func:`read_archive`; holds the resync state."""

    def __init__(self, path: str, fmt: str, options: ReadOptions, stats: StepStats) -> None:
        self.path, self.fmt, self.options, self.stats = path, fmt, options, stats
        self.source = os.path.basename(path)
        self.want = int(WarcRecordType.conversion if fmt == "wet" else WarcRecordType.response)
        self.fd = -1
        self.size = 0
        self.plain = False  # uncompressed file: record offsets are byte offsets
        self.truncation_reported_at = -1

    # ----------------------------------------------------------------- driver

    def documents(self) -> Iterator[Document]:
        """Yield the documents of the file, resuming after damage; see the module docstring."""
        with open(self.path, "rb") as fh:
            self.fd = fh.fileno()
            self.size = os.fstat(self.fd).st_size
            if self.size == 0:
                report_error(self.stats, self.path, "empty_file", 0, "file is empty")
                return
            self.plain = os.pread(self.fd, 2, 0) != b"\x1f\x8b"
            records: Callable[[BinaryIO, int], Iterator[tuple[int, Any]]]
            if self.fmt == "arc":
                records, handle = self._warcio_records, self._handle_arc
            else:
                records, handle = self._fastwarc_records, self._handle_warc
            yield from self._drive(fh, records, handle)

    def _drive(
        self,
        fh: BinaryIO,
        records: Callable[[BinaryIO, int], Iterator[tuple[int, Any]]],
        handle: Callable[[Any, int], Iterator[Document]],
    ) -> Iterator[Document]:
        """Iterate records, resuming after damage; emit a record's documents one record late.

        The lag matters for per-record gzip: the library verifies a member's CRC only once
        it has inflated the member to its end, which happens when it moves on to the next
        record. A document is emitted only after that; if the check fails, the documents
        of a member that does not inflate cleanly are dropped with the error. The next
        record's offset also shows whether the library skipped a gzip member that holds a
        record (the previous record's Content-Length ran into it): that record is then
        dropped and reading resumes at the skipped member.
        """
        start = 0
        last = -1  # offset of the last record handled
        floor = -1  # a resume offset must be above this, so every loop makes progress
        fresh = True  # a failure now is new damage, not a resync attempt that missed
        pending: list[Document] = []  # documents of the record at ``pending_at``
        pending_at = -1
        while True:
            fh.seek(start)
            resume: int | None
            got = 0
            previous = -1  # offset of the previous record read since ``start``
            try:
                for offset, rec in records(fh, start):
                    if previous >= 0 and self.fmt != "arc":
                        skipped = self._skipped_member(previous, offset)
                        if skipped is not None:
                            pending = []
                            detail = ("Content-Length runs past the record's gzip member into "
                                      f"the record at byte {skipped}")
                            raise _Damage("bad_content_length", previous, detail, skipped)
                    for doc in pending:
                        yield emit(self.stats, doc)
                    pending = []
                    # offsets only grow; records of a one-stream .gz may share one (a
                    # buffer position), so equal offsets are normal, not a replay
                    last = max(last, offset)
                    got += 1
                    if got == 1 and start > 0:
                        self.stats.counters["resynced"] += 1
                    fresh = True
                    previous = offset
                    if self.plain and self.fmt != "arc":
                        self._check_overrun(offset)
                    pending, pending_at = list(handle(rec, offset)), offset
                if got == 0 and start > 0:
                    problem = None  # a resync candidate that holds no record: try the next
                    resume = self._next_candidate(start + 1)
                else:
                    problem = self._tail_check(last)
                    if problem is None:
                        for doc in pending:
                            yield emit(self.stats, doc)
                        return
                if problem is not None:
                    raise problem
            except _Damage as dmg:
                report_error(self.stats, self.path, dmg.kind, dmg.offset, dmg.detail)
                resume = dmg.resume
                if dmg.drop and dmg.offset == pending_at:
                    pending = []
            except Exception as exc:  # the archive libraries raise OSError, ValueError, ...
                at = max(last, start)
                if fresh:
                    detail = f"{type(exc).__name__}: {exc} (in or after the record at this offset)"
                    report_error(self.stats, self.path, self._diagnose(exc, at), at, detail)
                resume = self._next_candidate(at + 1)
            if pending and self._member_ok(pending_at):
                for doc in pending:
                    yield emit(self.stats, doc)
            pending = []
            fresh = False
            if resume is None or resume <= floor or resume <= last:
                return
            floor = start = resume

    def _member_ok(self, offset: int) -> bool:
        """False when the gzip member at ``offset`` does not inflate cleanly to its end."""
        if self.plain or os.pread(self.fd, 3, offset) != _GZIP_MAGIC:
            return True  # uncompressed, or one gzip stream: nothing to check per record
        return _gzip_members(self.fd, offset, self.size, limit=1)[0].status == "ok"

    def _fastwarc_records(self, fh: BinaryIO, start: int) -> Iterator[tuple[int, Any]]:
        for rec in ArchiveIterator(fh, parse_http=False, quirks_mode=True):
            yield rec.stream_pos, rec

    def _warcio_records(self, fh: BinaryIO, start: int) -> Iterator[tuple[int, Any]]:
        it = WarcioIterator(fh)
        for rec in it:
            # ``it.offset`` is where this record starts: 0 for the first record of an
            # iterator, then absolute (warcio derives it from ``fh.tell()``).
            # get_record_offset() would read the payload away before we see it.
            yield it.offset or start, rec

    def _next_candidate(self, pos: int) -> int | None:
        """Offset of the first gzip member or ``WARC/`` line start at or after ``pos``, or None."""
        while pos < self.size:
            before = os.pread(self.fd, 1, pos - 1) if pos > 0 else b"\n"
            chunk = os.pread(self.fd, _SCAN_CHUNK + 16, pos)
            if not chunk:
                return None
            match = _RESYNC.search(before + chunk, 1)
            if match is not None:
                return pos + match.start() - 1
            pos += _SCAN_CHUNK
        return None

    # ------------------------------------------- Content-Length that runs over

    def _plain_extent(self, offset: int) -> tuple[int, int] | None:
        """``(payload start, declared end)`` of the record at ``offset`` of an uncompressed
        file, from its header; None when the header has no end or no numeric Content-Length."""
        head = os.pread(self.fd, _MAX_HEADER, offset)
        end, sep = head.find(b"\r\n\r\n"), 4
        if end < 0:
            end, sep = head.find(b"\n\n"), 2
        if end < 0:
            return None
        match = _CONTENT_LENGTH.search(head, 0, end)
        if match is None:
            return None
        body = offset + end + sep
        return body, body + int(match.group(1))

    def _check_overrun(self, offset: int) -> None:
        """Uncompressed file: raise when the record at ``offset`` runs over a later record.

        A record that ends where its Content-Length says (before the next ``WARC/`` line or
        the end of the file) costs two small reads. Otherwise its declared extent is
        searched for the header of a record it ran over; reading resumes there, so a
        Content-Length made too large (even past the end of the file) loses no other record.
        """
        extent = self._plain_extent(offset)
        if extent is None:
            return
        body, end = extent
        if end <= self.size:
            after = os.pread(self.fd, 64, end).lstrip(b"\r\n")
            if not after or after.startswith(b"WARC/"):
                return
        inner = self._record_start_in(body - 1, min(end, self.size))
        if inner is not None:
            detail = (f"Content-Length {end - body} runs over the record at byte {inner}"
                      + (" and past the end of the file" if end > self.size else ""))
            raise _Damage("bad_content_length", offset, detail, inner, drop=True)

    def _record_start_in(self, lo: int, hi: int) -> int | None:
        """Uncompressed file: offset of the first WARC record header that starts a line in
        ``(lo, hi)``, or None."""
        pos = lo
        while pos < hi:
            chunk = os.pread(self.fd, min(_SCAN_CHUNK, hi - pos) + 8, pos)
            i = chunk.find(b"\nWARC/")
            while i >= 0 and pos + i + 1 < hi:
                if _is_record_header(os.pread(self.fd, _HEADER_PROBE, pos + i + 1)):
                    return pos + i + 1
                i = chunk.find(b"\nWARC/", i + 1)
            pos += _SCAN_CHUNK
        return None

    def _skipped_member(self, previous: int, offset: int) -> int | None:
        """Per-record gzip file: a gzip member strictly between the records at ``previous``
        and ``offset`` that holds a record of its own, or None.

        Consecutive records are consecutive members, so one in between was skipped by the
        library: the record at ``previous`` declared a Content-Length that ran into it. The
        check scans the compressed bytes of one record for the gzip magic (a chance match
        inside deflate data does not inflate to a WARC header).
        """
        if self.plain or offset <= previous + 1 or os.pread(self.fd, 3, previous) != _GZIP_MAGIC:
            return None
        pos = previous + 1
        while pos < offset:
            chunk = os.pread(self.fd, min(_SCAN_CHUNK, offset - pos) + 2, pos)
            i = chunk.find(_GZIP_MAGIC)
            while i >= 0 and pos + i < offset:
                if self._member_holds_record(pos + i):
                    return pos + i
                i = chunk.find(_GZIP_MAGIC, i + 1)
            pos += _SCAN_CHUNK
        return None

    def _member_holds_record(self, at: int) -> bool:
        """True when a gzip member starts at ``at`` and inflates to a WARC record header."""
        try:
            head = zlib.decompressobj(31).decompress(
                os.pread(self.fd, _HEADER_PROBE, at), _HEADER_PROBE
            )
        except zlib.error:
            return False
        return _is_record_header(head)

    # ------------------------------------------------------------ tail check

    def _tail_check(self, last: int) -> _Damage | None:
        """Look at the bytes from the last record to the end of the file for damage."""
        if self.fmt == "arc":
            return None  # warcio raises on incomplete members and trailing bytes itself
        if last < 0:
            rest = os.pread(self.fd, 4096, 0)
            if rest.strip():
                return _Damage("no_records", 0, "no WARC record found in the file", None)
            return None
        if self.plain:
            return self._tail_check_plain(last)
        if os.pread(self.fd, 3, last) != _GZIP_MAGIC:
            return None  # one gzip stream for the whole file: offsets are not members
        return self._tail_check_gzip(last)

    def _tail_check_plain(self, last: int) -> _Damage | None:
        extent = self._plain_extent(last)
        if extent is None:
            return None
        record_end = extent[1]
        if record_end > self.size:
            if self.truncation_reported_at == last:
                return None
            return _Damage("truncated", last, "last record ends past the end of the file", None)
        rest = os.pread(self.fd, 4096, record_end)
        if not rest.strip() and self.size - record_end <= 4096:
            return None
        resume = self._next_candidate(record_end)
        detail = f"{self.size - record_end} bytes after the last record are not WARC records"
        return _Damage("trailing_garbage", record_end, detail, resume)

    def _tail_check_gzip(self, last: int) -> _Damage | None:
        members = _gzip_members(self.fd, last, self.size)
        first = members[0]
        if first.status != "ok":
            if self.truncation_reported_at == last:
                return None
            kind = _DIAGNOSIS[first.status]
            return _Damage(
                kind, last, f"the gzip member of the last record is {first.status}", None
            )
        end = first.head.find(b"\r\n\r\n")
        match = _CONTENT_LENGTH.search(first.head, 0, max(end, 0))
        if end > 0 and match is not None and len(members) > 1:
            if first.out_len < end + 4 + int(match.group(1)):
                detail = (
                    f"record declares {match.group(1).decode()} bytes but its gzip member "
                    f"holds {first.out_len - end - 4}; the following members were swallowed"
                )
                return _Damage("bad_content_length", last, detail, members[1].start, drop=True)
        for member in members[1:]:
            if member.status == "garbage":
                detail = (
                    f"{self.size - member.start} bytes after the last gzip member are not gzip data"
                )
                resume = self._next_candidate(member.start + 1)
                return _Damage("trailing_garbage", member.start, detail, resume)
            if member.status != "ok":
                detail = f"{member.status} gzip member after the last record"
                return _Damage(_DIAGNOSIS[member.status], member.start, detail, None)
        if len(members) > 1:
            start = members[1].start
            return _Damage("unparsed_data", start, "gzip members were not read", start)
        return None

    def _diagnose(self, exc: BaseException, at: int) -> str:
        """Name the damage behind a library exception raised at or after offset ``at``.

        For gzip files the members from ``at`` on are inflated again (a few at most) to
        tell a truncated file from corrupt data, since the libraries' messages do not.
        """
        if not self.plain and os.pread(self.fd, 3, at) == _GZIP_MAGIC:
            for member in _gzip_members(self.fd, at, self.size, limit=4):
                if member.status == "garbage" and self._next_candidate(member.start) is None:
                    return "trailing_garbage"
                if member.status != "ok":
                    return _DIAGNOSIS[member.status]
        return _classify(exc)

    # -------------------------------------------------------- record handling

    def _check_extent(self, rec: Any, offset: int) -> None:
        """In an uncompressed file, a record may not claim more bytes than the file holds."""
        if self.plain and offset + rec.content_length > self.size:
            resume = self._next_candidate(offset + 1)
            kind = "bad_content_length" if resume is not None else "truncated"
            detail = f"Content-Length {rec.content_length} runs past the end of the file"
            if resume is None:
                self.truncation_reported_at = offset
            raise _Damage(kind, offset, detail, resume)

    def _handle_warc(self, rec: Any, offset: int) -> Iterator[Document]:
        rtype = int(rec.record_type)
        if rtype != self.want:
            count_skip(self.stats, _TYPE_NAMES.get(rtype, "unknown"))
            self._check_extent(rec, offset)
            return
        self.stats.docs_in += 1
        declared = rec.headers.get("Content-Length")
        if declared is None or not (declared.strip().isascii() and declared.strip().isdigit()):
            detail = f"Content-Length {declared!r} is not a byte count"
            report_error(self.stats, self.path, "bad_content_length", offset, detail)
            return
        self._check_extent(rec, offset)
        source, options = self.source, self.options
        rid = _record_id(rec.record_id, source, offset)
        url = target_uri(rec.headers.get("WARC-Target-URI"))
        where = f"at byte {offset} ({url or rid})"
        if self.fmt == "wet":
            if rec.content_length > options.max_doc_bytes:
                skip_too_large(self.stats, self.path, where, f"{rec.content_length} bytes",
                               options.max_doc_bytes)
                return
            body = rec.reader.read()
            if len(body) < rec.content_length:
                self._truncated(offset, len(body), rec.content_length)
                return
            if not self._ends_where_declared(offset, int(declared)):
                return
            if not body:
                count_skip(self.stats, "empty")
                return
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = body.decode("utf-8", "replace")
                count_replaced(self.stats, "utf-8")
            yield Document(rid, text, url, "text/plain", source)
            return
        te = ce = None
        if rec.is_http:
            rec.parse_http(quirks_mode=True)
            headers = rec.http_headers
            status = headers.status_code
            if status is not None:
                self.stats.counters[f"http_status:{status}"] += 1
            media, charset = parse_content_type(headers.get("Content-Type"))
            te = headers.get("Transfer-Encoding")
            ce = headers.get("Content-Encoding")
        else:
            media, charset = parse_content_type(rec.headers.get("Content-Type"))
        length = rec.content_length
        if not self._payload_wanted(media, length, where):
            return
        body = rec.reader.read()
        if len(body) < length:
            self._truncated(offset, len(body), length)
            return
        if not self._ends_where_declared(offset, int(declared)):
            return
        doc = self._document(body, media, charset, te, ce, rid, url, where)
        if doc is not None:
            yield doc

    def _payload_wanted(self, media: str | None, length: int, where: str) -> bool:
        """False (and counted as skipped) for non-HTML payloads under ``html_only`` and
        payloads over ``max_doc_bytes``; True when the payload should be read."""
        options = self.options
        if options.html_only and media and media not in HTML_TYPES:
            count_skip(self.stats, "non_html")
            return False
        if length > options.max_doc_bytes:
            skip_too_large(self.stats, self.path, where, f"{length} bytes", options.max_doc_bytes)
            return False
        return True

    def _ends_where_declared(self, offset: int, block_len: int) -> bool:
        """In an uncompressed file, check that the record ends where Content-Length says.

        Bytes inserted into a payload, or a Content-Length that is too small, leave the
        declared end inside the record; FastWARC skips to the next ``WARC/`` line without
        a word, so the record would be read short. Counted as ``error:bad_content_length``.
        (A Content-Length too large was caught before, by :meth:`_check_overrun`.)
        """
        if not self.plain:
            return True
        extent = self._plain_extent(offset)
        if extent is None:
            return True
        after = os.pread(self.fd, 64, extent[0] + block_len).lstrip(b"\r\n")
        if not after or after.startswith(b"WARC/"):
            return True
        detail = f"the record does not end after its Content-Length ({block_len}) bytes"
        report_error(self.stats, self.path, "bad_content_length", offset, detail)
        return False

    def _truncated(self, offset: int, got: int, want: int) -> None:
        """Count a payload shorter than its Content-Length: ``error:truncated`` at the end of
        the file; in a per-record gzip file whose record runs on into the next gzip member,
        raise ``bad_content_length`` to resume at that member."""
        if not self.plain and os.pread(self.fd, 3, offset) == _GZIP_MAGIC:
            members = _gzip_members(self.fd, offset, self.size, limit=2)
            if len(members) == 2 and members[0].status == "ok":
                detail = (f"Content-Length {want} runs past the record's gzip member into "
                          f"the one at byte {members[1].start}")
                raise _Damage("bad_content_length", offset, detail, members[1].start,
                              drop=True)
        detail = f"payload has {got} of {want} bytes"
        report_error(self.stats, self.path, "truncated", offset, detail)
        self.truncation_reported_at = offset

    def _handle_arc(self, rec: Any, offset: int) -> Iterator[Document]:
        if rec.rec_type != "response":
            count_skip(self.stats, str(rec.rec_type))
            return
        self.stats.docs_in += 1
        url = target_uri(rec.rec_headers.get_header("uri"))
        http = rec.http_headers
        te = ce = None
        header_len = 0
        if http is not None:
            status = http.get_statuscode()
            if status:
                self.stats.counters[f"http_status:{status}"] += 1
            media, charset = parse_content_type(http.get_header("Content-Type"))
            te = http.get_header("Transfer-Encoding")
            ce = http.get_header("Content-Encoding")
            header_len = http.total_len
        else:
            media, charset = parse_content_type(rec.rec_headers.get_header("content-type"))
        length = max(rec.length - header_len, 0)
        rid = f"{self.source}:{offset}"
        where = f"at byte {offset} ({url or rid})"
        if not self._payload_wanted(media, length, where):
            return
        body = rec.raw_stream.read()
        if len(body) < length:
            self._truncated(offset, len(body), length)
            return
        doc = self._document(body, media, charset, te, ce, rid, url, where)
        if doc is not None:
            yield doc

    def _document(
        self,
        body: bytes,
        media: str,
        charset: str | None,
        te: str | None,
        ce: str | None,
        rid: str,
        url: str | None,
        where: str,
    ) -> Document | None:
        """Turn a response payload into a document, or count why not and return None."""
        stats, options = self.stats, self.options
        limit = options.max_doc_bytes
        if te and "chunked" in te.lower():
            body = dechunk(body)
        if ce:
            decoded, reason = decode_content(body, ce, limit)
            if decoded is None:
                if reason == "too_large":
                    skip_too_large(stats, self.path, where,
                                   f"more than {limit} bytes once {ce.strip()}-decoded", limit)
                else:
                    count_skip(stats, reason)
                return None
            body = decoded
        if not body:
            count_skip(stats, "empty")
            return None
        if len(body) > limit:
            skip_too_large(stats, self.path, where, f"{len(body)} bytes", limit)
            return None
        if not media:
            if sniff_html(body):
                media = "text/html"
            elif options.html_only:
                count_skip(stats, "non_html")
                return None
            else:
                media = "application/octet-stream"
        text, used = decode_html(body, charset)
        if used.endswith("+replace"):
            count_replaced(stats, used[: -len("+replace")])
        return Document(rid, text, url, media, self.source)


@dataclass(frozen=True)
class _Member:
    """One gzip member (or the non-gzip bytes where one should start) of a file."""

    start: int
    status: str  # "ok", "incomplete" (file ends inside it), "corrupt" (zlib error), "garbage"
    out_len: int = 0
    head: bytes = b""


def _gzip_members(fd: int, pos: int, size: int, limit: int = 1 << 30) -> list[_Member]:
    """Walk (at most ``limit``) gzip members from ``pos``; stop at the first bad one.

    The last entry may be ``incomplete``, ``corrupt`` or ``garbage`` (bytes that are not a
    gzip member, other than NUL/whitespace padding at the very end).
    """
    members: list[_Member] = []
    while pos < size and len(members) < limit:
        if os.pread(fd, 3, pos) != _GZIP_MAGIC:
            tail = os.pread(fd, 4096, pos)
            if tail.strip(b"\x00 \t\r\n") or size - pos > 4096:
                members.append(_Member(pos, "garbage"))
            break
        inflater = zlib.decompressobj(31)
        read_at, out_len, head = pos, 0, b""
        try:
            while not inflater.eof and read_at < size:
                chunk = os.pread(fd, _SCAN_CHUNK, read_at)
                read_at += len(chunk)
                out = inflater.decompress(chunk)
                while inflater.unconsumed_tail and not inflater.eof:
                    out += inflater.decompress(inflater.unconsumed_tail)
                out_len += len(out)
                if len(head) < _MAX_HEADER:
                    head += out[: _MAX_HEADER - len(head)]
        except zlib.error:
            members.append(_Member(pos, "corrupt", out_len, head))
            break
        if not inflater.eof:
            members.append(_Member(pos, "incomplete", out_len, head))
            break
        members.append(_Member(pos, "ok", out_len, head))
        pos = read_at - len(inflater.unused_data)
    return members


_DIAGNOSIS = {"incomplete": "truncated", "corrupt": "corrupt_gzip", "garbage": "garbage"}


def read_archive(path: str, fmt: str, options: ReadOptions, stats: StepStats) -> Iterator[Document]:
    """Yield the documents of one WARC, WET or ARC file (``fmt``: warc, wet or arc).

    Takes the path, the format, the Read options and the stats to count into; counts
    ``docs_in`` (response or conversion records seen), ``docs_out``/``chars_out``,
    ``skipped:<kind>``, ``error:<kind>`` and ``http_status:<code>``.
    """
    yield from _ArchiveReader(path, fmt, options, stats).documents()


def _read(path: str, fmt: str, split: int, n_splits: int, options: ReadOptions,
          stats: StepStats) -> Iterator[Document]:
    return read_archive(path, fmt, options, stats)


# ".warc.wat.gz" is WAT metadata in a WARC container, read as WARC (it yields no documents).
READERS = (
    Reader("warc", (".warc.gz", ".warc", ".warc.wat.gz", ".wat.gz", ".wat"), _read),
    Reader("wet", (".warc.wet.gz", ".wet.gz", ".wet"), _read),
    Reader("arc", (".arc.gz", ".arc"), _read),
)

