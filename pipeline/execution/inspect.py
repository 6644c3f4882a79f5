"""Samples of what a crawl job kept, removed and changed: the data behind ``report.html``
(:mod:`pipeline.execution.report_html`) and ``pipeline show``.

Everything shown was recorded by the steps while the job ran: removed documents carry
their step, reason and measured value (``_rejection`` in ``metadata_json``, see
:class:`pipeline.core.step.Rejection`), rewriting steps wrote change samples to
``samples/`` (:meth:`pipeline.core.step.StepContext.record_sample`), and scores are
metadata columns. Nothing is measured again here.

Memory and time stay bounded whatever the job's size: Parquet files are read in batches,
in a seeded order, until ``max_files`` files or ``max_bytes`` bytes of each folder have
been read (every file of a small job); from what was read, each (step, reason) keeps the
``k`` documents with the smallest seeded hash of their id (bottom-k sampling: the same
documents in every run, uniform over what was read), each score keeps a uniform sample of
at most :data:`MAX_SCORE_VALUES` values, and MinHash dedup keeps its largest clusters.
"""

from __future__ import annotations

import heapq
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.document import Document
from pipeline.core.step import REJECTION_KEY, sample_hash
from pipeline.io.writer import atomic_write_table

SAMPLES_DIR = "samples"
SAMPLES_FIELDS: dict[str, pa.DataType] = {
    "id": pa.string(), "url": pa.string(), "step": pa.string(), "sample_json": pa.string()}
#: values kept per score and side (kept / removed) for its histogram
MAX_SCORE_VALUES = 20_000
#: lines and characters of a document's beginning shown in a sample
HEAD_LINES, HEAD_LINE_CHARS, HEAD_CHARS = 8, 300, 1500
#: largest MinHash clusters shown, and members of each
MAX_CLUSTERS, MAX_CLUSTER_MEMBERS = 5, 4


def write_samples_parquet(samples: list[tuple[Document, str, dict[str, Any]]],
                          path: str | os.PathLike) -> int:
    """Write change samples ``(document, step, record)`` to ``path``; return the row count."""
    cols: dict[str, list] = {name: [] for name in SAMPLES_FIELDS}
    for doc, step, record in samples:
        cols["id"].append(doc.id)
        cols["url"].append(doc.url)
        cols["step"].append(step)
        cols["sample_json"].append(json.dumps(record, ensure_ascii=False))
    schema = pa.schema([pa.field(n, t) for n, t in SAMPLES_FIELDS.items()])
    atomic_write_table(pa.table(cols, schema=schema), path)
    return len(samples)


def head_of(text: str | None) -> str:
    """Return the first non-blank lines of ``text`` (at most :data:`HEAD_LINES`, each cut)."""
    lines: list[str] = []
    size = 0
    for line in (text or "").split("\n"):
        line = line.strip()
        if not line:
            continue
        if len(line) > HEAD_LINE_CHARS:
            line = line[:HEAD_LINE_CHARS] + "…"
        lines.append(line)
        size += len(line)
        if len(lines) >= HEAD_LINES or size >= HEAD_CHARS:
            break
    return "\n".join(lines)


def _number(x: float, digits: int) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int) or (abs(x) >= 100 and float(x).is_integer()):
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def describe(rejection: dict[str, Any] | None) -> str:
    """Return a rejection record as text: ``alphabetic words 0.62 < 0.80``."""
    if not rejection:
        return ""
    value, threshold = rejection.get("value"), rejection.get("threshold")
    measure, op = rejection.get("measure", ""), rejection.get("op", "")
    if value is None:
        return measure
    digits = 2  # enough decimals that the value and the threshold differ when they do
    while (digits < 6 and isinstance(value, float) and isinstance(threshold, int | float)
           and value != threshold and _number(value, digits) == _number(threshold, digits)):
        digits += 1
    if isinstance(value, str):
        text_value = repr(value[:80] + ("…" if len(value) > 80 else ""))
    else:
        text_value = _number(value, digits)
    if threshold is None:
        return f"{measure} {text_value}".strip()
    if isinstance(threshold, list):
        text_threshold = "[" + ", ".join(_number(t, digits) for t in threshold) + "]"
    elif isinstance(threshold, str):
        text_threshold = repr(threshold)
    else:
        text_threshold = _number(threshold, digits)
    return f"{measure} {text_value} {op} {text_threshold}".strip()


