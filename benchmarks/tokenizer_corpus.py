"""Build a real-text benchmark corpus under /tmp from ../shared/data (never in the repo).

Documents, joined by `<|endoftext|>`: Wikipedia (wiki_ref + wiki_val), State of the Union
addresses, Moby Dick, SpamAssassin e-mails (raw, headers included), the webmix WARC pages
and trafilatura's evaluation pages as plain text (resiliparse), Tatoeba sentences in 84
languages. That is about 110 MB of distinct text; `--min-mb` above it repeats the documents
(in the same order) until the size is reached, which the results must say.

    python benchmarks/tokenizer_corpus.py --out /tmp/tok_corpus_100mb.txt --min-mb 100
"""

from __future__ import annotations

import argparse
import gzip
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EOT = "<|endoftext|>"


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)[field]


def _html_to_text(raw: bytes) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return extract_plain_text(bytes_to_str(raw, detect_encoding(raw)), main_content=False)


def _warc_pages(path: Path) -> Iterator[str]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response):
            body = record.reader.read()
            if record.http_content_type and "html" in record.http_content_type:
                yield _html_to_text(body)
            else:
                yield body.decode("utf-8", errors="replace")


def _tar_pages(path: Path) -> Iterator[str]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".html"):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield _html_to_text(handle.read())


def documents() -> Iterator[str]:
    """Every distinct real document of the corpus, in a fixed order."""
    yield from _jsonl(SHARED / "reference" / "wiki_ref.jsonl.gz", "text")
    yield from _jsonl(SHARED / "eval" / "wiki_val.jsonl.gz", "text")
    yield from _jsonl(SHARED / "reference" / "sotu_1790-2018_stdlib.jsonl.gz", "text")
    yield from _jsonl(SHARED / "reference" / "moby_dick_chapters_stdlib.jsonl.gz", "text")
    yield from _jsonl(SHARED / "noisy" / "spamassassin.jsonl.gz", "raw")
    for warc in sorted((SHARED / "webmix").glob("*.warc.gz")):
        yield from _warc_pages(warc)
    yield from _tar_pages(SHARED / "html" / "trafilatura_eval_html.tar.gz")
    lines = (SHARED / "langid" / "tatoeba_long_cld2.tsv").read_text(encoding="utf-8")
    yield "\n".join(line.split("\t")[3] for line in lines.splitlines()[1:])


def build_corpus(out: Path, min_bytes: int) -> dict[str, int]:
    """Write the corpus to `out` (EOT-joined, repeated until `min_bytes`); return its sizes."""
    docs = [d for d in documents() if d and d.strip()]
    distinct = sum(len(d.encode("utf-8")) for d in docs)
    written = rounds = 0
    with open(out, "w", encoding="utf-8") as handle:
        while written < min_bytes or rounds == 0:
            for doc in docs:
                data = doc + EOT
                handle.write(data)
                written += len(data.encode("utf-8"))
                if written >= min_bytes and rounds > 0:
                    break
            rounds += 1
    return {"bytes": written, "distinct_bytes": distinct, "documents": len(docs), "rounds": rounds}


def main() -> None:
    """CLI: build the corpus and print its sizes as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-mb", type=float, default=100)
    args = parser.parse_args()
    print(json.dumps(build_corpus(args.out, int(args.min_mb * 1e6))))


if __name__ == "__main__":
    main()
