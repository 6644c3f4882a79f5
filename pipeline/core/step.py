"""The uniform step interface: a generator of documents in and out.

A step is one class in one module under ``pipeline/steps/``, registered under a versioned
YAML name such as ``gopher_quality_v1``. It declares its options as a pydantic model (so a
wrong key or type in the job file is refused before anything runs) and the metadata
columns it adds (so every output shard has the same schema).

Filters implement one method, :meth:`Filter.reject_reason`, returning ``None`` to keep a
document or a short reason string to drop it; the base class counts reasons and hands
dropped documents to the removed-documents sink. A filter with its own counters adds to
them with :meth:`Filter.count` from inside ``reject_reason``. A rule that measured a value
returns a :class:`Rejection` (a reason string that also carries the value, the threshold and
the comparison that failed); the base class stores it in the removed document's metadata
under :data:`REJECTION_KEY`, so a report shows "alphabetic words 0.62 < 0.80" without
measuring again. Kept documents never carry that key.

Steps that rewrite documents (dropping lines, masking spans) record what they changed for
a few documents per shard, chosen by a hash of the id (:meth:`StepContext.wants_sample`),
with :meth:`StepContext.record_sample`; the runner writes those records beside the removed
documents (``samples/``) for the job report, and the kept documents' output is unchanged.

Steps that hold loaded state (a model, a child process) name those attributes in
``transient_attrs``: pickling resets them to ``None`` and ``setup`` rebuilds them in the
worker. Steps that read files (models, tokenizers, target corpora) override
:meth:`Step.check`, which job validation calls before anything starts.
"""

from __future__ import annotations

import glob
import os
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from pipeline.core.document import Document

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class StepOptions(BaseModel):
    """Base for step options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepStats:
    """Counters one step keeps for one shard; they add up across shards."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the counters."""
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "dropped": dict(self.dropped),
            "counters": dict(self.counters),
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        """Rebuild stats from :meth:`to_dict` output."""
        return cls(
            docs_in=d.get("docs_in", 0),
            docs_out=d.get("docs_out", 0),
            chars_in=d.get("chars_in", 0),
            chars_out=d.get("chars_out", 0),
            dropped=Counter(d.get("dropped", {})),
            counters=Counter(d.get("counters", {})),
            seconds=d.get("seconds", 0.0),
        )

    def merge(self, other: StepStats) -> None:
        """Add another shard's counters into these."""
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.seconds += other.seconds


RemovedSink = Callable[[Document, str, str], None]

#: metadata key of a removed document holding its :class:`Rejection` as a dict
REJECTION_KEY = "_rejection"


