"""Runs a crawl job: one executor task per input shard, resumable at part granularity.

An input shard is a file, a split of a big JSONL or Parquet file, or with
``read.target_shard_bytes`` a run of consecutive small files. The driver keeps a shard id
per shard, not its records: tasks leave their progress on disk, and the stats are summed
from there one record at a time, so a job of many files costs the driver little.

Layout of an output folder::

    _job.json                     the validated job and its fingerprint
    _progress/stage-K/SHARD.json  per shard: input documents done, parts written, stats
    _stages/stage-K/              documents before global step K (dedup), as Parquet parts
    _global/stage-K/              the global step's own resumable work
    data/SHARD-PART.parquet       the output documents
    removed/SHARD-PART.parquet    removed documents with step and reason (keep_removed)
    samples/stage-K/SHARD-PART.parquet  what rewriting steps changed in a few documents
    stats.json, summary.md, stats.png, report.html, _SUCCESS

A shard task reads its input in chunks of ``checkpoint_docs`` documents; each chunk's
output part is written atomically, then the progress file is replaced atomically. A
killed task rerun skips the documents its progress file counts and rewrites at most the
part it was in the middle of, so output never duplicates or loses a document and equals
an uninterrupted run's.

A job owns its output folder, one run at a time. At the start of a run, the temporary
files that killed writers left anywhere in the folder (``.NAME.tmp-*``, see
:mod:`pipeline.io.atomic`) are deleted, global steps' work folders included; running the
same job into the same folder twice at once is not supported (the runs would share parts).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.core.config import (
    JobConfig,
    OutputFolderError,
    expand_inputs,
    parse_steps,
    validate_job,
)
from pipeline.core.document import Document
from pipeline.core.step import (
    GlobalStep,
    StageShard,
    Step,
    StepContext,
    StepStats,
    UndeclaredMetadataError,
)
from pipeline.core.table_step import TableStep
from pipeline.execution import faults
from pipeline.execution.columnar import (
    apply_table_chunk,
    stage_tables,
    table_step_of,
    write_table_part,
)
from pipeline.execution.executor import Executor, make_executor
from pipeline.execution.inspect import SAMPLES_DIR, write_samples_parquet
from pipeline.io.atomic import atomic_write_json, remove_stale_temps, temp_path
from pipeline.io.readers import ReadOptions, detect_format, plan_splits, read_shard
from pipeline.io.writer import (
    documents_from_table,
    documents_schema,
    documents_to_table,
    write_documents_parquet,
    write_removed_parquet,
)

log = logging.getLogger("pipeline.execution.runner")


@dataclass(frozen=True)
class InputShard:
    """One task's share of the input: a file, one split of a large file, or a group of
    small files (``read.target_shard_bytes``): ``path`` and then each of ``more``, whole,
    in input order."""

    shard_id: str
    path: str
    fmt: str
    split: int = 0
    n_splits: int = 1
    more: tuple[tuple[str, str], ...] = ()  # further (path, format) files read after path

    def documents(self, read: ReadOptions, stats: StepStats) -> Iterator[Document]:
        """Yield the shard's documents in order, counting the reading into ``stats``."""
        yield from read_shard(self.path, self.fmt, self.split, self.n_splits, read, stats)
        for path, fmt in self.more:
            yield from read_shard(path, fmt, 0, 1, read, stats)


