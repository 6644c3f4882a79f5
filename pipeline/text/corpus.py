"""Training text for the model-based filters: read documents from the usual file kinds.

``.jsonl`` / ``.jsonl.gz`` (a ``text`` field, else ``raw`` or ``content``), WARC files
(``.warc`` / ``.warc.gz``: HTML responses reduced to their main text, ``text/plain``
responses as they are) and plain text (optionally ``.gz`` / ``.bz2``: one document per
line). Also hashes files, so each model records exactly what it was trained on.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

JSON_TEXT_FIELDS = ("text", "raw", "content")


def expand_paths(patterns: Iterable[str]) -> list[str]:
    """Return the sorted files each pattern (a path or a glob) names, in argument order.

    Raises FileNotFoundError naming the first pattern that matches no file.
    """
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"{pattern!r} matches no file")
        files.extend(matches)
    return list(dict.fromkeys(files))


def _open_text(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if path.endswith(".bz2"):
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _is_warc(path: str) -> bool:
    return path.endswith((".warc", ".warc.gz", ".arc", ".arc.gz"))


def _is_jsonl(path: str) -> bool:
    return path.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".ndjson"))


def iter_warc_records(path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(url, text)`` for each response of a WARC file with a text payload.

    HTML payloads are reduced to their main content with resiliparse; ``text/plain``
    payloads are decoded as they are; other media types are skipped.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response):
            url = rec.headers.get("WARC-Target-URI") or ""
            ctype = (rec.http_headers.get("Content-Type") if rec.http_headers else "") or ""
            body = rec.reader.read()
            if "html" in ctype:
                html = bytes_to_str(body, detect_encoding(body))
                text = extract_plain_text(html, main_content=True)
            elif ctype.startswith("text/plain"):
                text = bytes_to_str(body, detect_encoding(body))
            else:
                continue
            yield url, text


def iter_texts(path: str | os.PathLike) -> Iterator[str]:
    """Yield the text of each document in ``path`` (see the module docstring for kinds)."""
    path = str(path)
    if _is_warc(path):
        for _, text in iter_warc_records(path):
            yield text
        return
    with _open_text(path) as f:
        if _is_jsonl(path):
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not JSON: {e}") from None
                for key in JSON_TEXT_FIELDS:
                    if isinstance(rec.get(key), str):
                        yield rec[key]
                        break
        else:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")


def iter_corpus(paths: Iterable[str]) -> Iterator[str]:
    """Yield the documents of every file in ``paths`` in order."""
    for p in paths:
        yield from iter_texts(p)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(paths: Iterable[str]) -> list[dict[str, object]]:
    """Return ``{"path", "bytes", "sha256"}`` for each file (what a model sidecar records)."""
    return [
        {"path": str(Path(p).resolve()), "bytes": os.path.getsize(p), "sha256": file_sha256(p)}
        for p in paths
    ]
