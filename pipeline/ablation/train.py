"""``pipeline ablate train DIR``: train every arm and seed of a prepared ablation.

Needs only torch, numpy and pyarrow (the GPU machine has nothing else). Each finished
(arm, seed) run is recorded in ``ablation.json`` at once, so a killed run rerun skips the
finished ones (and an unfinished one resumes from its checkpoint).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_write_json

TRAIN_DEFAULTS: dict[str, Any] = {
    "seq_len": 256,
    "batch_size": 16,
    "grad_accum": 1,
    "lr": 1e-3,
    "warmup_frac": 0.05,
    "schedule": "cosine",
    "evals": 8,
    "eval_windows": 512,
    "compile": "auto",
}


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_json(obj, path, indent=1, sort_keys=True)


def run_config(plan: dict[str, Any], prepared: Path, out: Path, arm: str, seed: int,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the ``model.train`` config of one (arm, seed) run at the plan's token budget.

    Every arm's run with the same seed starts from the same weights (the model config does
    not depend on the arm) and draws its windows by the same rule (seeded epochs), so runs
    pair by seed across arms."""
    t = {**TRAIN_DEFAULTS, **plan.get("train", {}), **(overrides or {})}
    sampler = t.pop("sampler", "epochs")
    tokens_per_step = t["seq_len"] * t["batch_size"] * t["grad_accum"]
    max_steps = max(1, math.ceil(plan["budget_tokens"] / tokens_per_step))
    eval_every = max(1, max_steps // max(1, t["evals"]))
    train = {k: v for k, v in t.items() if k not in {"seq_len", "warmup_frac", "evals"}}
    train.update(
        seed=seed,
        max_steps=max_steps,
        warmup_steps=max(1, int(t["warmup_frac"] * max_steps)),
        eval_every=eval_every,
        log_every=max(1, eval_every // 2),
        ckpt_every=max_steps,  # runs are short: resume is per finished run (ablation.json)
        out_dir=str(out / "runs" / f"{arm}-seed{seed}"),
        resume=True,
    )
    return {
        "job": "train",
        "model": {"vocab_size": "auto", **plan["model"]},
        "data": {
            "train": str(out / "streams" / arm),
            "eval": {name: str(prepared / "eval" / name) for name in plan["eval"]},
            "seq_len": t["seq_len"],
            "sampler": sampler,
            "tokenizer": str(prepared / "tokenizer"),
        },
        "train": train,
    }


def sample_run(run_dir: Path, tokenizer_dir: Path, spec: dict[str, Any],
               eos_token: str | None = None) -> list[dict[str, str]]:
    """Continue ``spec["prompts"]`` with the final checkpoint in ``run_dir`` (stopping at
    ``eos_token``); returns one ``{"prompt", "text"}`` per prompt. The sampling seed is the
    same for every arm, so the arms' samples differ only by their models."""
    import torch

    from model.generate import generate_text, load_checkpoint
    from tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    model = load_checkpoint(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    texts = generate_text(model, tok, spec["prompts"], spec["max_new_tokens"],
                          spec["temperature"], spec.get("top_k"), spec.get("top_p"),
                          spec.get("seed", 0), tok.special_tokens.get(eos_token or ""))
    return [{"prompt": p, "text": t} for p, t in zip(spec["prompts"], texts, strict=True)]


def train_one(plan: dict[str, Any], prepared: Path, out: Path, arm: str, seed: int,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one (arm, seed) run and sample from it; return its ``ablation.json`` entry.

    The arm's stream must already be in ``out/streams/<arm>`` (:func:`train_all` writes it
    with :func:`~pipeline.ablation.pool.materialize_arm` before any run starts)."""
    from model.train import run
    info = plan["arms"][arm]
    cfg = run_config(plan, prepared, out, arm, seed, overrides)
    print(f"== arm {arm} seed {seed}: {cfg['train']['max_steps']} steps", flush=True)
    summary = run(cfg)
    tokens_per_step = (cfg["data"]["seq_len"] * cfg["train"]["batch_size"]
                       * cfg["train"]["grad_accum"])
    entry = {
        "arm": arm,
        "seed": seed,
        "documents_kept": info["documents_kept"],
        "tokens_kept": info["tokens_kept"],
        "tokens_trained": summary["steps"] * tokens_per_step,
        "params": summary["params"],
        "status": summary["status"],
        "loss_curve": [[int(s) * tokens_per_step, v]
                       for s, v in sorted(summary["train_losses"].items(), key=lambda kv: int(kv[0]))],
        "eval_curve": {
            name: [[int(s) * tokens_per_step, ev[name]]
                   for s, ev in sorted(summary["eval_losses"].items(), key=lambda kv: int(kv[0]))]
            for name in plan["eval"]
        },
        "final_eval": summary["final_eval"],
        "final_eval_subset": summary.get("final_eval_subset", {}),
        # per-document summed NLL and tokens of the whole eval streams, relative to `out`
        "eval_docs": {name: os.path.relpath(path, out)
                      for name, path in summary.get("eval_docs", {}).items()},
        "init_digest": summary.get("init_digest"),
        "sampler": summary.get("sampler"),
        "tokens_per_s": summary["tokens_per_s"],
    }
    if plan.get("samples", {}).get("prompts"):
        entry["samples"] = sample_run(Path(cfg["train"]["out_dir"]), prepared / "tokenizer",
                                      plan["samples"], plan.get("tokenizer", {}).get("eos_token"))
    return entry


def train_all(prepared: str | os.PathLike, out: str | os.PathLike | None = None,
              overrides: dict[str, Any] | None = None, parallel: int = 1,
              arms: list[str] | None = None, seeds: list[int] | None = None,
              budget_tokens: int | None = None,
              model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every arm and seed in ``prepared``; write ``ablation.json`` and the report.

    ``out`` defaults to the prepared folder's parent. ``overrides`` change training
    options (e.g. ``{"batch_size": 32}``) for every run. ``parallel`` > 1 trains that many
    runs at once in separate processes: a small model leaves one GPU mostly idle between
    kernel launches, and concurrent runs fill those gaps. ``arms``, ``seeds``,
    ``budget_tokens`` and ``model`` (keys replacing the plan's model section) run a
    variant of the plan, e.g. a larger proxy model on some arms; use a separate ``out``
    for each variant. Returns the ablation record.
    """
    from pipeline.ablation.report import write_report

    prepared = Path(prepared)
    for needed in ("plan.json", "pool/manifest.json"):
        if not (prepared / needed).is_file():
            raise FileNotFoundError(
                f"{prepared / needed} is missing: {prepared} is not a prepared ablation folder "
                "of this version; run `pipeline ablate prepare JOB.yaml` and carry its "
                "`prepared` folder")
    plan = json.loads((prepared / "plan.json").read_text(encoding="utf-8"))
    unknown = [a for a in arms or [] if a not in plan["arms"]]
    if unknown:
        raise ValueError(f"arms {unknown} are not in {prepared / 'plan.json'} "
                         f"({', '.join(plan['arm_order'])})")
    if arms is not None:
        plan["arm_order"] = [a for a in plan["arm_order"] if a in arms]
        plan["arms"] = {a: plan["arms"][a] for a in plan["arm_order"]}
    if seeds is not None:
        plan["seeds"] = list(seeds)
    if budget_tokens is not None:
        plan["budget_tokens"] = int(budget_tokens)
    if model is not None:
        plan["model"] = dict(model)
    out = Path(out) if out is not None else prepared.parent
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "ablation.json"
    record = (json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists()
              else {"name": plan["name"], "budget_tokens": plan["budget_tokens"], "runs": []})
    if record["budget_tokens"] != plan["budget_tokens"]:
        raise ValueError(f"{record_path} holds runs at {record['budget_tokens']:,} tokens, not "
                         f"{plan['budget_tokens']:,}; use another output folder")
    record["model"] = plan["model"]
    record["arms"], record["arm_order"], record["eval"] = plan["arms"], plan["arm_order"], plan["eval"]
    done = {(r["arm"], r["seed"]) for r in record["runs"]}
    # Seeds outside arms: a run stopped early still has every arm for the first seeds.
    todo = [(arm, seed) for seed in plan["seeds"] for arm in plan["arm_order"]
            if (arm, seed) not in done]

    from pipeline.ablation.pool import materialize_arm

    for arm in dict.fromkeys(arm for arm, _ in todo):  # before any worker reads them
        materialize_arm(prepared, arm, out / "streams" / arm)

    def finish(entry: dict[str, Any]) -> None:
        record["runs"].append(entry)
        _write_json(record, record_path)

    if parallel <= 1:
        for arm, seed in todo:
            finish(train_one(plan, prepared, out, arm, seed, overrides))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: CUDA cannot be used in a forked child of a process that touched it
        with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(train_one, plan, prepared, out, arm, seed, overrides)
                       for arm, seed in todo]
            failed = []
            for fut in as_completed(futures):
                try:
                    finish(fut.result())
                except Exception as e:  # record the other runs; a rerun retries this one
                    failed.append(e)
        if failed:
            raise RuntimeError(f"{len(failed)} ablation run(s) failed; finished runs are in "
                               f"{record_path}, rerun to retry") from failed[0]
    _write_json(record, record_path)
    write_report(record, out)
    return record