def plan_input_shards(files: list[str], read: ReadOptions) -> list[InputShard]:
    """Return the job's input shards in input order: one per file, several for a file the
    reader splits, and with ``read.target_shard_bytes`` one per run of consecutive small
    files whose sizes add up to at most that (a shard never mixes in a split file).

    Shard ids are ``<index of the first file>-<its stem>`` (``-sNNNN`` for a split,
    ``-nK`` for a group of K files), zero-padded so they sort in input order.
    """
    width = max(5, len(str(len(files) - 1)))
    target = read.target_shard_bytes
    shards: list[InputShard] = []
    group: list[tuple[int, str, str]] = []  # (index, path, format) of the open group
    group_bytes = 0

    def close_group() -> None:
        nonlocal group_bytes
        if group:
            i, path, fmt = group[0]
            stem = os.path.basename(path).split(".")[0]
            suffix = f"-n{len(group)}" if len(group) > 1 else ""
            more = tuple((p, f) for _, p, f in group[1:])
            shards.append(InputShard(f"{i:0{width}d}-{stem}{suffix}", path, fmt, more=more))
            group.clear()
        group_bytes = 0

    for i, path in enumerate(files):
        fmt = read.format or detect_format(path)
        n = max(1, plan_splits(path, fmt, read))
        if target is not None and n == 1:
            size = _size_on_disk(path)
            if group and group_bytes + size > target:
                close_group()
            group.append((i, path, fmt))
            group_bytes += size
            if group_bytes >= target:
                close_group()
            continue
        close_group()
        stem = os.path.basename(path).split(".")[0]
        for k in range(n):
            sid = f"{i:0{width}d}-{stem}" + (f"-s{k:04d}" if n > 1 else "")
            shards.append(InputShard(sid, path, fmt, k, n))
    close_group()
    return shards


def _size_on_disk(path: str) -> int:
    """The file's size in bytes; 0 when it cannot be read (its task then counts the error)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def split_stages(steps: list[Step]) -> list[tuple[int, int]]:
    """Return [start, end) step ranges; every stage after the first starts at a GlobalStep.

    The first stage holds the local steps before the first global one; it is empty (the
    shards are only read) when the job starts with a global step.
    """
    bounds = [0] + [i for i, s in enumerate(steps) if isinstance(s, GlobalStep)]
    return [(b, e) for b, e in zip(bounds, bounds[1:] + [len(steps)], strict=True)]


def job_fingerprint(job: JobConfig, files: list[str]) -> str:
    """Return a hash of everything that decides the output (not where Ray runs)."""
    read = job.read.model_dump()
    if read["target_shard_bytes"] is None:  # unset: the fingerprint of jobs from before it
        del read["target_shard_bytes"]
    key = {
        "inputs": files,
        "read": read,
        "steps": job.steps,
        "write": job.write.model_dump(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def all_metadata_fields(steps: list[Step]) -> dict[str, Any]:
    """Return every metadata column the job's steps declare, in step order."""
    fields: dict[str, Any] = {}
    for step in steps:
        fields.update(step.metadata_fields)
    return fields


def input_columns(job: JobConfig) -> dict[str, Any]:
    """Columns that Parquet inputs pass through (``read.keep_columns``), with their types.

    Taken from the first Parquet input, so every shard writes the same schema.
    """
    if not job.read.keep_columns:
        return {}
    return _passthrough_columns(tuple(job.inputs), job.read.model_dump_json())


@functools.lru_cache(maxsize=4)
def _passthrough_columns(inputs: tuple[str, ...], read_json: str) -> dict[str, Any]:
    """:func:`input_columns` once per worker process: globbing every input in every task
    would cost a job of N files N^2 directory entries."""
    import pyarrow.parquet as pq

    from pipeline.io.readers.parquet import passthrough_columns

    read = ReadOptions.model_validate_json(read_json)
    for path in expand_inputs(list(inputs)):
        if (read.format or detect_format(path)) == "parquet":
            schema = pq.read_schema(path)
            return {n: schema.field(n).type for n in passthrough_columns(schema, read)}
    return {}


class _Timed:
    """Wraps a step's output iterator: counts documents out and inclusive time.

    An exception escaping the step is tagged with the step's index (only by the first
    wrapper it passes, which is the raising step's own). A document leaving with a
    metadata key outside ``allowed`` raises :class:`UndeclaredMetadataError` naming the step.
    """

    def __init__(self, it: Iterator[Document], stats: StepStats, index: int,
                 step: str = "", allowed: frozenset[str] | None = None) -> None:
        self.it, self.stats, self.index, self.inclusive = it, stats, index, 0.0
        self.step, self.allowed = step, allowed

    def __iter__(self) -> Iterator[Document]:
        while True:
            t0 = time.perf_counter()
            try:
                doc = next(self.it)
            except StopIteration:
                self.inclusive += time.perf_counter() - t0
                return
            except Exception as e:
                if not hasattr(e, "refinery_step_index"):
                    e.refinery_step_index = self.index  # type: ignore[attr-defined]
                raise
            self.inclusive += time.perf_counter() - t0
            if self.allowed is not None and not doc.metadata.keys() <= self.allowed:
                key = sorted(doc.metadata.keys() - self.allowed)[0]
                raise UndeclaredMetadataError(key, self.step)
            self.stats.docs_out += 1
            self.stats.chars_out += len(doc.text)
            yield doc


