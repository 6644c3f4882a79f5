"""``job: train_filters``: train the KenLM, fastText and DSIR filter models from one job file.

Each section (``kenlm``, ``fasttext``, ``dsir``) is optional and runs the same code as its
command (``pipeline lm train``, ``pipeline classifier train``, ``pipeline dsir fit``);
outputs go under ``output``. The ``kenlm`` section can also score a raw sample and write
CCNet-style percentile cutoffs (``MODEL.cutoff.csv``: rows 0..100, one column for
``language``) for the ``kenlm_v1`` step's head/middle/tail buckets, since CCNet's own table
belongs to CCNet's models. Relative paths resolve against the current directory. The
DSIR counting fans out through one executor (Ray: ``pipeline run --address``, else
``RAY_ADDRESS``, else a local cluster).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, ValidationError

from pipeline.core.step import StepOptions
from pipeline.io.atomic import atomic_write_json
from pipeline.text.normalize import NormalizeOptions
from pipeline.text.quality import TrainOptions

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor

KIND = "train_filters"

_FASTTEXT = TrainOptions()  # the classifier's defaults, declared once in pipeline.text.quality


class KenLMSection(StepOptions):
    """``kenlm``: the perplexity model."""

    order: int = Field(5, ge=1)
    input: list[str] = Field(min_length=1)
    output: str = "kenlm.arpa"
    discount_fallback: bool = False
    build_binary: str | None = "auto"
    cutoffs_from: list[str] | None = Field(
        None, description="raw files whose document perplexities give the percentile table")
    language: str = "en"


class FastTextSection(StepOptions):
    """``fasttext``: the quality classifier."""

    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(min_length=1)
    output: str = "quality.bin"
    epoch: int = _FASTTEXT.epoch
    lr: float = _FASTTEXT.lr
    word_ngrams: int = _FASTTEXT.word_ngrams
    dim: int = _FASTTEXT.dim
    min_count: int = _FASTTEXT.min_count
    bucket: int = _FASTTEXT.bucket
    holdout: float = _FASTTEXT.holdout
    balance: bool = _FASTTEXT.balance
    seed: int = _FASTTEXT.seed


class DSIRSection(StepOptions):
    """``dsir``: the importance-resampling models."""

    target: list[str] = Field(min_length=1)
    raw: list[str] = Field(min_length=1)
    output: str = "dsir.npz"
    buckets: int = 10_000
    ngrams: int = 2
    max_tokens: int | None = None
    smoothing: float = 1.0


class TrainFiltersJob(StepOptions):
    """A validated ``job: train_filters`` file."""

    job: str = Field("train_filters", pattern="^train_filters$")
    name: str = "train_filters"
    output: str
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)
    kenlm: KenLMSection | None = None
    fasttext: FastTextSection | None = None
    dsir: DSIRSection | None = None


def write_cutoffs(model: str, files: list[str], out_csv: str, language: str,
                  normalization: NormalizeOptions) -> dict[str, float]:
    """Score every document of ``files`` and write CCNet-format percentile cutoffs."""
    from pipeline.text.corpus import expand_paths, iter_corpus
    from pipeline.text.kenlm.model import LanguageModel

    lm = LanguageModel.load(model, normalization)
    pps = [p for p in (lm.perplexity(t) for t in iter_corpus(expand_paths(files)))
           if p is not None]
    if not pps:
        raise ValueError(f"no scorable documents in {files}")
    pct = np.percentile(np.asarray(pps), np.arange(101))
    lines = [f",{language}"] + [f"{i},{v:.1f}" for i, v in enumerate(pct)]
    Path(out_csv).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"documents": len(pps), "p30": round(float(pct[30]), 1),
            "p60": round(float(pct[60]), 1)}


def train_filters(job: TrainFiltersJob, executor: Executor | None = None) -> dict[str, Any]:
    """Train the models the job names; return a summary (also written as ``summary.json``).

    DSIR counts its files through ``executor`` (default: a Ray executor, shut down after).
    """
    from pipeline.cli.dsir import fit
    from pipeline.text.kenlm.model import train_lm
    from pipeline.text.quality import train_classifier

    out = Path(job.output)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"job": job.name, "output": str(out)}
    norm = job.normalization
    t0 = time.time()
    if job.kenlm is not None:
        k = job.kenlm
        model = str(out / k.output)
        print(f"[train_filters] KenLM order {k.order} -> {model}", flush=True)
        summary["kenlm"] = train_lm(k.input, model, k.order, norm, k.discount_fallback,
                                    k.build_binary)
        if k.cutoffs_from:
            csv = str(Path(model).with_suffix(".cutoff.csv"))
            summary["kenlm"]["cutoffs"] = {"csv": csv, **write_cutoffs(
                model, k.cutoffs_from, csv, k.language, norm)}
    if job.fasttext is not None:
        f = job.fasttext
        model = str(out / f.output)
        print(f"[train_filters] fastText classifier -> {model}", flush=True)
        opts = TrainOptions(**f.model_dump(exclude={"positive", "negative", "output"}),
                            normalization=norm)
        summary["fasttext"] = train_classifier(f.positive, f.negative, model, opts)
    if job.dsir is not None:
        d = job.dsir
        model = str(out / d.output)
        print(f"[train_filters] DSIR models -> {model}", flush=True)
        if norm != NormalizeOptions():
            raise ValueError("dsir fit uses the default normalisation; remove 'normalization'")
        summary["dsir"] = fit(d.target, d.raw, model, d.buckets, d.ngrams, d.max_tokens,
                              d.smoothing, executor=executor)
    summary["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(summary, out / "summary.json", indent=1, sort_keys=False)
    return summary


def validate(data: dict[str, Any], where: str) -> TrainFiltersJob:
    """Validate a ``job: train_filters`` dict; JobConfigError (prefixed ``where: ``) if bad."""
    from pipeline.core.config import JobConfigError, _format_validation_error

    try:
        return TrainFiltersJob(**data)
    except ValidationError as e:
        raise JobConfigError(f"{where}: " + _format_validation_error(e)) from None


def run_from_file(path: str, overrides: dict[str, Any] | None = None,
                  executor: Executor | None = None) -> dict[str, Any]:
    """Validate and run a ``job: train_filters`` YAML file; return the summary.

    ``overrides`` replaces top-level keys (e.g. ``{"output": ...}``). Raises
    :class:`pipeline.core.config.JobConfigError` for an invalid file.
    """
    from pipeline.core.config import load_job_dict

    data = {**load_job_dict(path), **(overrides or {})}
    return train_filters(validate(data, path), executor)


def run(data: dict[str, Any], args: argparse.Namespace) -> int:
    """Run the job file ``data`` (``--output``, ``--address`` apply); print the summary."""
    from pipeline.execution.executor import make_executor

    job = validate({**data, **({"output": args.output} if args.output else {})}, args.job)
    executor = make_executor("ray", address=args.address)
    try:
        report = train_filters(job, executor)
    finally:
        executor.shutdown()
    print(json.dumps(report, indent=1, default=str))
    return 0