class Rejection(str):
    """A drop reason that also says what the rule measured: ``value op threshold`` held.

    It is the reason string itself (``Rejection("gopher_below_alpha_threshold", ...) ==
    "gopher_below_alpha_threshold"``), so code comparing reasons is unchanged. ``measure``
    names the quantity for people (``"alphabetic words"``); ``metric`` is the metadata key
    the value is stored under when it is a score the step writes (``"language_score"``);
    ``op`` is the comparison that made the rule fail (``"<"``, ``">"``, ``"not in"``).
    """

    value: Any
    threshold: Any
    op: str
    measure: str
    metric: str | None

    def __new__(cls, reason: str, value: Any = None, threshold: Any = None, op: str = "",
                measure: str = "", metric: str | None = None) -> Rejection:
        self = super().__new__(cls, reason)
        self.value, self.threshold, self.op = value, threshold, op
        self.measure, self.metric = measure, metric
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Rejection, (str(self), self.value, self.threshold, self.op, self.measure,
                            self.metric))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record stored under :data:`REJECTION_KEY` (no None fields)."""
        d = {"value": self.value, "threshold": self.threshold, "op": self.op,
             "measure": self.measure, "metric": self.metric}
        return {k: v for k, v in d.items() if v not in (None, "")}


#: a document is sampled when the low 32 bits of the CRC of its id fall under this share
SAMPLE_RATE = 1 / 4
#: at most this many samples per step and shard (the report needs a handful per step)
MAX_SAMPLES_PER_SHARD = 8


def sample_hash(doc_id: str, seed: int = 0) -> int:
    """Return a deterministic 32-bit hash of ``doc_id`` (and ``seed``) for sampling."""
    return zlib.crc32(doc_id.encode("utf-8", "surrogatepass"), seed & 0xFFFFFFFF)


@dataclass(frozen=True)
class ContextMark:
    """What a :class:`StepContext` had recorded at one moment (see :meth:`StepContext.mark`)."""

    stats: dict[str, Any]
    n_samples: int
    sampled: Counter


@dataclass
class StepContext:
    """What a running step may use: its stats, the sink for removed documents and the list
    its change samples go to (``samples``: ``(doc, step, record)``, or None: not recorded)."""

    stats: StepStats
    removed: RemovedSink | None = None
    shard_id: str = ""
    samples: list[tuple[Document, str, dict[str, Any]]] | None = None
    _sampled: Counter = field(default_factory=Counter)

    def drop(self, doc: Document, step_name: str, reason: str) -> None:
        """Count a removed document under ``reason`` and pass it to the removed sink.

        The sink gets ``reason`` as given: a :class:`Rejection` reaches the removed-documents
        writer, which stores its record under :data:`REJECTION_KEY` in the document's
        ``metadata_json``; the count is under the plain reason string.
        """
        self.stats.dropped[str(reason)] += 1
        if self.removed is not None:
            self.removed(doc, step_name, reason)

    def wants_sample(self, doc: Document, step_name: str) -> bool:
        """True when ``doc`` is one whose changes by ``step_name`` should be recorded.

        The choice is by a hash of the id (:data:`SAMPLE_RATE`, the same in every run) and
        at most :data:`MAX_SAMPLES_PER_SHARD` per step in this shard; never when samples
        are not collected. Ask only for documents the step did change.
        """
        return (self.samples is not None
                and self._sampled[step_name] < MAX_SAMPLES_PER_SHARD
                and sample_hash(doc.id) < SAMPLE_RATE * 2**32)

    def record_sample(self, doc: Document, step_name: str, record: dict[str, Any]) -> None:
        """Keep ``record`` (what ``step_name`` changed in ``doc``, JSON-ready) for the report."""
        if self.samples is not None:
            self._sampled[step_name] += 1
            self.samples.append((doc, step_name, record))

    def mark(self) -> ContextMark:
        """The counters, samples and per-step sample counts recorded so far, for :meth:`rewind`."""
        return ContextMark(self.stats.to_dict(),
                           len(self.samples) if self.samples is not None else 0,
                           self._sampled.copy())

    def rewind(self, mark: ContextMark) -> None:
        """Forget what was recorded since ``mark``: fresh counters from it, the samples taken
        since dropped and no longer counted toward the per-shard cap (work that raised is
        redone as if it had never run)."""
        self.stats = StepStats.from_dict(mark.stats)
        if self.samples is not None:
            del self.samples[mark.n_samples:]
        self._sampled = mark.sampled.copy()


class StepCheckError(ValueError):
    """An option of a step that names something unusable (a missing model file).

    ``key`` is the option's name (``model``, ``target[0]``); job validation prefixes it
    with the step's place in the job (``steps[2].kenlm_v1.model: ...``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class UndeclaredMetadataError(RuntimeError):
    """A step wrote a metadata key it does not declare in ``metadata_fields``.

    The writer only writes declared keys, so the value would be lost. Raised by the
    runner (naming the step) and by the writer (naming the key); never skipped per document.
    """

    def __init__(self, key: str, step: str | None = None) -> None:
        who = f"step {step!r} wrote" if step else "a document has"
        super().__init__(
            f"{who} metadata key {key!r} that no step declares; add it to the step's "
            "metadata_fields (with its Arrow type) so it is written, or do not set it"
        )
        self.key = key
        self.step = step


