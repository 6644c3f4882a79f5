"""``pipeline ablate prepare``: filter the pool per arm, tokenize, write the prepared folder.

Arms are ordered step lists. Every distinct prefix of an arm is one crawl job whose input
is the output of the prefix one step shorter, so steps shared by several arms (the same
steps, same options, in the same order) run once. Each job is an ordinary resumable
pipeline job, so a killed prepare rerun continues where it stopped. All jobs of one
prepare share one executor (one Ray cluster, joined or started once).

The prepared folder (``OUTPUT/prepared``) holds only what training needs: ``plan.json``,
``tokenizer/``, ``eval/<name>/``, and the arms' documents cut to the token budget: each
distinct document once in ``pool/`` and every arm's choice of them in
``selections/<arm>.npy`` (see :mod:`pipeline.ablation.pool`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.ablation.config import AblationConfig
from pipeline.ablation.pool import TokenPool, stream_documents, write_selection
from pipeline.core.config import JobConfigError, expand_inputs
from pipeline.io.atomic import atomic_write_json

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor



def _step_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


#: model-based filters -> (score metadata key, lower is better); equal selection replaces
#: each one's own cut with select_top_v1 on its score
SCORED_FILTERS = {"kenlm_v1": ("perplexity", True), "fasttext_quality_v1": ("quality_score", False)}
#: filters whose own options already take a fraction of their input
FRACTION_FILTERS = {"dsir_v1", "fasttext_quality_top_v1"}
REPEAT_WARN = 4.0  # Muennighoff et al. 2023: beyond ~4 epochs repeated tokens lose value


def equal_selection_steps(steps: list[Any], fraction: float) -> list[Any]:
    """``steps`` with every model-based filter keeping ``fraction`` of its input.

    ``kenlm_v1`` and ``fasttext_quality_v1`` only annotate (no bucket, perplexity or
    threshold cut) and are followed by ``select_top_v1`` on their score; ``dsir_v1`` and
    ``fasttext_quality_top_v1`` get ``fraction`` (``num_documents`` removed).
    """
    out: list[Any] = []
    for entry in steps:
        name = _step_name(entry)
        opts = {} if isinstance(entry, str) else dict(entry[name] or {})
        if name in SCORED_FILTERS:
            for key in ("keep_buckets", "max_perplexity"):
                opts.pop(key, None)
            if name == "fasttext_quality_v1":
                opts["threshold"] = None
            field, lowest = SCORED_FILTERS[name]
            out += [{name: opts},
                    {"select_top_v1": {"field": field, "fraction": fraction, "lowest": lowest}}]
        elif name in FRACTION_FILTERS:
            opts.pop("num_documents", None)
            out.append({name: {**opts, "fraction": fraction}})
        else:
            out.append(entry)
    return out


def design_arms(cfg: AblationConfig) -> dict[str, list[Any]]:
    """Each arm's steps as the design runs them (rewritten under ``equal_selection``)."""
    if cfg.design == "equal_selection":
        return {a: equal_selection_steps(s, cfg.selection_fraction) for a, s in cfg.arms.items()}
    return dict(cfg.arms)


def _run(job: dict[str, Any], executor: Executor) -> dict[str, Any]:
    from pipeline.execution.runner import run_job

    return run_job(job, executor=executor)


def ablation_executor(cfg: AblationConfig, address: str | None = None) -> Executor:
    """Return the Ray executor that the ablation's ``ray`` section (or ``address``) names.

    Raises JobConfigError for an unknown or invalid key in ``ray``.
    """
    from pydantic import ValidationError

    from pipeline.core.config import RayOptions, _format_validation_error
    from pipeline.execution.executor import make_executor

    try:
        ray = RayOptions(**cfg.ray)
    except ValidationError as e:
        raise JobConfigError(_format_validation_error(e, "ray")) from None
    return make_executor("ray", address=address or ray.address, num_cpus=ray.num_cpus,
                         max_retries=ray.max_retries)


def _parquet_glob(out: Path, what: str) -> list[str]:
    files = sorted((out / "data").glob("*.parquet"))
    if not files:
        raise JobConfigError(f"{what} kept no documents ({out}); loosen its steps")
    return [str(f) for f in files]


