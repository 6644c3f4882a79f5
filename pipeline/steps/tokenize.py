"""``tokenize_v1``: documents to token ids, packed into an Arrow token stream.

A global step: once every shard has finished the steps before it, :meth:`Tokenize.prepare`
tokenizes each shard in its own executor unit into one part of the stream
(``docs/token-stream-format.md``: each document's ids followed by the EOS id, uint16 when
the vocabulary fits, else uint32), then writes ``manifest.json`` with the parts in shard
order, their token counts and the tokenizer's hash. A part is written atomically and then
marked done, so a rerun after a kill redoes only the parts that were not finished.
Documents then pass through unchanged, each with its ``num_tokens`` (EOS excluded).

Encoding goes through :class:`tokenizer.fast.FastEncoder`: the native GPT-2-pattern encoder
(``tokenizer/_encode.c``) when it is built and the tokenizer uses that pattern, else tiktoken
loaded with the tokenizer's ranks; either way the ids equal ``tokenizer.Tokenizer.encode``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, StageShard, StepContext, StepOptions, require_folder
from pipeline.io.atomic import atomic_write_json

if TYPE_CHECKING:
    from pipeline.dedup.phases.shuffle import ShardDecisions
    from pipeline.execution.executor import Executor

CONFIG_FILE = "_tokenize.json"


class TokenizeOptions(StepOptions):
    """Options of ``tokenize_v1``."""

    tokenizer: str = Field(description="directory written by `tokenizer train` / Tokenizer.save")
    eos_token: str = Field("<|endoftext|>", description="token appended after every document")
    dtype: Literal["auto", "uint16", "uint32"] = "auto"
    output: str = Field("tokens", description="stream directory; relative to the job output")
    batch_docs: int = Field(256, gt=0, description="documents encoded per batch")


def _done_path(stream: Path, index: int) -> Path:
    return stream / f"part-{index:05d}.done.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(data, path, indent=2, sort_keys=False)


def _is_done(stream: Path, index: int) -> bool:
    marker = _done_path(stream, index)
    if not marker.exists():
        return False
    info = json.loads(marker.read_text(encoding="utf-8"))
    part = stream / info["path"]
    return part.is_file() and part.stat().st_size == info["size"]


@lru_cache(maxsize=4)
def _cached_encoder(tokenizer_dir: str, files_key: tuple) -> Any:
    from tokenizer.fast import FastEncoder

    return FastEncoder(tokenizer_dir)


def shared_encoder(tokenizer_dir: str) -> Any:
    """The FastEncoder of ``tokenizer_dir``, loaded once per worker process.

    A Ray worker runs many shard tasks; loading the ranks costs about 0.1 s each time.
    The cache key includes the files' sizes and times, so a changed tokenizer is reloaded.
    """
    files_key = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(Path(tokenizer_dir).iterdir()) if p.is_file()
    )
    return _cached_encoder(str(tokenizer_dir), files_key)


def tokenize_shard(
    shard: StageShard,
    index: int,
    tokenizer_dir: str,
    stream_dir: str,
    eos_id: int,
    dtype: str,
    batch_docs: int,
) -> dict[str, Any]:
    """Tokenize one shard's documents into ``part-{index:05d}.arrow``; mark it done.

    Returns the done record: part path, token and document counts, shard id and file size.
    """
    import pyarrow.parquet as pq

    from tokenizer.token_stream import write_token_stream

    encoder = shared_encoder(tokenizer_dir)

    def ids() -> Iterator[np.ndarray]:
        # Only the text column is read, batch by batch, in the stage's document order.
        for path in shard.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_docs, columns=["text"]):
                for text in batch.column(0).to_pylist():
                    yield encoder.encode_numpy(text or "")

    stream = Path(stream_dir)
    name = f"part-{index:05d}.arrow"
    info = write_token_stream(ids(), stream, name, dtype, eos_id)
    record = {
        "path": info.path,
        "num_tokens": info.num_tokens,
        "num_docs": info.num_docs,
        "shard_id": shard.shard_id,
        "size": (stream / name).stat().st_size,
    }
    _write_json(_done_path(stream, index), record)
    return record


class Tokenize(GlobalStep):
    """Tokenize every document into a packed Arrow token stream (parallel, resumable)."""

    name = "tokenize_v1"
    Options = TokenizeOptions
    metadata_fields = {"num_tokens": pa.int64()}

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._counts: ShardDecisions | None = None

    def check(self) -> None:
        """Check that ``tokenizer`` is a folder holding the files the encoder reads."""
        from tokenizer.formats import CONFIG_FILE, HF_FILE, TIKTOKEN_FILE

        require_folder("tokenizer", self.options.tokenizer, (CONFIG_FILE, TIKTOKEN_FILE, HF_FILE),
                       "train one with a `job: tokenizer` job (jobs/tokenizer.yaml) or "
                       "`tokenizer train`, or fix the path")

    def stream_dir(self, workdir: str) -> Path:
        """The stream directory: ``output``, relative to the job output folder.

        ``workdir`` is the runner's ``<job output>/_global/stage-K``.
        """
        path = Path(self.options.output)
        return path if path.is_absolute() else Path(workdir).parents[1] / path

    def _settings(self) -> tuple[int, str, int, str]:
        """(eos id, dtype, vocab size, tokenizer hash) of the configured tokenizer."""
        from tokenizer.fast import FastEncoder
        from tokenizer.formats import tokenizer_hash
        from tokenizer.token_stream import dtype_for_vocab

        encoder = FastEncoder(self.options.tokenizer)
        eos = self.options.eos_token
        if eos not in encoder.special_tokens:
            raise ValueError(f"{self.name}: EOS token {eos!r} is not a special token of "
                             f"{self.options.tokenizer} ({sorted(encoder.special_tokens)})")
        dtype = self.options.dtype
        if dtype == "auto":
            dtype = dtype_for_vocab(encoder.vocab_size)
        elif dtype == "uint16" and encoder.vocab_size > 1 << 16:
            raise ValueError(f"{self.name}: {encoder.vocab_size} ids do not fit uint16")
        return (encoder.special_tokens[eos], dtype, encoder.vocab_size,
                tokenizer_hash(self.options.tokenizer))

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Tokenize every shard (one ``executor`` unit each, unless done); write the manifest.

        Raises :class:`~pipeline.execution.executor.TaskFailures` naming every shard that
        failed, after the others have finished (their parts are kept for a rerun).
        """
        from tokenizer.token_stream import PartInfo, write_manifest

        eos_id, dtype, vocab_size, digest = self._settings()
        ordered = sorted(shards, key=lambda s: s.shard_id)
        stream = self.stream_dir(workdir)
        stream.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_hash": digest, "eos_id": eos_id, "dtype": dtype,
                  "shards": [[s.shard_id, list(s.files)] for s in ordered]}
        config_path = stream / CONFIG_FILE
        if config_path.exists():
            if json.loads(config_path.read_text(encoding="utf-8")) != config:
                raise ValueError(f"{config_path}: stream was written with another tokenizer, "
                                 "dtype or input; use a fresh output directory")
        else:
            _write_json(config_path, config)
        todo = [i for i in range(len(ordered)) if not _is_done(stream, i)]
        args = [(ordered[i], i, str(Path(self.options.tokenizer).resolve()), str(stream), eos_id,
                 dtype, self.options.batch_docs) for i in todo]
        executor.run(tokenize_shard, args, names=[ordered[i].shard_id for i in todo],
                     desc=f"{self.name} shards", unit="shard")
        parts = []
        for i in range(len(ordered)):
            record = json.loads(_done_path(stream, i).read_text(encoding="utf-8"))
            parts.append(PartInfo(record["path"], record["num_tokens"], record["num_docs"]))
        write_manifest(stream, parts, dtype, eos_id, vocab_size, digest)
        index = {s.shard_id: {"index": i, "files": list(s.files)} for i, s in enumerate(ordered)}
        _write_json(stream / "_shards.json", index)

    def load(self, workdir: str, shard_id: str) -> None:
        """Read the token count of every document of ``shard_id``, keyed by document id.

        ``run`` is called once per checkpoint chunk, and after a resume starts mid-shard,
        so counts are matched by id (a repeated id by position, see :meth:`seek`).
        """
        import pyarrow.parquet as pq

        from pipeline.dedup.phases.shuffle import ShardDecisions
        from tokenizer.token_stream import read_part_offsets

        stream = self.stream_dir(workdir)
        entry = json.loads((stream / "_shards.json").read_text(encoding="utf-8"))[shard_id]
        record = json.loads(_done_path(stream, entry["index"]).read_text(encoding="utf-8"))
        offsets = read_part_offsets(stream / record["path"])
        counts = (offsets[1:] - offsets[:-1] - 1).tolist()
        ids = [i for f in entry["files"] for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
        if len(ids) != len(counts):
            raise RuntimeError(f"{self.name}: shard {shard_id} has {len(ids)} documents but its "
                               f"part has {len(counts)}; the stage input changed")
        self._counts = ShardDecisions(ids, dict(enumerate(counts)))

    def seek(self, position: int) -> None:
        """Match repeated ids from document ``position`` of the shard on (see
        :meth:`GlobalStep.seek`)."""
        if self._counts is not None:
            self._counts.seek(position)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield each document unchanged but for its ``num_tokens`` (EOS excluded)."""
        if self._counts is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        for doc in docs:
            try:
                n = self._counts.get(doc.id)
            except KeyError:
                raise RuntimeError(f"{self.name}: document {doc.id!r} was not tokenized") from None
            doc.metadata["num_tokens"] = n
            ctx.stats.counters["tokens"] += n
            yield doc