def _counted_in(docs: Iterable[Document], stats: StepStats) -> Iterator[Document]:
    for doc in docs:
        stats.docs_in += 1
        stats.chars_in += len(doc.text)
        yield doc


def run_chain(
    docs: list[Document], steps: list[Step], ctxs: list[StepContext]
) -> list[Document]:
    """Pass ``docs`` through ``steps`` (each with its context); return the survivors.

    Each step's ``seconds`` counts its own time, not the time of the steps before it.
    A step may set the metadata keys it declares, those of the steps before it and those
    the documents came in with; any other key raises :class:`UndeclaredMetadataError`.
    """
    it: Iterable[Document] = docs
    timers: list[_Timed] = []
    allowed: frozenset[str] = frozenset().union(*(d.metadata.keys() for d in docs))
    for index, (step, ctx) in enumerate(zip(steps, ctxs, strict=True)):
        allowed = allowed | step.metadata_fields.keys()
        timed = _Timed(step.run(_counted_in(it, ctx.stats), ctx), ctx.stats, index,
                       step.name, allowed)
        timers.append(timed)
        it = iter(timed)
    out = list(it)
    upstream = 0.0
    for timed, ctx in zip(timers, ctxs, strict=True):
        ctx.stats.seconds += max(0.0, timed.inclusive - upstream)
        upstream = timed.inclusive
    return out


def _copy_doc(doc: Document) -> Document:
    return Document(doc.id, doc.text, doc.url, doc.media_type, doc.source, copy.deepcopy(doc.metadata))


def run_chunk_safely(
    chunk: list[Document],
    steps: list[Step],
    ctxs: list[StepContext],
    removed: list[tuple[Document, str, str]],
    start: int = 0,
) -> list[Document]:
    """Run a chunk through the steps; if a step raises, redo the chunk one document at a time.

    A document that makes a step raise is counted as ``error:<ExceptionType>`` under that
    step and skipped; one bad record never kills the shard. ``start`` is the chunk's first
    document's position in its shard: before each redone document, a :class:`GlobalStep`
    among ``steps`` is sought there (its lookups of the failed pass are undone).
    """
    pristine = [_copy_doc(d) for d in chunk]
    marks = [ctx.mark() for ctx in ctxs]
    n_removed = len(removed)
    try:
        return run_chain(chunk, steps, ctxs)
    except UndeclaredMetadataError:
        raise  # a step's declaration is wrong for every document: fail the shard, lose nothing
    except Exception as first_error:  # noqa: BLE001 - any step bug must not kill the shard
        log.warning("a step raised on a chunk (%r); retrying one document at a time", first_error)
    for ctx, m in zip(ctxs, marks, strict=True):
        ctx.rewind(m)
    del removed[n_removed:]
    survivors: list[Document] = []
    seekers = [s for s in steps if isinstance(s, GlobalStep)]
    for i, doc in enumerate(pristine):
        for step in seekers:
            step.seek(start + i)
        marks = [ctx.mark() for ctx in ctxs]
        n_removed = len(removed)
        try:
            survivors.extend(run_chain([doc], steps, ctxs))
        except UndeclaredMetadataError:
            raise
        except Exception as e:  # noqa: BLE001
            for ctx, m in zip(ctxs, marks, strict=True):
                ctx.rewind(m)
            del removed[n_removed:]
            failing = getattr(e, "refinery_step_index", 0)
            for ctx in ctxs[:failing]:
                ctx.stats.docs_in += 1
                ctx.stats.docs_out += 1
            ctxs[failing].stats.docs_in += 1
            ctxs[failing].stats.dropped[f"error:{type(e).__name__}"] += 1
            log.warning("document %s skipped: %s raised %r", doc.id, steps[failing].name, e)
    return survivors