@dataclass
class Sample:
    """One document shown in a report: where it came from, its beginning and why."""

    id: str
    url: str | None
    language: str | None
    head: str
    step: str | None = None
    reason: str | None = None
    rejection: dict[str, Any] | None = None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> str:
        """The measured value against the threshold (``""`` when the rule recorded none)."""
        return describe(self.rejection)


@dataclass
class ChangeSample:
    """What a rewriting step changed in one document (its record from ``samples/``)."""

    id: str
    url: str | None
    step: str
    record: dict[str, Any]


@dataclass
class Cluster:
    """A MinHash cluster: its size, kept document (if found) and removed members, each
    member with the similarity to the kept document its step recorded (None if absent)."""

    cluster: int
    size: int
    survivor: Sample | None
    members: list[tuple[Sample, float | None]]


@dataclass
class Score:
    """A score a step wrote: sampled values of documents it kept and removed, threshold."""

    name: str
    step: str
    kept: np.ndarray
    removed: np.ndarray
    threshold: float | None = None
    op: str = ""


@dataclass
class Inspection:
    """Everything a report shows, sampled from one job output folder."""

    out: Path
    stats: dict[str, Any]
    steps: list[dict[str, Any]]  # {"name", "options"} in job order
    removed: dict[tuple[str, str], list[Sample]]
    kept: list[Sample]
    changes: dict[str, list[ChangeSample]]
    scores: list[Score]
    clusters: list[Cluster]
    files_read: dict[str, tuple[int, int]]  # folder -> (files read, files there)
    seed: int = 0


class _BottomK:
    """The ``k`` items with the smallest keys seen so far (a bounded max-heap)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[int, int, Any]] = []
        self._n = 0

    def would_take(self, key: int) -> bool:
        return len(self._heap) < self.k or -self._heap[0][0] > key

    def offer(self, key: int, item: Any) -> None:
        self._n += 1  # tie-breaker: items are never compared
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-key, -self._n, item))
        elif -self._heap[0][0] > key:
            heapq.heapreplace(self._heap, (-key, -self._n, item))

    def items(self) -> list[Any]:
        return [item for _, _, item in sorted(self._heap, key=lambda t: (-t[0], t[1]))]


class _Reservoir:
    """A uniform sample of at most ``size`` values (smallest random keys kept)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.keys = np.zeros(0)
        self.values = np.zeros(0)
        self._pending: list[float] = []

    def add_one(self, value: float) -> None:
        self._pending.append(value)
        if len(self._pending) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.add(np.array(pending, float))

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if not len(values):
            return
        self.keys = np.concatenate([self.keys, self.rng.random(len(values))])
        self.values = np.concatenate([self.values, values])
        if len(self.keys) > 2 * self.size:
            self._cut()

    def _cut(self) -> None:
        if len(self.keys) > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.keys, self.values = self.keys[keep], self.values[keep]

    def result(self) -> np.ndarray:
        self._flush()
        self._cut()
        return np.sort(self.values)


def _budgeted(files: list[Path], seed: int, max_files: int, max_bytes: int) -> list[Path]:
    """The files to read: in a seeded order, until ``max_files`` or ``max_bytes`` is reached."""
    order = sorted(files)
    random.Random(seed).shuffle(order)
    chosen: list[Path] = []
    size = 0
    for f in order:
        if len(chosen) >= max_files or (chosen and size >= max_bytes):
            break
        chosen.append(f)
        size += f.stat().st_size
    return chosen


def _batches(path: Path, columns: list[str]) -> Iterator[dict[str, list]]:
    """Yield ``path``'s rows in batches as column lists (only ``columns`` that exist)."""
    pf = pq.ParquetFile(path)
    names = [c for c in columns if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=512, columns=names):
        yield batch.to_pydict()


