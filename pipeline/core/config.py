"""Job files: YAML validated into typed options before anything runs.

A crawl job names its inputs (paths and globs), its output folder, the read options, an
ordered list of steps (each a one-key mapping ``step_name: {options}`` or a bare name),
the write options and where Ray runs. Relative paths are resolved against the current
directory. Any unknown key, wrong type, unknown step, input matching no file or missing
file a step needs (its model, tokenizer or target) raises :class:`JobConfigError` with
one message naming the key or path.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from pipeline.core.registry import get_step_class
from pipeline.core.step import Step, StepCheckError, StepOptions
from pipeline.io.readers import ReadOptions


class JobConfigError(ValueError):
    """A job file that cannot run, with a message naming the key or path to fix."""


class OutputFolderError(JobConfigError):
    """The job's output folder cannot be used: a part of its path is a file, it cannot be
    created or written, or it holds another job's output. The message names the fix."""


class WriteOptions(StepOptions):
    """Where and how the output is written."""

    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    keep_removed: bool = Field(False, description="also write removed documents with reasons")
    checkpoint_docs: int = Field(
        2000, gt=0, description="input documents per output part and per resume checkpoint"
    )


class RayOptions(StepOptions):
    """How the job uses Ray; ``address`` None starts a local cluster (or uses RAY_ADDRESS)."""

    address: str | None = None
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the local cluster")
    max_retries: int = Field(3, ge=0, description="retries of a shard task whose worker died")


class JobConfig(StepOptions):
    """A validated crawl job."""

    job: Literal["crawl"] = "crawl"
    name: str = "crawl"
    executor: Literal["ray", "local"] = Field(
        "ray", description="ray: tasks on a Ray cluster; local: every task in this process"
    )
    inputs: list[str] = Field(min_length=1)
    output: str
    read: ReadOptions = Field(default_factory=ReadOptions)
    steps: list[Any] = Field(default_factory=list)
    write: WriteOptions = Field(default_factory=WriteOptions)
    ray: RayOptions = Field(default_factory=RayOptions)


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """Return one line per problem: ``key.path: message``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_steps(raw_steps: list[Any]) -> list[Step]:
    """Build step objects from the YAML ``steps`` list; raise JobConfigError on a bad entry."""
    steps: list[Step] = []
    for i, entry in enumerate(raw_steps):
        where = f"steps[{i}]"
        if isinstance(entry, str):
            name, opts = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, opts = next(iter(entry.items()))
            opts = opts or {}
        else:
            raise JobConfigError(
                f"{where}: expected a step name or a one-key mapping 'step_name: {{options}}', "
                f"got {entry!r}"
            )
        try:
            cls = get_step_class(str(name))
        except KeyError as e:
            raise JobConfigError(f"{where}: {e.args[0]}") from None
        if not isinstance(opts, dict):
            raise JobConfigError(f"{where}.{name}: options must be a mapping, got {opts!r}")
        try:
            options = cls.Options(**opts)
        except ValidationError as e:
            raise JobConfigError(_format_validation_error(e, f"{where}.{name}")) from None
        steps.append(cls(options))
    return steps


def expand_inputs(patterns: list[str]) -> list[str]:
    """Return the sorted, de-duplicated files the ``inputs`` patterns name.

    Raises JobConfigError naming the first pattern that matches nothing.
    """
    files: list[str] = []
    for i, pattern in enumerate(patterns):
        expanded = os.path.expanduser(pattern)
        matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not matches:
            raise JobConfigError(
                f"inputs[{i}]: {pattern!r} matches no file (resolved against {os.getcwd()}); "
                "fix the path or run from the folder it is relative to"
            )
        files.extend(os.path.abspath(m) for m in matches)
    return list(dict.fromkeys(files))


def load_job_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a job YAML file into a dict; JobConfigError if missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise JobConfigError(f"job file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise JobConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise JobConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def validate_job(data: dict[str, Any], output: str | None = None) -> tuple[JobConfig, list[Step]]:
    """Validate a crawl job dict; return the config and its built steps.

    ``output`` overrides the job's output folder. Raises JobConfigError.
    """
    if output is not None:
        data = {**data, "output": output}
    try:
        job = JobConfig(**data)
    except ValidationError as e:
        raise JobConfigError(_format_validation_error(e)) from None
    steps = parse_steps(job.steps)
    check_steps(steps)
    expand_inputs(job.inputs)
    return job, steps


def check_steps(steps: list[Step]) -> None:
    """Run every step's :meth:`Step.check` (model files, tokenizers, targets exist).

    Raises JobConfigError with one line naming the step and option, e.g.
    ``steps[2].kenlm_v1.model: file 'x.arpa' does not exist; train it with ...``.
    """
    for i, step in enumerate(steps):
        try:
            step.check()
        except StepCheckError as e:
            raise JobConfigError(f"steps[{i}].{step.name}.{e.key}: {e.message}") from None
