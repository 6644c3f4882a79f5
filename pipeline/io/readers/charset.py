"""Decode HTML payload bytes to text without ever raising.

Order of evidence (first that decodes the bytes strictly wins):

1. a byte-order mark (UTF-8, UTF-16 LE/BE), as browsers do;
2. valid UTF-8, *before* a declared legacy charset: bytes with multi-byte UTF-8 sequences
   that decode cleanly are practically never real Latin-1/cp1251/Shift_JIS text, while
   pages whose HTTP header or ``<meta>`` says ``iso-8859-1`` but which are UTF-8 are common
   (strict cp1252 decoding of them "succeeds" and yields mojibake). Exception: 7-bit
   stateful encodings (ISO-2022-*, HZ) are valid ASCII, so a declared one is used first,
   and bytes containing ESC (ISO-2022 shift sequences) skip this shortcut;
3. the charset from the HTTP ``Content-Type`` header;
4. a ``<meta charset>`` / ``<meta http-equiv="Content-Type">`` in the first 4 KB;
5. uchardet's guess (:func:`resiliparse.parse.encoding.detect_encoding`);

and when nothing decodes strictly, the first candidate (else cp1252) with
``errors="replace"``. Labels are mapped the WHATWG way (``iso-8859-1`` and ``ascii`` are
windows-1252, ``gb2312`` is GBK, ...) and then to the Python codec that is a superset.
"""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

META_SCAN_BYTES = 4096

_META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:()+-]{1,40})""", re.IGNORECASE
)
# WHATWG decoders are supersets of the similarly named Python codecs.
_SUPERSET = {
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
}
_SEVEN_BIT = {"iso2022_jp", "iso2022_kr", "iso2022_jp_2", "hz"}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def normalize_charset(label: str | None) -> str | None:
    """Map a charset label from a header or meta tag to a Python text codec name, or None.

    Takes any label (quotes and spaces tolerated); returns None for unknown labels and for
    codecs that are not web text encodings (``base64``, ``unicode_escape``, UTF-7).
    """
    if not label:
        return None
    label = label.strip().strip("\"'").strip().lower()
    if not label:
        return None
    if label in ("hz-gb-2312", "hz"):
        return "hz"
    if label in ("iso-2022-kr", "csiso2022kr"):
        return "iso2022_kr"
    name = map_encoding_to_html5(label, fallback_utf8=False)
    if name is None:
        return None
    name = _SUPERSET.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return name


def meta_charset(head: bytes) -> str | None:
    """Return the normalized charset a ``<meta>`` tag declares in ``head`` (first 4 KB), or None."""
    for match in _META_CHARSET.finditer(head[:META_SCAN_BYTES]):
        name = normalize_charset(match.group(1).decode("ascii", "replace"))
        if name is not None:
            # A meta tag readable as ASCII cannot be in UTF-16; HTML5 says to use UTF-8.
            return "utf-8" if name.startswith("utf-16") else name
    return None


def _strict(body: bytes, encoding: str) -> str | None:
    try:
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(body: bytes, http_charset: str | None = None) -> tuple[str, str]:
    """Decode an HTML (or other text) payload; never raises.

    Takes the payload bytes and the raw charset label from the HTTP ``Content-Type`` header
    (or None). Returns ``(text, encoding)`` where ``encoding`` is the Python codec used
    (suffixed ``+replace`` when undecodable bytes were replaced by U+FFFD).
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            text = _strict(body[len(bom) :], name)
            if text is not None:
                return text, name
            return body[len(bom) :].decode(name, "replace"), name + "+replace"
    declared = normalize_charset(http_charset)
    if declared in _SEVEN_BIT:
        text = _strict(body, declared)
        if text is not None:
            return text, declared
    if b"\x1b" not in body:
        text = _strict(body, "utf-8")
        if text is not None:
            return text, "utf-8"
    candidates: list[str] = []
    for name in (declared, meta_charset(body)):
        if name is not None and name not in candidates:
            candidates.append(name)
    for name in candidates:
        text = _strict(body, name)
        if text is not None:
            return text, name
    try:
        guessed = normalize_charset(detect_encoding(body))
    except Exception:  # noqa: BLE001 - the detector must never take a document down
        guessed = None
    if guessed is not None and guessed not in candidates:
        text = _strict(body, guessed)
        if text is not None:
            return text, guessed
        candidates.append(guessed)
    name = candidates[0] if candidates else "cp1252"
    try:
        return body.decode(name, "replace"), name + "+replace"
    except LookupError:
        return body.decode("cp1252", "replace"), "cp1252+replace"