def _job_steps(out: Path) -> list[dict[str, Any]]:
    try:
        job = json.loads((out / "_job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    steps = []
    for entry in job.get("job", {}).get("steps", []):
        if isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            steps.append({"name": name, "options": options or {}})
        else:
            steps.append({"name": str(entry), "options": {}})
    return steps


def _score_fields(step_names: list[str]) -> dict[str, str]:
    """Return ``{score column: step name}`` for every floating-point column a step writes."""
    from pipeline.core.registry import get_step_class

    fields: dict[str, str] = {}
    for name in step_names:
        try:
            cls = get_step_class(name)
        except KeyError:
            continue
        for key, dtype in cls.metadata_fields.items():
            if pa.types.is_floating(dtype):
                fields.setdefault(key, name)
    return fields


class JobOutputError(ValueError):
    """The folder given to ``pipeline inspect``/``show`` is not a finished job's output."""


def collect(out: str | os.PathLike, k: int = 6, seed: int = 0, max_files: int = 64,
            max_bytes: int = 1 << 30, step: str | None = None,
            reason: str | None = None) -> Inspection:
    """Sample the output folder ``out`` of a crawl job (see the module docstring).

    ``k`` documents per (step, reason) and for the kept sample; ``step``/``reason`` keep
    only those removal samples. Raises :class:`JobOutputError` when ``out`` has no
    ``stats.json``.
    """
    out = Path(out)
    try:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise JobOutputError(f"{out} has no readable stats.json; give the output folder of a "
                             "finished `pipeline run`") from None
    steps = _job_steps(out) or [{"name": s["name"], "options": {}} for s in stats["steps"]]
    order = {s["name"]: i for i, s in enumerate(steps)}
    score_step = _score_fields(list(order))
    rng = np.random.default_rng(seed)
    kept_values = {f: _Reservoir(MAX_SCORE_VALUES, rng) for f in score_step}
    removed_values = {f: _Reservoir(MAX_SCORE_VALUES, rng) for f in score_step}
    thresholds: dict[str, tuple[float, str]] = {}
    files_read: dict[str, tuple[int, int]] = {}

    def files_of(folder: str) -> list[Path]:
        every = sorted((out / folder).rglob("*.parquet")) if (out / folder).is_dir() else []
        chosen = _budgeted(every, seed, max_files, max_bytes)
        files_read[folder] = (len(chosen), len(every))
        return chosen

    removed: dict[tuple[str, str], _BottomK] = {}
    minhash = next((s["name"] for s in steps if s["name"].startswith("dedup_minhash")), None)
    clusters: dict[int, tuple[int, _BottomK]] = {}
    for path in files_of("removed"):
        for cols in _batches(path, ["id", "url", "removed_by", "reason", "metadata_json",
                                    "text"]):
            for i, doc_id in enumerate(cols["id"]):
                by, why = cols["removed_by"][i], cols["reason"][i]
                meta = json.loads(cols["metadata_json"][i] or "{}")
                _add_scores(meta, by, order, score_step, kept_values, removed_values, thresholds)
                key = sample_hash(doc_id, seed)
                if (step is None or by == step) and (reason is None or why == reason):
                    bucket = removed.setdefault((by, why), _BottomK(k))
                    if bucket.would_take(key):
                        bucket.offer(key, _sample(cols, i, meta, by, why))
                if by == minhash and "minhash_cluster" in meta:
                    _offer_cluster(clusters, meta, key, cols, i)

    kept = _BottomK(k)
    score_cols = list(score_step)
    for path in files_of("data"):
        for cols in _batches(path, ["id", "url", "text", "language", *score_cols]):
            for f in score_cols:
                if f in cols:
                    kept_values[f].add(np.array([v for v in cols[f] if v is not None], float))
            for i, doc_id in enumerate(cols["id"]):
                key = sample_hash(doc_id, seed)
                if kept.would_take(key):
                    meta = {f: cols[f][i] for f in [*score_cols, "language"] if f in cols}
                    kept.offer(key, _sample(cols, i, meta))

    changes: dict[str, _BottomK] = {}
    for path in files_of(SAMPLES_DIR):
        for cols in _batches(path, list(SAMPLES_FIELDS)):
            for i, doc_id in enumerate(cols["id"]):
                bucket = changes.setdefault(cols["step"][i], _BottomK(k))
                key = sample_hash(doc_id, seed)
                if bucket.would_take(key):
                    bucket.offer(key, ChangeSample(doc_id, cols["url"][i], cols["step"][i],
                                                   json.loads(cols["sample_json"][i])))

    options = {s["name"]: s["options"] for s in steps}
    for f, s in score_step.items():  # no removed document read: the threshold of the options
        for key, op in (("threshold", "<"), ("max_perplexity", ">")):
            value = options.get(s, {}).get(key)
            if f not in thresholds and isinstance(value, int | float):
                thresholds[f] = (float(value), op)
    scores = [Score(f, s, kept_values[f].result(), removed_values[f].result(),
                    *thresholds.get(f, (None, "")))
              for f, s in score_step.items()]
    scores = [s for s in scores if len(s.kept) or len(s.removed)]
    return Inspection(
        out=out, stats=stats, steps=steps,
        removed={key: b.items() for key, b in removed.items()},
        kept=kept.items(),
        changes={name: b.items() for name, b in changes.items()},
        scores=scores,
        clusters=_finish_clusters(out, clusters, minhash, seed, max_files, max_bytes),
        files_read=files_read, seed=seed,
    )


def _sample(cols: dict[str, list], i: int, meta: dict[str, Any], step: str | None = None,
            reason: str | None = None) -> Sample:
    scores = {k: v for k, v in meta.items() if isinstance(v, float)}
    return Sample(cols["id"][i], cols["url"][i], meta.get("language"), head_of(cols["text"][i]),
                  step, reason, meta.get(REJECTION_KEY), scores)


def _add_scores(meta: dict[str, Any], by: str, order: dict[str, int], score_step: dict[str, str],
                kept: dict[str, _Reservoir], removed: dict[str, _Reservoir],
                thresholds: dict[str, tuple[float, str]]) -> None:
    """File a removed document's scores: removed by the step that wrote the score, or kept
    by it (and removed by a later step)."""
    for f, s in score_step.items():
        v = meta.get(f)
        if not isinstance(v, int | float):
            continue
        if by == s:
            removed[f].add_one(float(v))
        elif order.get(by, -1) > order.get(s, -1):
            kept[f].add_one(float(v))
    rej = meta.get(REJECTION_KEY)
    if rej and rej.get("metric") in score_step and isinstance(rej.get("threshold"), int | float):
        thresholds.setdefault(rej["metric"], (float(rej["threshold"]), rej.get("op", "")))


def _offer_cluster(clusters: dict[int, tuple[int, _BottomK]], meta: dict[str, Any], key: int,
                   cols: dict[str, list], i: int) -> None:
    """Keep a removed near-duplicate if its cluster is among the largest seen so far."""
    cid, size = int(meta["minhash_cluster"]), int(meta.get("minhash_cluster_size") or 0)
    if cid not in clusters:
        if len(clusters) >= 4 * MAX_CLUSTERS:  # drop the smallest; it cannot come back on top
            smallest = min(clusters, key=lambda c: (clusters[c][0], -c))
            if (clusters[smallest][0], -smallest) >= (size, -cid):
                return
            del clusters[smallest]
        clusters[cid] = (size, _BottomK(MAX_CLUSTER_MEMBERS))
    members = clusters[cid][1]
    if members.would_take(key):
        members.offer(key, _sample(cols, i, meta, "", ""))


def _after_stage_of(out: Path, step: str) -> Path:
    """The folder holding the documents that left ``step``'s stage: the next stage's input
    under ``_stages/`` (texts as the step saw them, before later stages rewrote them), or
    ``data/`` when the step is in the last stage or that folder is gone."""
    try:
        plan = json.loads((out / "_plan.json").read_text(encoding="utf-8"))
        stage = next(k for k, names in enumerate(plan["stage_steps"]) if step in names)
    except (OSError, ValueError, KeyError, StopIteration):
        return out / "data"
    folder = out / "_stages" / f"stage-{stage + 1}"
    return folder if folder.is_dir() and any(folder.glob("*.parquet")) else out / "data"


def _finish_clusters(out: Path, clusters: dict[int, tuple[int, _BottomK]],
                     minhash: str | None, seed: int, max_files: int,
                     max_bytes: int) -> list[Cluster]:
    """Find the kept document of the largest clusters (:func:`_after_stage_of`); each
    member's similarity to it is the one ``dedup_minhash_v1`` recorded in its rejection."""
    if not clusters or minhash is None:
        return []
    top = sorted(clusters, key=lambda c: (-clusters[c][0], c))[:MAX_CLUSTERS]
    wanted = set(top)
    survivors: dict[int, Sample] = {}
    folder = _after_stage_of(out, minhash)
    every = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    for path in _budgeted(every, seed, max_files, max_bytes):
        pf = pq.ParquetFile(path)
        if "minhash_cluster" not in pf.schema_arrow.names:
            continue
        ids = pf.read(columns=["minhash_cluster"]).column(0).to_pylist()
        rows = [r for r, c in enumerate(ids) if c in wanted and c not in survivors]
        if not rows:
            continue
        table = pf.read(columns=["id", "url", "text", "minhash_cluster"]).take(rows).to_pydict()
        for j, c in enumerate(table["minhash_cluster"]):
            survivors[c] = _sample(table, j, {})
    return [Cluster(c, clusters[c][0], survivors.get(c),
                    [(sample, _recorded_similarity(sample)) for sample in clusters[c][1].items()])
            for c in top]


def _recorded_similarity(sample: Sample) -> float | None:
    """The similarity to the kept document a removed member's rejection holds (None in
    outputs written before the step recorded it)."""
    rej = sample.rejection or {}
    value = rej.get("value")
    if "to the kept document" not in rej.get("measure", "") or not isinstance(value, float):
        return None
    return value


def render_text(ins: Inspection, n: int = 3, width: int = 100) -> str:
    """Return the samples of ``ins`` as plain text for a terminal (``pipeline show``).

    Per step and reason (most frequent first): the count and up to ``n`` removed documents
    with URL, language, measured value and first lines; then what rewriting steps changed
    (removed lines marked ``-``, masked spans in ``[[...]]``) and the largest MinHash
    clusters; last, ``n`` kept documents.
    """
    out: list[str] = []

    def lines_of(text: str, indent: str = "    ") -> list[str]:
        return [indent + (line if len(line) <= width else line[: width - 1] + "…")
                for line in text.split("\n")]

    def doc(s: Sample) -> None:
        bits = [s.url or s.id]
        if s.language:
            bits.append(s.language)
        if s.measured:
            bits.append(s.measured)
        out.append("  * " + " | ".join(bits))
        out.extend(lines_of(s.head))

    by_name = {s["name"]: s for s in ins.stats["steps"]}
    for step in ins.steps:
        stat = by_name.get(step["name"])
        if stat is None:
            continue
        shown = [(r, c) for r, c in sorted(stat["dropped"].items(), key=lambda kv: -kv[1])
                 if (step["name"], r) in ins.removed]
        changes = ins.changes.get(step["name"], [])
        if not shown and not changes:
            continue
        out.append(f"== {step['name']}: {stat['docs_in']:,} in, {stat['docs_out']:,} kept")
        for reason, count in shown:
            out.append(f"-- {reason}: {count:,} removed")
            for s in ins.removed[(step["name"], reason)][:n]:
                doc(s)
        for c in changes[:n]:
            out.append(f"-- changed: {c.url or c.id}")
            if "lines" in c.record:
                out.extend(lines_of("\n".join(
                    (f"- {line}   [{rule}]" if rule else f"  {line}")
                    for line, rule in c.record["lines"])))
            else:
                text, pos, parts = c.record.get("text", ""), 0, []
                for start, end, _kind in c.record.get("spans", []):
                    parts += [text[pos:start], "[[", text[start:end], "]]"]
                    pos = end
                parts.append(text[pos:])
                out.extend(lines_of(head_of("".join(parts))))
        if step["name"].startswith("dedup_minhash"):
            for cl in ins.clusters:
                out.append(f"-- cluster of {cl.size:,}; kept: "
                           f"{cl.survivor.url if cl.survivor else '(not in the files read)'}")
                for s, sim in cl.members[:n]:
                    out.append(f"  * {s.url or s.id} | Jaccard to kept "
                               f"{'-' if sim is None else f'{sim:.2f}'}")
    if ins.kept:
        out.append("== kept by the job")
        for s in ins.kept[:n]:
            doc(s)
    if not out:
        out.append("nothing to show (no removed document or change sample matches)")
    return "\n".join(out)