def require_file(key: str, path: str | None, fix: str) -> None:
    """Raise :class:`StepCheckError` for option ``key`` unless ``path`` is None or a file.

    ``fix`` ends the message: what the user does about it (``train it with ...``).
    """
    if path is not None and not os.path.isfile(os.path.expanduser(path)):
        what = "is a folder, not a file" if os.path.isdir(os.path.expanduser(path)) else (
            "does not exist")
        raise StepCheckError(key, f"file {path!r} {what}; {fix}")


def require_folder(key: str, path: str, files: Iterable[str], fix: str) -> None:
    """Raise :class:`StepCheckError` unless ``path`` is a folder holding every one of ``files``."""
    folder = os.path.expanduser(path)
    if not os.path.isdir(folder):
        raise StepCheckError(key, f"folder {path!r} does not exist; {fix}")
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise StepCheckError(key, f"folder {path!r} has no {', '.join(map(repr, missing))}; {fix}")


def require_match(key: str, pattern: str, fix: str) -> None:
    """Raise :class:`StepCheckError` unless the path or glob ``pattern`` names a file."""
    if not any(os.path.isfile(p) for p in glob.glob(os.path.expanduser(pattern))):
        raise StepCheckError(key, f"{pattern!r} matches no file; {fix}")


def require_sidecar(key: str, path: str, fix: str) -> None:
    """Raise :class:`StepCheckError` unless the model ``path`` has its ``.meta.json`` sidecar.

    ``fix`` ends the message, as in :func:`require_file`.
    """
    sidecar = os.path.expanduser(path) + ".meta.json"
    if not os.path.isfile(sidecar):
        raise StepCheckError(
            key, f"model {path!r} has no sidecar {os.path.basename(sidecar)!r} (it was not "
            f"written by the training command); {fix}")


class Step(ABC):
    """A pipeline step: ``run`` takes documents and yields documents."""

    name: ClassVar[str]
    Options: ClassVar[type[StepOptions]] = StepOptions
    #: metadata keys this step adds, with their Arrow types (become Parquet columns)
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {}
    #: attributes holding state built where the step runs (loaded models, child processes):
    #: pickling resets them to ``None``, so the worker's :meth:`setup` builds them again.
    #: Each class lists its own; those of every base class count too.
    transient_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: StepOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def setup(self) -> None:  # noqa: B027 - optional hook, most steps need no setup
        """Load models or other heavy state; called once in the worker before ``run``."""

    def check(self) -> None:  # noqa: B027 - optional hook, most steps read no files
        """Check the files the options name (model, tokenizer, target) before the job starts.

        Called by job validation in the driver, before any worker or Ray starts; cheap
        (existence checks, no loading). Raises :class:`StepCheckError` naming the option.
        """

    def __getstate__(self) -> dict[str, Any]:
        """Return the instance state with every ``transient_attrs`` attribute set to None."""
        state = dict(self.__dict__)
        for cls in type(self).__mro__:
            for attr in cls.__dict__.get("transient_attrs", ()):
                if attr in state:
                    state[attr] = None
        return state

    @abstractmethod
    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield the documents that leave this step (possibly changed)."""


class Filter(Step):
    """A step that keeps or drops each document, with a reason for each drop."""

    #: the context of the shard being filtered, for :meth:`count` (set by :meth:`run`)
    _ctx: StepContext | None = None
    transient_attrs = ("_ctx",)

    @abstractmethod
    def reject_reason(self, doc: Document) -> str | None:
        """Return ``None`` to keep ``doc``, or a short reason (``"too_few_words"``) to drop it.

        The reason may be a :class:`Rejection` carrying the measured value and threshold.
        May add this step's scores to ``doc.metadata`` either way, and count outcomes
        with :meth:`count`.
        """

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to this shard's counter ``key`` (created even when ``n`` is 0).

        Outside :meth:`run` (``reject_reason`` called directly) nothing is counted.
        """
        if self._ctx is not None:
            self._ctx.stats.counters[key] += n

    def wants_sample(self, doc: Document) -> bool:
        """True when this step's changes to ``doc`` should be recorded (see
        :meth:`StepContext.wants_sample`); False outside :meth:`run`."""
        return self._ctx is not None and self._ctx.wants_sample(doc, self.name)

    def record_sample(self, doc: Document, record: dict[str, Any]) -> None:
        """Record what this step changed in ``doc`` (:meth:`StepContext.record_sample`)."""
        if self._ctx is not None:
            self._ctx.record_sample(doc, self.name, record)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield the documents :meth:`reject_reason` keeps; count and sink the rest."""
        for doc in docs:
            # Bound per document, not once per run: runs are lazy generators, and two
            # runs of one step may interleave; each document counts into its own run's.
            self._ctx = ctx
            reason = self.reject_reason(doc)
            if reason is None:
                yield doc
            else:
                ctx.drop(doc, self.name, reason)


class Mapper(Step):
    """A step that changes each document in place and drops none."""

    @abstractmethod
    def apply(self, doc: Document, ctx: StepContext) -> Document:
        """Return the changed document."""

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield every document after :meth:`apply`."""
        for doc in docs:
            yield self.apply(doc, ctx)