def _apply_table_safely(step: TableStep, table: pa.Table, ctx: StepContext, schema: pa.Schema,
                        removed: list[tuple[Document, str, str]], start: int = 0) -> pa.Table:
    """Run a one-step stage's chunk on the columnar path; return the kept rows.

    If the step raises, the chunk is redone on the document path
    (:func:`run_chunk_safely`, which skips and counts a document that raises) from the
    counters, samples and removed documents it had before, the step sought back to the
    chunk's first row (``start``, its position in the shard).
    """
    mark = ctx.mark()
    n_removed = len(removed)
    try:
        return apply_table_chunk(step, table, ctx, ctx.removed)
    except UndeclaredMetadataError:
        raise
    except Exception as e:  # noqa: BLE001 - the document path decides what one bad row costs
        log.warning("%s raised on a table (%r); redoing the chunk on documents",
                    getattr(step, "name", step), e)
    ctx.rewind(mark)
    del removed[n_removed:]
    assert isinstance(step, Step)
    if isinstance(step, GlobalStep):
        step.seek(start)  # the failed call may have looked rows up already
    survivors = run_chunk_safely(documents_from_table(table), [step], [ctx], removed, start)
    return documents_to_table(survivors, schema)


def _progress_path(out: Path, stage: int, shard_id: str) -> Path:
    return out / "_progress" / f"stage-{stage}" / f"{shard_id}.json"


def _load_progress(path: Path) -> dict[str, Any]:
    if path.exists():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"records_done": 0, "parts": 0, "files": [], "done": False, "read": None, "steps": None}


