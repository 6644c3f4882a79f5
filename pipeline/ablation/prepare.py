"""``pipeline ablate prepare``: filter the pool per arm, tokenize, write the prepared folder.

Arms are ordered step lists. Every distinct prefix of an arm is one crawl job whose input
is the output of the prefix one step shorter, so steps shared by several arms (the same
steps, same options, in the same order) run once. Each job is an ordinary resumable
pipeline job, so a killed prepare rerun continues where it stopped.

The prepared folder (``OUTPUT/prepared``) holds only what training needs: ``plan.json``,
``tokenizer/``, ``streams/<arm>/`` cut to the token budget, and ``eval/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ablation.config import AblationConfig
from pipeline.config import JobConfigError, expand_inputs
from pipeline.writer import atomic_write_json

EVAL_MAX_TOKENS = 2_000_000


def _step_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


def _run(job: dict[str, Any], address: str | None) -> dict[str, Any]:
    from pipeline.runner import run_job

    return run_job(job, address=address)


def _parquet_glob(out: Path, what: str) -> list[str]:
    files = sorted((out / "data").glob("*.parquet"))
    if not files:
        raise JobConfigError(f"{what} kept no documents ({out}); loosen its steps")
    return [str(f) for f in files]


def run_arm_steps(
    cfg: AblationConfig, files: list[str], address: str | None
) -> dict[str, dict[str, Any]]:
    """Run every arm's steps, sharing common prefixes; return per-arm outputs and counts."""
    out = Path(cfg.output)
    nodes: dict[str, tuple[Path, dict[str, Any]]] = {}
    arms: dict[str, dict[str, Any]] = {}
    for arm, steps in cfg.arms.items():
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
                nodes[key] = (node_dir, _run(job, address))
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
    return arms


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
    address: str | None,
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
    _run(job, address)
    return stream


def _stream_documents(src: Path, manifest: dict[str, Any]):
    """Yield every document's ids (EOS included) of a stream, in stream order."""
    for entry in manifest["files"]:
        with pa.memory_map(str(src / entry["path"])) as mm:
            reader = pa.ipc.open_file(mm)
            for b in range(reader.num_record_batches):
                yield from reader.get_batch(b).column(0).to_numpy(zero_copy_only=False)


def cut_stream(src: Path, dest: Path, max_tokens: int, seed: int = 0) -> dict[str, Any]:
    """Copy a seeded random subset of whole documents of stream ``src`` into ``dest``.

    Documents are drawn in a random order (fixed by ``seed``) until ``max_tokens`` are
    reached, then written in their stream order, so the cut samples every shard of the
    arm rather than its first files. Returns the new manifest.
    """
    import numpy as np

    from tokenizer.stream_writer import write_manifest, write_token_stream

    manifest = json.loads((src / "manifest.json").read_text())
    lengths = np.array([len(ids) for ids in _stream_documents(src, manifest)], dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(lengths))
    n = int(np.searchsorted(np.cumsum(lengths[order]), max_tokens)) + 1
    chosen = np.zeros(len(lengths), dtype=bool)
    chosen[order[:n]] = True
    # the writer appends EOS itself
    docs = (ids[:-1].tolist() for ids, keep in zip(_stream_documents(src, manifest), chosen, strict=True) if keep)
    if dest.exists():
        shutil.rmtree(dest)
    part = write_token_stream(docs, dest, "part-00000.arrow", manifest["dtype"], manifest["eos_id"])
    return write_manifest(dest, [part], manifest["dtype"], manifest["eos_id"],
                          manifest["vocab_size"], manifest["tokenizer_hash"])


def prepare(cfg: AblationConfig, address: str | None = None) -> Path:
    """Filter, tokenize and cut every arm and eval stream; return the prepared folder.

    Raises JobConfigError when an arm has fewer tokens than the budget (unless
    ``repeat_data``), naming every arm's token count.
    """
    out = Path(cfg.output)
    prepared = out / "prepared"
    files = expand_inputs(cfg.pool)
    if len(files) <= cfg.heldout_files:
        raise JobConfigError(
            f"pool: {len(files)} file(s), but heldout_files is {cfg.heldout_files}; "
            "the arms need at least one file that is not held out"
        )
    arm_files, heldout = files[: -cfg.heldout_files], files[-cfg.heldout_files :]
    arms = run_arm_steps(cfg, arm_files, address)
    prepared.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(cfg, arms, prepared / "tokenizer")

    for arm, info in arms.items():
        stream = tokenize(cfg, arm, info["files"], [], tok, address)
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
    for arm, info in arms.items():
        manifest = cut_stream(Path(info.pop("stream")), prepared / "streams" / arm,
                              cfg.budget_tokens)
        info["tokens_in_stream"] = manifest["total_tokens"]
        info["documents_in_stream"] = manifest["total_docs"]
        info["repeats"] = cfg.budget_tokens / manifest["total_tokens"]
        del info["files"]

    evals: dict[str, dict[str, Any]] = {}
    for name, source in cfg.eval.items():
        if source == "heldout_web":
            steps = ["extract_v1", {"langid_v1": {"languages": ["en"]}}]
            stream = tokenize(cfg, f"eval-{name}", heldout, steps, tok, address)
        else:
            stream = tokenize(cfg, f"eval-{name}", expand_inputs([source]), [], tok, address)
        manifest = cut_stream(stream, prepared / "eval" / name, EVAL_MAX_TOKENS)
        evals[name] = {"source": source if source != "heldout_web" else heldout,
                       "tokens": manifest["total_tokens"], "documents": manifest["total_docs"]}

    plan = {
        "name": cfg.name,
        "arms": arms,
        "arm_order": list(cfg.arms),  # JSON files here sort their keys
        "eval": evals,
        "budget_tokens": cfg.budget_tokens,
        "repeat_data": cfg.repeat_data,
        "seeds": cfg.seeds,
        "model": cfg.model,
        "train": cfg.train,
        "tokenizer": cfg.tokenizer.model_dump(),
    }
    atomic_write_json(plan, prepared / "plan.json")
    return prepared
