"""HTML to main text, boilerplate removed.

Two extractors are supported, chosen by measurement (``benchmarks/extraction_eval.py``,
figures in ``benchmarks/RESULTS.md``):

* ``resiliparse`` (default): ``extract_plain_text(main_content=True)``; roughly ten times
  faster than trafilatura at the same main-content recall, but it leaves more boilerplate.
* ``trafilatura``: ``trafilatura.extract``; removes clearly more boilerplate, much slower.

:func:`html_to_text` runs an extractor in the calling process. :class:`ExtractionSandbox`
runs it in a long-lived child process with a per-document deadline, so a page that hangs
or explodes inside C code (where no Python signal can interrupt it) costs one document,
not the job: on timeout the child is killed and a fresh one is started.

Heavy libraries are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

ExtractorName = Literal["resiliparse", "trafilatura"]
EXTRACTORS: tuple[str, ...] = ("resiliparse", "trafilatura")
DEFAULT_EXTRACTOR: ExtractorName = "resiliparse"

#: ``extract_plain_text`` options. Measured on trafilatura's evaluation set: dropping
#: alt texts and comment sections removes more boilerplate at almost no cost in recall.
RESILIPARSE_OPTIONS: dict[str, object] = {
    "main_content": True,
    "preserve_formatting": True,
    "list_bullets": True,
    "alt_texts": False,
    "links": False,
    "form_fields": False,
    "noscript": False,
    "comments": False,
}

#: ``trafilatura.extract`` options: plain text, tables kept, user comments left out.
TRAFILATURA_OPTIONS: dict[str, object] = {
    "output_format": "txt",
    "include_comments": False,
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "with_metadata": False,
}

_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


class ExtractionTimeout(Exception):
    """The extractor did not finish one document within the deadline."""


class ExtractionError(Exception):
    """The extractor process died or answered with an error for one document."""


def decode_html(data: bytes) -> str:
    """Decode raw HTML bytes to ``str``.

    Valid UTF-8 is taken as UTF-8 (a stale ``<meta charset>`` is common on re-encoded
    pages, a false UTF-8 match on legacy-encoded text is rare). Otherwise the charset
    comes from the ``<meta>`` tag if present, else from resiliparse's uchardet-based
    detection; :func:`resiliparse.parse.encoding.bytes_to_str` then decodes with
    fallbacks, so the result is always a sane string.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    encoding = detect_encoding(data, from_html_meta=True)
    return bytes_to_str(data, encoding)


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8; return it and whether it was cut.

    The cut never splits a character. Cheap for the common case: a string of at most
    ``max_bytes // 4`` characters cannot exceed the limit and is not encoded at all.
    """
    if len(text) <= max_bytes // 4:
        return text, False
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", errors="ignore"), True


def _resiliparse(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLParserException

    try:
        return extract_plain_text(html, **RESILIPARSE_OPTIONS)
    except HTMLParserException:
        return ""


def _trafilatura(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, **TRAFILATURA_OPTIONS) or ""


_EXTRACT_FUNCS: dict[str, Callable[[str], str]] = {
    "resiliparse": _resiliparse,
    "trafilatura": _trafilatura,
}


def _tidy(text: str) -> str | None:
    """Strip trailing spaces, squeeze runs of blank lines; ``None`` if nothing is left."""
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text).strip()
    return text or None


def html_to_text(html: bytes | str, extractor: ExtractorName = DEFAULT_EXTRACTOR) -> str | None:
    """Return the main text of an HTML page, or ``None`` when nothing usable remains.

    ``html`` may be ``bytes`` (the encoding is detected, see :func:`decode_html`) or an
    already decoded ``str``. ``extractor`` is ``"resiliparse"`` or ``"trafilatura"``.
    Runs in the calling process with no time limit; see :class:`ExtractionSandbox`.
    """
    if extractor not in _EXTRACT_FUNCS:
        raise ValueError(f"unknown extractor {extractor!r}; choose one of {EXTRACTORS}")
    if isinstance(html, bytes | bytearray | memoryview):
        html = decode_html(bytes(html))
    if not html.strip():
        return None
    return _tidy(_EXTRACT_FUNCS[extractor](html))


# --- sandboxed extraction -------------------------------------------------------------
#
# Wire format, both directions over pipes: a 5-byte header (status byte, big-endian
# uint32 length) then ``length`` bytes of UTF-8. Requests use status 0. Replies use
# _OK (text follows), _NONE (nothing usable) or _ERR (error message follows).

_HEADER = struct.Struct(">BI")
_OK, _NONE, _ERR = 1, 2, 3
_REPO_ROOT = str(Path(__file__).resolve().parents[3])


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    """Read exactly ``n`` bytes from a blocking stream; ``None`` on end of file."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve(extractor: str) -> None:
    """Child-process loop: read HTML requests on stdin, write replies; exit on EOF.

    The real stdout is kept for replies and fd 1 is pointed at stderr, so a library that
    prints cannot corrupt the protocol.
    """
    import logging

    logging.basicConfig(level=logging.ERROR)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    html_to_text("<html><body><p>warm-up</p></body></html>", extractor)  # type: ignore[arg-type]
    out.write(_HEADER.pack(_NONE, 0))  # ready: imports done, outside any page's deadline
    while True:
        header = _read_exact(stdin, _HEADER.size)
        if header is None:
            return
        _, length = _HEADER.unpack(header)
        payload = _read_exact(stdin, length)
        if payload is None:
            return
        try:
            text = html_to_text(payload.decode("utf-8", errors="replace"), extractor)  # type: ignore[arg-type]
        except Exception as exc:  # report to the parent, which drops this one document
            status, body = _ERR, f"{type(exc).__name__}: {exc}".encode(errors="replace")
        else:
            status, body = (_NONE, b"") if text is None else (_OK, text.encode("utf-8", "replace"))
        out.write(_HEADER.pack(status, len(body)) + body)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class ExtractionSandbox:
    """Runs :func:`html_to_text` in a child process with a per-document deadline.

    The child is a plain ``python -c`` subprocess (not ``multiprocessing``, which would
    re-import the parent's ``__main__``: awkward inside Ray workers). It starts on the
    first document and stays up between documents; each round trip costs one pipe write
    and read. If a document is not done within ``timeout_seconds`` the child is killed
    (SIGKILL, so even a loop inside C code stops), :class:`ExtractionTimeout` is raised
    and the next document starts a new child. A child that dies raises
    :class:`ExtractionError` the same way.
    """

    #: seconds the child may take to start and import its extractor
    startup_timeout_seconds: float = 120.0

    def __init__(self, extractor: ExtractorName = DEFAULT_EXTRACTOR, timeout_seconds: float = 10.0):
        if extractor not in _EXTRACT_FUNCS:
            raise ValueError(f"unknown extractor {extractor!r}; choose one of {EXTRACTORS}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.extractor = extractor
        self.timeout_seconds = timeout_seconds
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._owner_pid = os.getpid()

    def start(self) -> None:
        """Start the child process if it is not running; wait until its extractor is loaded."""
        if self._owner_pid != os.getpid():
            # this object was copied into a forked process: the child's pipes belong to
            # the parent, so leave that child alone and start one of our own
            if self._finalizer is not None:
                self._finalizer.detach()
            self._proc, self._finalizer, self._owner_pid = None, None, os.getpid()
        if self._proc is not None and self._proc.poll() is None:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        code = "import sys; from pipeline.text.extract import serve; serve(sys.argv[1])"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, self.extractor],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_seconds
        try:
            self._recv_exact(self._proc.stdout.fileno(), _HEADER.size, deadline)
        except (ExtractionTimeout, ExtractionError) as exc:
            self.close()
            raise ExtractionError(f"extractor process did not start: {exc}") from exc

    def close(self) -> None:
        """Stop the child process (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None
        self._finalizer = None

    def __enter__(self) -> ExtractionSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv_exact(self, fd: int, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ExtractionTimeout(f"no result within {self.timeout_seconds} s")
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise ExtractionError("extractor process exited")
            buf += chunk
        return bytes(buf)

    def extract(self, html: str | bytes) -> str | None:
        """Like :func:`html_to_text`, but time-limited; raises on timeout or crash.

        The deadline covers sending the page, extracting and reading the answer.
        """
        if isinstance(html, bytes | bytearray | memoryview):
            html = decode_html(bytes(html))
        payload = html.encode("utf-8", errors="replace")
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout_seconds
        try:
            proc.stdin.write(_HEADER.pack(0, len(payload)) + payload)
            fd = proc.stdout.fileno()
            status, length = _HEADER.unpack(self._recv_exact(fd, _HEADER.size, deadline))
            body = self._recv_exact(fd, length, deadline)
        except (ExtractionTimeout, ExtractionError, OSError) as exc:
            self.close()
            self.restarts += 1
            if isinstance(exc, ExtractionTimeout):
                raise
            raise ExtractionError(f"extractor process failed: {exc}") from exc
        if status == _OK:
            return body.decode("utf-8")
        if status == _NONE:
            return None
        raise ExtractionError(body.decode("utf-8", errors="replace"))


_SHARED_SANDBOXES: dict[tuple[str, float], ExtractionSandbox] = {}


def shared_sandbox(
    extractor: ExtractorName = DEFAULT_EXTRACTOR, timeout_seconds: float = 10.0
) -> ExtractionSandbox:
    """One started sandbox per (extractor, timeout) and process.

    The runner builds fresh step objects for every shard it processes; sharing the child
    process spares each shard the child's start-up (interpreter plus extractor imports).
    The child stops when this process exits (or when it sees end of input on stdin).
    """
    key = (extractor, float(timeout_seconds))
    sandbox = _SHARED_SANDBOXES.get(key)
    if sandbox is None:
        sandbox = _SHARED_SANDBOXES[key] = ExtractionSandbox(extractor, timeout_seconds)
    sandbox.start()
    return sandbox