def process_unit(
    unit: InputShard | StageShard,
    stage: int,
    step_range: tuple[int, int],
    job_data: dict[str, Any],
    out_dir: str,
    final: bool,
) -> dict[str, Any]:
    """Process one shard for one stage and return its progress record.

    Reads the shard (an input file split for stage 0, the previous stage's parts after),
    runs the stage's steps in chunks of ``checkpoint_docs``, and writes each chunk's part
    and then the progress file atomically, so a rerun resumes after the last whole part.
    """
    logging.basicConfig(level=logging.WARNING)
    job = JobConfig(**job_data)
    all_steps = parse_steps(job.steps)
    fields = {**input_columns(job), **all_metadata_fields(all_steps)}
    start, end = step_range
    steps = all_steps[start:end]
    out = Path(out_dir)
    shard_id = unit.shard_id
    ppath = _progress_path(out, stage, shard_id)
    progress = _load_progress(ppath)
    progress["shard_id"] = shard_id
    if progress["done"]:
        return progress

    for step in steps:
        step.setup()
    if stage > 0:
        glob_step = steps[0]
        assert isinstance(glob_step, GlobalStep)
        glob_step.load(str(out / "_global" / f"stage-{stage}"), shard_id)
        glob_step.seek(progress["records_done"])  # a resume starts mid-shard

    removed: list[tuple[Document, str, str]] = []
    sink = (lambda d, s, r: removed.append((d, s, r))) if job.write.keep_removed else None
    samples: list[tuple[Document, str, dict[str, Any]]] = []  # change samples for the report
    ctxs = [
        StepContext(StepStats.from_dict(progress["steps"][i]) if progress["steps"] else StepStats(),
                    sink, shard_id, samples)
        for i in range(len(steps))
    ]
    # samples taken by earlier attempts count toward the per-shard cap, as in one run
    for ctx, sampled in zip(ctxs, progress.get("sampled") or [], strict=False):
        ctx._sampled.update(sampled)
    read_stats = StepStats.from_dict(progress["read"]) if progress["read"] else StepStats()

    data_dir = out / ("data" if final else f"_stages/stage-{stage + 1}")
    chunk_size = job.write.checkpoint_docs
    compression = None if job.write.compression == "none" else job.write.compression
    schema = documents_schema(fields)
    scratch = StepStats()
    table_step = table_step_of(steps, unit, schema) if stage > 0 else None
    chunks: Iterator[list[Document]] | Iterator[pa.Table]
    if table_step is not None:  # columnar: Arrow tables in and out, same bytes written
        assert isinstance(unit, StageShard)
        chunks = stage_tables(unit.files, shard_id, chunk_size, progress["records_done"])
    else:
        if stage == 0:
            assert isinstance(unit, InputShard)
            source: Iterator[Document] = unit.documents(job.read, scratch)
        else:
            assert isinstance(unit, StageShard)
            source = unit.documents()
        # Skip what earlier attempts finished; the reader counted those already.
        skipped = sum(1 for _ in islice(source, progress["records_done"]))
        if skipped != progress["records_done"]:
            raise RuntimeError(
                f"{shard_id}: input now has {skipped} documents, fewer than the "
                f"{progress['records_done']} already processed; the input changed since the "
                "last run"
            )
        chunks = iter(lambda: list(islice(source, chunk_size)), [])
    base_read = scratch.to_dict()

    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        read_seconds = time.perf_counter() - t0
        if chunk is None:
            break
        part = progress["parts"]
        name = f"{shard_id}-{part:05d}.parquet"
        if isinstance(chunk, pa.Table):
            assert table_step is not None
            kept = _apply_table_safely(table_step, chunk, ctxs[0], schema, removed,
                                       progress["records_done"])
            if kept.num_rows:
                write_table_part(kept, data_dir / name, schema, compression or "none")
                progress["files"].append(str(data_dir / name))
            n_in = chunk.num_rows
        else:
            survivors = run_chunk_safely(chunk, steps, ctxs, removed, progress["records_done"])
            if survivors:
                write_documents_parquet(survivors, data_dir / name, fields, compression or "none")
                progress["files"].append(str(data_dir / name))
            n_in = len(chunk)
        if removed:
            write_removed_parquet(removed, out / "removed" / f"stage-{stage}" / name,
                                  compression or "none")
            removed.clear()
        if samples:
            write_samples_parquet(samples, out / SAMPLES_DIR / f"stage-{stage}" / name)
            samples.clear()
        progress["records_done"] += n_in
        progress["parts"] += 1
        read_stats.merge(_delta(scratch.to_dict(), base_read))
        read_stats.seconds += read_seconds
        base_read = scratch.to_dict()
        progress["read"] = read_stats.to_dict()
        progress["steps"] = [c.stats.to_dict() for c in ctxs]
        progress["sampled"] = [dict(c._sampled) for c in ctxs]
        faults.checkpoint(f"stage-{stage}", part)  # the part is written, not yet recorded
        atomic_write_json(progress, ppath)
    read_stats.merge(_delta(scratch.to_dict(), base_read))
    progress["read"] = read_stats.to_dict()
    progress["steps"] = [c.stats.to_dict() for c in ctxs]
    progress["done"] = True
    atomic_write_json(progress, ppath)
    return progress


def _delta(now: dict[str, Any], before: dict[str, Any]) -> StepStats:
    """Return the counters that grew between two :meth:`StepStats.to_dict` snapshots."""
    a, b = StepStats.from_dict(now), StepStats.from_dict(before)
    a.docs_in -= b.docs_in
    a.docs_out -= b.docs_out
    a.chars_in -= b.chars_in
    a.chars_out -= b.chars_out
    a.dropped.subtract(b.dropped)
    a.counters.subtract(b.counters)
    a.seconds = 0.0
    return a