@dataclass(frozen=True)
class StageShard:
    """One shard's documents as written by the stage before a :class:`GlobalStep`.

    ``files`` are Parquet parts in order; :meth:`documents` yields the documents in that
    order, so ``(shard_id, position)`` is a deterministic global order.
    """

    shard_id: str
    files: tuple[str, ...]

    def documents(self) -> Iterator[Document]:
        """Yield the shard's documents, metadata columns restored into ``metadata``."""
        from pipeline.io.writer import read_documents_parquet

        for path in self.files:
            yield from read_documents_parquet(path)

    def text_batches(self, columns: Iterable[str] = ("id", "text"),
                     batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """Yield the shard's ``columns`` as Arrow record batches, without building Documents.

        Rows come in :meth:`documents` order (so a row's running position is its document's
        position); a batch holds at most ``batch_size`` rows and never spans two parts. The
        ``text`` column is Arrow ``string`` (int32 offsets into one UTF-8 buffer), so native
        code can read it without a Python ``str`` per document. Only the named columns are
        decoded from Parquet. A part lacking one of ``columns`` raises ``ValueError``
        naming the part.
        """
        import pyarrow.parquet as pq

        names = list(columns)
        for path in self.files:
            pf = pq.ParquetFile(path)
            missing = [c for c in names if c not in pf.schema_arrow.names]
            if missing:
                raise ValueError(f"{path}: stage part has no column {missing[0]!r}; it was not "
                                 "written by the pipeline's writer (rerun the stage)")
            yield from pf.iter_batches(batch_size=batch_size, columns=names)


class GlobalStep(Step):
    """A step whose decisions need every shard of the job at once (deduplication).

    The runner finishes all shards up to this step and writes them as an intermediate
    stage; it then calls :meth:`prepare` once in the driver, which fans out its work
    through the given executor (never Ray directly) and writes its decisions under
    ``workdir`` (resumably: a rerun after a kill must reuse finished work and reach the
    same decisions); then, in one task per shard, it calls :meth:`load` with that shard's
    id and runs :meth:`run` on the shard's documents in their stage order.
    """

    @abstractmethod
    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Compute and persist the decisions for every shard under ``workdir``.

        Parallel work goes through ``executor`` (:mod:`pipeline.execution.executor`).
        """

    @abstractmethod
    def load(self, workdir: str, shard_id: str) -> None:
        """Load the decisions for ``shard_id`` before :meth:`run` is called on it."""

    def seek(self, position: int) -> None:
        """Make the next document :meth:`run` (or a table method) sees document ``position``
        of the shard's stage order.

        The runner calls it after :meth:`load` with the number of documents earlier attempts
        finished, and before it redoes a chunk that raised, so a step whose decisions depend
        on how often an id was seen (a shard that repeats ids) matches each document as an
        uninterrupted run does. The default does nothing (decisions independent of order).
        """