def run_arm_steps(
    cfg: AblationConfig, files: list[str], executor: Executor, tail: list[Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every arm's steps, then ``tail`` (the same last steps for every arm), sharing
    common prefixes; return per-arm outputs and counts."""
    out = Path(cfg.output)
    nodes: dict[str, tuple[Path, dict[str, Any]]] = {}
    arms: dict[str, dict[str, Any]] = {}
    for arm, arm_steps in design_arms(cfg).items():
        steps = [*arm_steps, *(tail or [])]
        inputs = files
        for k in range(len(steps)):
            key = json.dumps(steps[: k + 1], sort_keys=True)
            if key not in nodes:
                digest = hashlib.sha256(key.encode()).hexdigest()[:10]
                node_dir = out / "nodes" / f"{digest}-{_step_name(steps[k])}"
                job = {
                    "name": f"{cfg.name}/{arm}/{_step_name(steps[k])}",
                    "inputs": inputs,
                    "output": str(node_dir),
                    "steps": [steps[k]],
                    "read": {"keep_columns": True, "html_only": False},
                    "write": {"checkpoint_docs": 1000},
                    "ray": cfg.ray,
                }
                nodes[key] = (node_dir, _run(job, executor))
            node_dir, _stats = nodes[key]
            inputs = _parquet_glob(node_dir, f"arm {arm!r} after step {k + 1}")
        first_stats = nodes[json.dumps(steps[:1], sort_keys=True)][1]
        arms[arm] = {
            "steps": steps,
            "documents_in": first_stats["documents_in"],
            "documents_kept": nodes[key][1]["documents_out"],
            "characters_kept": nodes[key][1]["characters_out"],
            "files": inputs,
        }
        if tail and _step_name(tail[-1]) == "decontaminate_v1":
            arms[arm]["decontamination"] = _decontamination_losses(nodes[key][1])
    return arms


def _decontamination_losses(stats: dict[str, Any]) -> dict[str, Any]:
    """The documents an arm lost to its last step, ``decontaminate_v1``, in total and per
    evaluation file (the ``evals`` entry that shared the most n-grams)."""
    step = stats["steps"][-1]
    prefix = "contaminated:"
    return {"documents_in": step["docs_in"],
            "documents_removed": step["dropped"].get("contaminated", 0),
            "by_eval_file": {k[len(prefix):]: v for k, v in sorted(step["counters"].items())
                             if k.startswith(prefix)}}


def eval_texts(cfg: AblationConfig, heldout: list[str], executor: Executor
               ) -> dict[str, tuple[list[str], list[Any]]]:
    """Return, per eval stream, the files holding its text and the steps left to run on them.

    A file stream is its file and its own steps. ``heldout_web`` is extracted and
    language-filtered once here (its steps included) into ``OUTPUT/eval_text/``, so the
    arms can be decontaminated against the same text the stream is tokenized from.
    """
    texts: dict[str, tuple[list[str], list[Any]]] = {}
    for name, spec in cfg.eval.items():
        source, extra = (spec, []) if isinstance(spec, str) else (spec.path, spec.steps)
        if source != "heldout_web":
            texts[name] = (expand_inputs([source]), extra)
            continue
        steps = ["extract_v1", {"langid_v1": {"languages": ["en"]}}, *extra]
        key = json.dumps([heldout, steps], sort_keys=True)
        node_dir = Path(cfg.output) / "eval_text" / (
            f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")
        _run({"name": f"{cfg.name}/eval_text/{name}", "inputs": heldout,
              "output": str(node_dir), "steps": steps, "write": {"checkpoint_docs": 1000},
              "ray": cfg.ray}, executor)
        texts[name] = (_parquet_glob(node_dir, f"eval {name!r}"), [])
    return texts


def decontamination_step(texts: dict[str, tuple[list[str], list[Any]]]) -> dict[str, Any]:
    """The ``decontaminate_v1`` step against every eval stream's files (each file once)."""
    files = list(dict.fromkeys(f for stream_files, _ in texts.values() for f in stream_files))
    return {"decontaminate_v1": {"evals": files}}


def write_tokenizer_corpus(files: list[str], path: Path, eos: str, max_bytes: int) -> int:
    """Write documents' text from Parquet ``files`` separated by ``eos``; return bytes written."""
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(columns=["text"], batch_size=512):
                for text in batch.column(0).to_pylist():
                    chunk = text + eos
                    f.write(chunk)
                    written += len(chunk.encode("utf-8"))
                    if written >= max_bytes:
                        return written
    return written


def build_tokenizer(cfg: AblationConfig, arms: dict[str, dict[str, Any]], dest: Path) -> Path:
    """Copy or train the shared tokenizer into ``dest``; return it."""
    from tokenizer import Tokenizer, train_bpe

    if (dest / "tokenizer.json").exists():
        return dest
    spec = cfg.tokenizer
    if spec.path:
        src = Path(spec.path)
        if not (src / "tokenizer.json").exists():
            raise JobConfigError(f"tokenizer.path: {src} holds no tokenizer.json")
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return dest
    assert spec.train is not None
    corpus = Path(cfg.output) / "tokenizer_corpus.txt"
    write_tokenizer_corpus(arms[spec.train.arm]["files"], corpus, spec.eos_token, spec.train.max_bytes)
    vocab, merges = train_bpe(corpus, spec.train.vocab_size, [spec.eos_token], progress=True)
    tmp = dest.with_name(dest.name + ".tmp")
    Tokenizer(vocab, merges, [spec.eos_token]).save(tmp)
    tmp.replace(dest)
    return dest


def tokenize(
    cfg: AblationConfig, name: str, inputs: list[str], steps: list[Any], tok: Path,
    executor: Executor,
) -> Path:
    """Run ``steps`` then ``tokenize_v1`` on ``inputs``; return the full stream directory.

    The folders are named by what decides their content (inputs, steps, tokenizer), so a
    changed arm or tokenizer gets fresh ones and an unchanged one is reused.
    """
    from tokenizer.formats import tokenizer_hash

    key = json.dumps([inputs, steps, tokenizer_hash(tok)], sort_keys=True)
    name = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    out = Path(cfg.output) / "tokenize" / name
    stream = Path(cfg.output) / "streams_full" / name
    job = {
        "name": f"{cfg.name}/tokenize/{name}",
        "inputs": inputs,
        "output": str(out),
        "steps": [*steps, {"tokenize_v1": {"tokenizer": str(tok.resolve()),
                                            "eos_token": cfg.tokenizer.eos_token,
                                            "output": str(stream.resolve())}}],
        "write": {"checkpoint_docs": 1000},
        "ray": cfg.ray,
    }
    _run(job, executor)
    return stream


def choose_documents(src: Path, max_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """A seeded subset of whole documents of stream ``src`` (ids with EOS), in stream order.

    Each document's rank is a seeded hash of its ids, and documents are taken in rank order
    until ``max_tokens`` are reached: a random sample over every shard of the stream, and
    one shared by the arms (a document that two arms keep ranks the same in both), so
    arms differ by what their filters removed rather than by which documents the cut drew.
    """
    docs = list(stream_documents(src))
    salt = seed.to_bytes(8, "little", signed=True)
    rank = np.array([int.from_bytes(hashlib.blake2b(salt + d.tobytes(), digest_size=8).digest(),
                                    "little") for d in docs], dtype=np.uint64)
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    order = np.argsort(rank, kind="stable")
    n = int(np.searchsorted(np.cumsum(lengths[order]), max_tokens)) + 1
    chosen = np.zeros(len(docs), dtype=bool)
    chosen[order[:n]] = True
    return [ids for ids, keep in zip(docs, chosen, strict=True) if keep]


def cut_stream(src: Path, dest: Path, max_tokens: int, seed: int = 0) -> dict[str, Any]:
    """Copy :func:`choose_documents` of stream ``src`` into the stream ``dest``; return
    the new manifest."""
    from tokenizer.token_stream import write_manifest, write_token_stream

    manifest = json.loads((src / "manifest.json").read_text())
    docs = (ids[:-1] for ids in choose_documents(src, max_tokens, seed))  # the writer adds EOS
    if dest.exists():
        shutil.rmtree(dest)
    part = write_token_stream(docs, dest, "part-00000.arrow", manifest["dtype"], manifest["eos_id"])
    return write_manifest(dest, [part], manifest["dtype"], manifest["eos_id"],
                          manifest["vocab_size"], manifest["tokenizer_hash"])


def prepare(cfg: AblationConfig, address: str | None = None,
            executor: Executor | None = None) -> Path:
    """Filter, tokenize and cut every arm and eval stream; return the prepared folder.

    Every job runs on ``executor``, default one :func:`ablation_executor` (``address``
    overrides the ``ray`` section's), shut down at the end. Raises JobConfigError when an
    arm has fewer tokens than the budget (unless ``repeat_data``), naming every arm's
    token count.
    """
    if executor is not None:
        return _prepare(cfg, executor)
    executor = ablation_executor(cfg, address)
    try:
        return _prepare(cfg, executor)
    finally:
        executor.shutdown()


def _prepare(cfg: AblationConfig, executor: Executor) -> Path:
    out = Path(cfg.output)
    prepared = out / "prepared"
    files = expand_inputs(cfg.pool)
    if len(files) <= cfg.heldout_files:
        raise JobConfigError(
            f"pool: {len(files)} file(s), but heldout_files is {cfg.heldout_files}; "
            "the arms need at least one file that is not held out"
        )
    arm_files, heldout = files[: -cfg.heldout_files], files[-cfg.heldout_files :]
    texts = eval_texts(cfg, heldout, executor)
    tail = [decontamination_step(texts)] if cfg.decontaminate else []
    arms = run_arm_steps(cfg, arm_files, executor, tail)
    prepared.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(cfg, arms, prepared / "tokenizer")

    for arm, info in arms.items():
        stream = tokenize(cfg, arm, info["files"], [], tok, executor)
        info["stream"] = str(stream)
        info["tokens_kept"] = json.loads((stream / "manifest.json").read_text())["total_tokens"]
    short = {a: i["tokens_kept"] for a, i in arms.items() if i["tokens_kept"] < cfg.budget_tokens}
    if short and not cfg.repeat_data:
        counts = ", ".join(f"{a}: {i['tokens_kept']:,}" for a, i in arms.items())
        raise JobConfigError(
            f"budget_tokens: {cfg.budget_tokens:,} is more than the smallest arm provides "
            f"({counts}); lower budget_tokens to at most {min(short.values()):,} or set "
            "repeat_data: true to repeat the smaller arms' data"
        )
    pool = TokenPool()
    like: dict[str, Any] = {}
    for arm, info in arms.items():
        stream = Path(info.pop("stream"))
        like = json.loads((stream / "manifest.json").read_text())
        docs = choose_documents(stream, cfg.budget_tokens)
        write_selection(prepared, arm, [pool.add(d) for d in docs])
        info["tokens_in_stream"] = int(sum(len(d) for d in docs))
        info["documents_in_stream"] = len(docs)
        # what training sees: distinct tokens, repeat factor, share of them trained on
        info["distinct_tokens"] = info["tokens_in_stream"]
        info["repeats"] = cfg.budget_tokens / info["tokens_in_stream"]
        info["fraction_trained"] = min(1.0, info["repeats"])
        info["control"] = any(_step_name(s).startswith("control_") for s in info["steps"])
        del info["files"]
    pool_manifest = pool.write(prepared, like)
    shutil.rmtree(prepared / "streams", ignore_errors=True)  # the layout before the pool

    evals: dict[str, dict[str, Any]] = {}
    for name, spec in cfg.eval.items():
        source = spec if isinstance(spec, str) else spec.path
        extra = [] if isinstance(spec, str) else spec.steps
        stream = tokenize(cfg, f"eval-{name}", *texts[name], tok, executor)
        manifest = cut_stream(stream, prepared / "eval" / name, cfg.eval_max_tokens)
        evals[name] = {"source": source if source != "heldout_web" else heldout, "steps": extra,
                       "tokens": manifest["total_tokens"], "documents": manifest["total_docs"]}

    warnings = [f"arm {a!r} repeats its {i['distinct_tokens']:,} distinct tokens "
                f"{i['repeats']:.1f} times at budget_tokens {cfg.budget_tokens:,}; beyond "
                f"{REPEAT_WARN:g} repeats extra epochs are worth much less than new data "
                "(Muennighoff et al. 2023): lower budget_tokens, loosen the arm, or use "
                "design: equal_selection" for a, i in arms.items() if i["repeats"] > REPEAT_WARN]
    for w in warnings:
        print(f"warning: {w}", flush=True)
    plan = {
        "name": cfg.name,
        "design": cfg.design,
        "selection_fraction": cfg.selection_fraction if cfg.design == "equal_selection" else None,
        "warnings": warnings,
        "arms": arms,
        "arm_order": list(cfg.arms),  # JSON files here sort their keys
        "eval": evals,
        "budget_tokens": cfg.budget_tokens,
        "repeat_data": cfg.repeat_data,
        "seeds": cfg.seeds,
        "model": cfg.model,
        "train": cfg.train,
        "tokenizer": cfg.tokenizer.model_dump(),
        "samples": cfg.samples.model_dump(),
        "pool": {"documents": pool_manifest["total_docs"], "tokens": pool_manifest["total_tokens"]},
        "decontamination": tail[0]["decontaminate_v1"] if tail else None,
    }
    atomic_write_json(plan, prepared / "plan.json")
    return prepared
