"""The ablation job file, validated before anything runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.core.config import JobConfigError, _format_validation_error, parse_steps
from pipeline.core.step import StepOptions


class TokenizerTraining(StepOptions):
    """Train the shared tokenizer on the text of one arm (its filtered documents)."""

    arm: str = Field(description="arm whose output text is the training corpus")
    vocab_size: int = Field(8192, ge=512)
    max_bytes: int = Field(50_000_000, gt=0, description="corpus size cap, in UTF-8 bytes")


class TokenizerSpec(StepOptions):
    """Either an existing tokenizer directory or a training recipe."""

    path: str | None = None
    train: TokenizerTraining | None = None
    eos_token: str = "<|endoftext|>"

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSpec:
        if (self.path is None) == (self.train is None):
            raise ValueError("give exactly one of 'path' (a tokenizer directory) or 'train'")
        return self


DEFAULT_PROMPTS = [
    "The history of the city",
    "In mathematics, a prime number",
    "The best way to",
]


class SampleSpec(StepOptions):
    """Continuations of the same prompts by every arm's model, shown in the report."""

    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPTS))
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.8, ge=0.0, description="0 = greedy")
    top_k: int | None = Field(50, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int = 0


class EvalSpec(StepOptions):
    """An evaluation stream: a file (or ``heldout_web``) and steps run on it before
    tokenizing, e.g. ``[whitespace_v1]`` to put plain text in extracted-HTML form."""

    path: str
    steps: list[Any] = Field(default_factory=list)


class AblationConfig(StepOptions):
    """A validated ablation job."""

    job: Literal["ablation"] = "ablation"
    name: str = "ablation"
    output: str
    pool: list[str] = Field(min_length=1, description="raw pool inputs (paths, globs)")
    heldout_files: int = Field(
        1, ge=1, description="last N pool files kept out of every arm for the web eval stream"
    )
    arms: dict[str, list[Any]] = Field(min_length=1, description="arm name -> ordered steps")
    tokenizer: TokenizerSpec
    budget_tokens: int = Field(gt=0, description="training tokens per arm and seed")
    eval_max_tokens: int = Field(
        2_000_000, gt=0, description="each eval stream is a seeded sample of whole documents "
        "up to this many tokens; the last step scores all of it")
    repeat_data: bool = Field(False, description="allow arms smaller than the budget")
    design: Literal["budget", "equal_selection"] = Field(
        "budget", description="budget: filters keep what their options say; equal_selection: "
        "every model-based filter (kenlm_v1, fasttext_quality_v1, dsir_v1) keeps "
        "selection_fraction of its input, so arms differ in which documents, not how many")
    selection_fraction: float = Field(0.5, gt=0.0, le=1.0,
                                      description="share each model-based filter keeps "
                                      "under design: equal_selection")
    eval: dict[str, str | EvalSpec] = Field(
        min_length=1,
        description="name -> JSONL/Parquet file (tokenized as is), or 'heldout_web' for the "
        "held-out pool files after extraction and English language ID, or {path, steps}",
    )
    decontaminate: bool = Field(
        True, description="append decontaminate_v1 against the eval streams' text to every arm"
    )
    seeds: list[int] = Field(min_length=1)
    model: dict[str, Any]
    train: dict[str, Any] = Field(default_factory=dict)
    samples: SampleSpec = Field(default_factory=SampleSpec)
    ray: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, steps in arms.items():
            if not steps:
                raise ValueError(f"arm {name!r} has no steps")
            if not all(ch.isalnum() or ch in "+-_." for ch in name):
                raise ValueError(f"arm name {name!r}: use letters, digits and + - _ .")
        return arms


def validate_ablation(data: dict[str, Any], output: str | None = None) -> AblationConfig:
    """Validate an ablation job dict (steps included); raise JobConfigError naming the key."""
    # Keys starting with "x-" hold YAML anchors for the arms (as in docker-compose files).
    data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    if output is not None:
        data = {**data, "output": output}
    try:
        cfg = AblationConfig(**data)
    except ValidationError as e:
        raise JobConfigError(_format_validation_error(e)) from None
    for arm, steps in cfg.arms.items():
        try:
            parse_steps(steps)
        except JobConfigError as e:
            raise JobConfigError(f"arms.{arm}.{e}") from None
    for name, spec in cfg.eval.items():
        if isinstance(spec, EvalSpec):
            try:
                parse_steps(spec.steps)
            except JobConfigError as e:
                raise JobConfigError(f"eval.{name}.{e}") from None
    if cfg.tokenizer.train and cfg.tokenizer.train.arm not in cfg.arms:
        raise JobConfigError(
            f"tokenizer.train.arm: {cfg.tokenizer.train.arm!r} is not one of the arms "
            f"({', '.join(cfg.arms)})"
        )
    if cfg.seeds and len(set(cfg.seeds)) != len(cfg.seeds):
        raise JobConfigError("seeds: repeated seed")
    return cfg
