"""``job: tokenizer``: train the BPE tokenizer on documents that a crawl job wrote.

The job reads extracted text (Parquet from a crawl job, JSONL, WET) through the pipeline's
readers, writes at most ``max_bytes`` of it as one corpus file with the end-of-text token
between documents (so no merge crosses a document boundary), trains with
:func:`tokenizer.train_bpe` and saves every format into ``output``. A rerun with the same
options and a finished tokenizer does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from pipeline.core.config import JobConfigError, _format_validation_error, expand_inputs
from pipeline.core.step import StepOptions, StepStats
from pipeline.io.atomic import atomic_write_json

KIND = "tokenizer"


class TokenizerJob(StepOptions):
    """A validated tokenizer job."""

    job: Literal["tokenizer"] = "tokenizer"
    name: str = "tokenizer"
    inputs: list[str] = Field(min_length=1, description="extracted text: Parquet, JSONL or WET")
    output: str
    vocab_size: int = Field(32_000, ge=257)
    special_tokens: list[str] = Field(default_factory=lambda: ["<|endoftext|>"], min_length=1)
    pattern: str = Field("gpt2", description="gpt2, cl100k, o200k or a regex")
    max_bytes: int = Field(1_000_000_000, gt=0, description="corpus cap in UTF-8 bytes")
    text_field: str = "text"


def write_corpus(files: list[str], text_field: str, separator: str, path: Path,
                 max_bytes: int) -> tuple[int, int]:
    """Write the documents of ``files`` to ``path`` separated by ``separator``.

    Stops after ``max_bytes``; returns (documents, bytes) written. WARC/ARC inputs are
    refused: their documents are HTML until a crawl job has extracted them.
    """
    from pipeline.io.readers import ReadOptions, read_shard, resolve_format

    options = ReadOptions(text_field=text_field)
    docs = written = 0
    with open(path, "w", encoding="utf-8") as out:
        for file in files:
            fmt = resolve_format(file, options)
            if fmt in ("warc", "arc"):
                raise JobConfigError(
                    f"inputs: {file} holds HTML; train the tokenizer on a crawl job's output "
                    "(out/crawl/data/*.parquet) or other extracted text"
                )
            for doc in read_shard(file, fmt, 0, 1, options, StepStats()):
                chunk = doc.text + separator
                out.write(chunk)
                docs += 1
                written += len(chunk.encode("utf-8"))
                if written >= max_bytes:
                    return docs, written
    return docs, written


def run_tokenizer_job(data: dict[str, Any], output: str | None = None) -> dict[str, Any]:
    """Train and save the tokenizer a job file describes; return its report."""
    from tokenizer import Tokenizer, train_bpe

    if output is not None:
        data = {**data, "output": output}
    try:
        job = TokenizerJob(**data)
    except ValidationError as e:
        raise JobConfigError(_format_validation_error(e)) from None
    files = expand_inputs(job.inputs)
    out = Path(job.output)
    key = hashlib.sha256(json.dumps([files, job.model_dump()], sort_keys=True).encode()).hexdigest()
    report_path = out / "train_report.json"
    if report_path.exists() and (out / "tokenizer.json").exists():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("key") == key:
            return report
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    corpus = out.parent / f".{out.name}.corpus.txt"
    try:
        docs, nbytes = write_corpus(files, job.text_field, job.special_tokens[0], corpus,
                                    job.max_bytes)
        vocab, merges = train_bpe(corpus, job.vocab_size, job.special_tokens, job.pattern,
                                  progress=True)
    finally:
        corpus.unlink(missing_ok=True)
    Tokenizer(vocab, merges, job.special_tokens, pattern=job.pattern).save(out)
    report = {
        "key": key,
        "inputs": files,
        "documents": docs,
        "corpus_bytes": nbytes,
        "vocab_size": len(vocab),
        "merges": len(merges),
        "seconds": round(time.time() - started, 1),
        "output": str(out),
    }
    atomic_write_json(report, report_path)
    return report


def run(data: dict[str, Any], args: argparse.Namespace) -> int:
    """Train the tokenizer of job ``data`` (``--output`` overrides ``output``); print the
    report; return 0."""
    print(json.dumps(run_tokenizer_job(data, args.output), indent=1))
    return 0
