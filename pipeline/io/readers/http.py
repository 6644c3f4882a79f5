"""HTTP payload helpers: content types, chunked transfer coding, content codings.

Archives disagree on what they store: wget keeps the chunked wire bytes, pywb and Common
Crawl store de-chunked / decompressed bodies but keep the original ``Transfer-Encoding`` /
``Content-Encoding`` headers, ClueWeb09 says ``gzip`` over plain HTML. So every decoding
here is attempted only when the bytes look encoded and falls back to the bytes as stored.
"""

from __future__ import annotations

import zlib

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/xhtml", "text/xhtml"})

_HTML_STARTS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<body",
    b"<?xml",
    b"<!--",
    b"<meta",
    b"<title",
)


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """Split a ``Content-Type`` value into ``(media_type, charset)``; media type lower-cased, '' if absent."""
    if not value:
        return "", None
    parts = value.split(";")
    media = parts[0].strip().lower()
    charset = None
    for param in parts[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media, charset


def sniff_html(head: bytes) -> bool:
    """True when the first bytes of a payload without a declared type look like HTML."""
    start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(_HTML_STARTS) or b"<html" in start


def looks_binary(head: bytes) -> bool:
    """True when ``head`` has NUL bytes or many control bytes (compressed or media data)."""
    sample = head[:1024]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return controls * 10 > len(sample)


def dechunk(body: bytes) -> bytes:
    """Undo HTTP chunked transfer coding if ``body`` is chunked; else return it unchanged.

    Takes the stored payload; returns the de-chunked bytes (a truncated last chunk keeps
    what is there; bytes after a broken chunk header are kept as stored).
    """
    out: list[bytes] = []
    pos, n = 0, len(body)
    while pos < n:
        eol = body.find(b"\n", pos, pos + 256)
        if eol < 0:
            break
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        if not size_field or not all(c in b"0123456789abcdefABCDEF" for c in size_field):
            break
        size = int(size_field, 16)
        if size == 0:
            return b"".join(out)
        start = eol + 1
        end = start + size
        if end >= n:
            out.append(body[start:])
            return b"".join(out)
        out.append(body[start:end])
        pos = end
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
    if not out:
        return body
    out.append(body[pos:])
    return b"".join(out)


def decode_content(body: bytes, coding: str, limit: int) -> tuple[bytes | None, str]:
    """Undo a ``Content-Encoding`` when the stored bytes are still encoded.

    Takes the payload, the header value and the most bytes to inflate (``limit``).
    Returns ``(bytes, "")`` on success or when the bytes are stored decoded, and
    ``(None, reason)`` with reason ``too_large`` (inflates past ``limit``) or
    ``content_encoding`` (encoded bytes we cannot decode).
    """
    coding = coding.strip().lower()
    if coding in ("", "identity", "none"):
        return body, ""
    if body[:2] == b"\x1f\x8b":
        wbits_options: tuple[int, ...] = (31,)
    elif body[:1] == b"\x78" and len(body) > 1 and (body[0] * 256 + body[1]) % 31 == 0:
        wbits_options = (15, -15)
    elif coding == "deflate" and looks_binary(body):
        wbits_options = (-15,)
    elif looks_binary(body):
        return None, "content_encoding"  # br, zstd, compress ... still encoded
    else:
        return body, ""  # stored decoded, header kept (Common Crawl, ClueWeb09)
    for wbits in wbits_options:
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            return None, "too_large"
        return out, ""
    return (None, "content_encoding") if looks_binary(body) else (body, "")