def prepare_output_dir(out: Path) -> None:
    """Create the output folder ``out`` if needed and check that this process can write in it.

    Raises :class:`OutputFolderError`, one line naming the folder and the fix, when a part
    of the path is a file, the folder cannot be created, or it (or a folder an earlier run
    made in it, two levels deep) cannot be written. Writing is tested by creating and
    deleting a file: permission bits say nothing for root, nor about an immutable folder
    (``chattr +i``) or a read-only mount.
    """
    for part in (out, *out.parents):
        if part.exists() and not part.is_dir():
            raise OutputFolderError(
                f"output folder {out}: {part} is a file, not a folder; choose another "
                "--output (or 'output:' in the job file)"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(
            f"cannot create the output folder {out} ({e.strerror or e}); choose a writable "
            "--output (or 'output:' in the job file)"
        ) from None
    for folder in [out, *_subfolders(out, levels=2)]:
        _check_writable(folder, out)


def _subfolders(root: Path, levels: int) -> list[Path]:
    """Folders below ``root``, ``levels`` deep at most (symbolic links not followed)."""
    found: list[Path] = []
    level = [root]
    for _ in range(levels):
        level = [d for f in level for d in sorted(f.iterdir())
                 if d.is_dir() and not d.is_symlink()]
        found += level
    return found


def _check_writable(folder: Path, out: Path) -> None:
    """Raise OutputFolderError unless a file can be created (and deleted) in ``folder``."""
    probe = temp_path(folder / ".write-check")
    try:
        with open(probe, "xb"):
            pass
        probe.unlink()
    except OSError as e:
        raise OutputFolderError(
            f"cannot write in the output folder {folder} ({e.strerror or e}); make it writable "
            f"(chmod u+w, chattr -i, a read-write mount) or choose another --output than {out}"
        ) from None


def _check_output_dir(out: Path, job: JobConfig, files: list[str], fingerprint: str) -> None:
    marker = out / "_job.json"
    if marker.exists():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OutputFolderError(
                f"{marker} cannot be read ({e}); delete that folder to start over or choose "
                "another --output"
            ) from None
        if previous.get("fingerprint") != fingerprint:
            raise OutputFolderError(
                f"{out} holds the output of a different job (its inputs, steps or options "
                "differ); choose another --output or delete that folder to start over"
            )
        return
    atomic_write_json(
        {"fingerprint": fingerprint, "job": job.model_dump(), "files": files}, marker
    )


class _DocsDone:
    """Progress-bar status: input documents the stage's shards have finished so far.

    Polled every two seconds while a stage runs: a progress file is parsed again only when
    its modification time changed, so a poll over N shards costs one directory scan, not N
    JSON reads (which for 10,000 small files kept the driver busy); and a scan waits for
    100 times its own duration after the last one, so it never takes over 1% of a core.
    """

    def __init__(self, out: Path, stage: int) -> None:
        self.folder = out / "_progress" / f"stage-{stage}"
        self.seen: dict[str, tuple[int, int]] = {}  # file name -> (mtime_ns, records_done)
        self.next_scan = 0.0

    def __call__(self) -> dict[str, Any]:
        if time.monotonic() >= self.next_scan:
            t0 = time.monotonic()
            self._scan()
            self.next_scan = time.monotonic() + 100 * (time.monotonic() - t0)
        return {"docs": sum(n for _, n in self.seen.values())}

    def _scan(self) -> None:
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                mtime = entry.stat().st_mtime_ns
                if self.seen.get(entry.name, (None, 0))[0] != mtime:
                    with open(entry.path, encoding="utf-8") as f:
                        self.seen[entry.name] = (mtime, json.load(f)["records_done"])
            except (OSError, ValueError, KeyError):
                pass


def shard_task(job_data: dict[str, Any], unit: InputShard | StageShard, stage: int,
               step_range: tuple[int, int], out_dir: str, final: bool) -> str:
    """:func:`process_unit` as an executor unit: the job travels once per stage (``shared``)
    and the progress record stays on disk, so the driver holds a shard id per shard."""
    return process_unit(unit, stage, step_range, job_data, out_dir, final)["shard_id"]


def _run_units(
    executor: Executor,
    units: list[InputShard] | list[StageShard],
    stage: int,
    step_range: tuple[int, int],
    job: JobConfig,
    out: Path,
    final: bool,
    desc: str,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Run one stage's shard tasks through the executor; return the ids of the shards that
    finished (in input order) and the failures."""
    outcomes = executor.map(
        shard_task,
        [(u, stage, step_range, str(out), final) for u in units],
        names=[u.shard_id for u in units],
        desc=desc,
        unit="shard",
        shared=(job.model_dump(),),
        status=_DocsDone(out, stage),
    )
    done = [o.value for o in outcomes if o.ok]
    failures = [(o.name, o.error) for o in outcomes if not o.ok]
    return done, failures


def progress_records(out: Path, stage: int, shard_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the progress records of ``shard_ids`` for ``stage``, read one at a time."""
    for shard_id in shard_ids:
        with open(_progress_path(out, stage, shard_id), encoding="utf-8") as f:
            yield json.load(f)


def job_executor(job: JobConfig, address: str | None = None) -> Executor:
    """Return the executor a job asks for (``executor: ray|local`` and its ``ray`` section).

    ``address`` (from ``--address``) overrides ``ray.address``; ``RAY_ADDRESS`` comes next.
    """
    return make_executor(job.executor, address=address or job.ray.address,
                         num_cpus=job.ray.num_cpus, max_retries=job.ray.max_retries)


def run_job(
    job_data: dict[str, Any],
    output: str | None = None,
    address: str | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run a validated crawl job dict; return the stats written to ``stats.json``.

    ``output`` overrides the job's output folder and ``address`` the Ray cluster to join
    (default: ``ray.address`` in the job, then ``RAY_ADDRESS``, else a local cluster);
    ``executor`` replaces the one the job names. Finished shards of an earlier, interrupted
    run of the same job are not redone.
    """
    from pipeline.execution.report import write_report

    started = time.time()
    job, steps = validate_job(job_data, output)
    files = expand_inputs(job.inputs)
    out = Path(job.output)
    prepare_output_dir(out)
    _check_output_dir(out, job, files, job_fingerprint(job, files))
    # Safe because one run of a job at a time owns the folder (see the module docstring).
    stale = remove_stale_temps(out)
    if stale:
        log.warning("removed %d temporary file(s) that a killed run left in %s", stale, out)
    (out / "_SUCCESS").unlink(missing_ok=True)

    executor = executor or job_executor(job, address)
    stages = split_stages(steps)
    units: list[InputShard] | list[StageShard] = plan_input_shards(files, job.read)
    atomic_write_json({"shards": [u.shard_id for u in units], "stages": len(stages),
                       "stage_steps": [[s.name for s in steps[a:b]] for a, b in stages]},
                      out / "_plan.json")
    failures: list[tuple[str, str]] = []
    finished: list[list[str]] = []  # per stage, the ids of the shards that finished
    for stage, (start, end) in enumerate(stages):
        final = stage == len(stages) - 1
        if stage > 0:
            glob_step = steps[start]
            assert isinstance(glob_step, GlobalStep)
            glob_step.setup()
            workdir = out / "_global" / f"stage-{stage}"
            workdir.mkdir(parents=True, exist_ok=True)
            glob_step.prepare(list(units), str(workdir), executor)
        names = ", ".join(s.name for s in steps[start:end]) or "read"
        done, stage_failures = _run_units(
            executor, units, stage, (start, end), job, out, final, f"stage {stage + 1}/{len(stages)} [{names}]"
        )
        failures.extend(stage_failures)
        finished.append(done)
        if stage_failures and not final:
            # A global step must see every shard: stop here; a rerun retries the failed
            # shards (finished ones are skipped) and then runs the global step on all.
            log.error("%d shard(s) failed before %s; rerun the job to retry them",
                      len(stage_failures), steps[stages[stage + 1][0]].name)
            break
        if not final:
            units = [StageShard(p["shard_id"], tuple(p["files"]))
                     for p in progress_records(out, stage, sorted(done))]
    records = ((k, r) for k, done in enumerate(finished) for r in progress_records(out, k, done))
    stats = write_report(out, job, steps, stages, records, len(finished[0]), failures,
                         time.time() - started)
    if not failures:
        (out / "_SUCCESS").write_text("ok\n")
    return stats
