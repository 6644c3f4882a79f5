"""The real trainer on a synthetic packed token stream: throughput as the trainer reports it.

    PYTHONUNBUFFERED=1 python benchmarks/model_train_run.py --tokens 50000000 --steps 40

Writes a `refinery-tokens-v1` stream of random documents (uint16 ids) to a scratch directory,
then runs ``model.train.run`` with ``jobs/train.yaml`` plus overrides on it (so the Arrow
reader, sampler, compile, bf16 autocast, fused AdamW, logging and checkpointing are all in the
measurement) and prints the summary. Unlike benchmarks/model_bench.py this includes host-side
batch assembly from the memory-mapped stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.train import load_config, run  # noqa: E402


def write_random_stream(path: Path, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    """Random documents (mean length ~1000 tokens, EOS-terminated) in the packed format."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 2000, size=n_tokens // 1000 + 1)
    lengths = lengths[np.cumsum(lengths) <= n_tokens]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = rng.integers(1, vocab, size=int(offsets[-1]), dtype=np.uint16)
    values[offsets[1:] - 1] = 0  # EOS id 0 ends each document
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.uint16()))
    path.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("tokens", pa.list_(pa.uint16()))])
    with pa.OSFile(str(path / "part-00000.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        w.write_batch(pa.record_batch([arr], schema=schema))
    manifest = {"format": "refinery-tokens-v1", "dtype": "uint16", "eos_id": 0,
                "vocab_size": vocab, "tokenizer_hash": "synthetic",
                "files": [{"path": "part-00000.arrow", "num_tokens": int(offsets[-1]),
                           "num_docs": len(lengths)}],
                "total_tokens": int(offsets[-1]), "total_docs": len(lengths)}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def main() -> int:
    """Write the stream, train, print the summary (JSON) and save it under --out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50_000_000)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--preset", default="125m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--doc-masking", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="refinery-train-"))
    train = write_random_stream(scratch / "train", args.tokens, 50257)
    val = write_random_stream(scratch / "val", 2_000_000, 50257, seed=1)
    overrides = {"model.preset": args.preset, "data.train": str(train),
                 "data.doc_masking": args.doc_masking,
                 "train.out_dir": str(scratch / "run"), "train.max_steps": args.steps,
                 "train.batch_size": args.batch, "train.grad_accum": 1,
                 "train.warmup_steps": 10, "train.log_every": 10, "train.eval_every": args.steps,
                 "train.eval_batches": 4, "train.ckpt_every": args.steps}
    config = load_config(ROOT / "jobs" / "train.yaml", overrides)
    config["data"]["eval"] = {"val": str(val)}  # replace the job's eval streams
    summary = run(config)
    brief = {k: v for k, v in summary.items() if k not in ("train_losses", "eval_losses")}
    print(json.dumps(brief, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
