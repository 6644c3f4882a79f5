"""Export a trained checkpoint as a Hugging Face model folder other tools can load.

    python -m model.export CKPT OUT --format hf [--dtype float32|bfloat16|float16]
                                                [--tokenizer DIR]

``CKPT`` is a run directory, a step folder or a ``state.pt`` written by ``model.train``.
``OUT`` receives ``model.safetensors``, ``config.json``, ``generation_config.json`` and the
run's tokenizer files (``tokenizer.json``, ``vocab.json``, ``merges.txt`` and a
``tokenizer_config.json``; the tokenizer is the run's ``data.tokenizer`` unless
``--tokenizer`` names one).

The default architecture (pre-norm RMSNorm, rotary positions, SwiGLU, grouped-query
attention) is written as ``LlamaForCausalLM``; the GPT-2 preset (``gpt2-124m``: learned
positions, LayerNorm with bias, GELU MLP, biases) as ``GPT2LMHeadModel``. A model using an
option the target class cannot express (ALiBi, QK-norm, soft-capping, sliding windows,
experts, post-norm, ...) is refused with the list of those options: an export that loads
but computes something else would be worse than none.

The safetensors file is written here (its format is a JSON header and raw little-endian
tensors), so only torch is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.generate import load_checkpoint, resolve_checkpoint, tokenizer_dir_of
from model.model import ModelConfig, Transformer

DTYPES = {"float32": (torch.float32, "F32"), "bfloat16": (torch.bfloat16, "BF16"),
          "float16": (torch.float16, "F16")}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


class UnsupportedExport(ValueError):
    """The model uses options the requested Hugging Face class cannot express."""


# ---- which class ---------------------------------------------------------------------------


def _differences(cfg: ModelConfig, wanted: dict[str, Any]) -> list[str]:
    return [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in wanted.items()
            if getattr(cfg, k) != v]


def hf_architecture(cfg: ModelConfig) -> str:
    """Return ``"gpt2"`` or ``"llama"``: the Hugging Face class that computes exactly what
    ``cfg`` does; raise :class:`UnsupportedExport` naming every option that neither can."""
    common = _differences(cfg, {"norm_placement": "pre", "qk_norm": False,
                                "attn_logit_softcap": None, "final_logit_softcap": None,
                                "sliding_window": None, "n_experts": 0})
    if cfg.mlp == "gelu" or cfg.pos_encoding == "learned":
        bad = common + _differences(cfg, {
            "norm_type": "layernorm", "pos_encoding": "learned", "mlp": "gelu", "bias": True,
            "tie_embeddings": True, "n_kv_heads": cfg.n_heads})
        kind = "GPT2LMHeadModel"
    else:
        bad = common + _differences(cfg, {"norm_type": "rmsnorm", "pos_encoding": "rope",
                                          "mlp": "swiglu"})
        kind = "LlamaForCausalLM"
    if bad:
        raise UnsupportedExport(f"cannot export as {kind}: " + "; ".join(bad))
    return "gpt2" if kind == "GPT2LMHeadModel" else "llama"


# ---- tensors and config --------------------------------------------------------------------


def llama_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under ``LlamaForCausalLM``'s names (fused QKV and gate/up split apart)."""
    cfg = model.config
    H, KV, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(model.layers):
        pre = f"model.layers.{i}."
        attn, ffn = block.attn, block.ffn
        for kind in ("weight", "bias"):
            qkv = getattr(attn.wqkv, kind)
            if qkv is None:
                continue
            q, k, v = qkv.split([H * D, KV * D, KV * D], dim=0)
            gate, up = getattr(ffn.w13, kind).chunk(2, dim=0)
            out.update({pre + f"self_attn.q_proj.{kind}": q, pre + f"self_attn.k_proj.{kind}": k,
                        pre + f"self_attn.v_proj.{kind}": v,
                        pre + f"self_attn.o_proj.{kind}": getattr(attn.wo, kind),
                        pre + f"mlp.gate_proj.{kind}": gate, pre + f"mlp.up_proj.{kind}": up,
                        pre + f"mlp.down_proj.{kind}": getattr(ffn.w2, kind)})
        out[pre + "input_layernorm.weight"] = block.attn_norm.weight
        out[pre + "post_attention_layernorm.weight"] = block.ffn_norm.weight
    return out


def llama_config(cfg: ModelConfig) -> dict[str, Any]:
    """``config.json`` of the ``LlamaForCausalLM`` equal to ``cfg``."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
            "head_dim": cfg.head_dim, "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta, "rope_scaling": None,
            "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": cfg.bias,
            "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout,
            "initializer_range": cfg.init_std}


def gpt2_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under ``GPT2LMHeadModel``'s names (its Conv1D layers store ``[in, out]``)."""
    out = {"transformer.wte.weight": model.tok_emb.weight,
           "transformer.wpe.weight": model.pos_emb.weight,
           "transformer.ln_f.weight": model.norm.weight, "transformer.ln_f.bias": model.norm.bias}
    for i, block in enumerate(model.layers):
        pre = f"transformer.h.{i}."
        for ours, theirs in ((block.attn_norm, "ln_1"), (block.ffn_norm, "ln_2")):
            out[pre + theirs + ".weight"], out[pre + theirs + ".bias"] = ours.weight, ours.bias
        for ours, theirs in ((block.attn.wqkv, "attn.c_attn"), (block.attn.wo, "attn.c_proj"),
                             (block.ffn.w1, "mlp.c_fc"), (block.ffn.w2, "mlp.c_proj")):
            out[pre + theirs + ".weight"] = ours.weight.t()
            out[pre + theirs + ".bias"] = ours.bias
    return out


def gpt2_config(cfg: ModelConfig) -> dict[str, Any]:
    """``config.json`` of the ``GPT2LMHeadModel`` equal to ``cfg``."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.max_seq_len, "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_ff,
            "activation_function": "gelu_new", "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps, "initializer_range": cfg.init_std,
            "scale_attn_weights": True, "tie_word_embeddings": True}


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, dtype: str = "float32") -> None:
    """Write ``tensors`` (cast to ``dtype``) as one safetensors file at ``path``."""
    torch_dtype, code = DTYPES[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch_dtype).contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": code, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
    tmp.replace(path)


# ---- tokenizer -----------------------------------------------------------------------------


def copy_tokenizer(tok_dir: Path, out: Path, max_len: int) -> dict[str, int]:
    """Copy the tokenizer files of ``tok_dir`` into ``out`` with a ``tokenizer_config.json``;
    return the special tokens' ids that name bos/eos (``<|endoftext|>``) when present."""
    missing = [f for f in TOKENIZER_FILES if not (tok_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer {tok_dir} lacks {missing}; pass --tokenizer DIR "
                                "written by `tokenizer train`")
    for name in TOKENIZER_FILES:
        shutil.copyfile(tok_dir / name, out / name)
    added = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8")).get(
        "added_tokens", [])
    specials = {t["content"]: int(t["id"]) for t in added}
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                              "model_max_length": max_len, "clean_up_tokenization_spaces": False}
    ids: dict[str, int] = {}
    if "<|endoftext|>" in specials:
        config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>")
        ids = {"bos_token_id": specials["<|endoftext|>"], "eos_token_id": specials["<|endoftext|>"]}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return ids


# ---- entry point ---------------------------------------------------------------------------


def export_hf(checkpoint: str | Path, out: str | Path, dtype: str = "float32",
              tokenizer: str | Path | None = None) -> str:
    """Write the checkpoint as a Hugging Face folder ``out``; return the class name written.

    Raises :class:`UnsupportedExport` for options the class cannot express and
    FileNotFoundError when no tokenizer is recorded or given.
    """
    file = resolve_checkpoint(checkpoint)
    model = load_checkpoint(file)
    cfg = model.config
    arch = hf_architecture(cfg)
    tok_dir = tokenizer if tokenizer is not None else tokenizer_dir_of(file)
    if tok_dir is None:
        raise FileNotFoundError(f"{file}: the run records no tokenizer (data.tokenizer); pass "
                                "--tokenizer DIR")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = gpt2_tensors(model) if arch == "gpt2" else llama_tensors(model)
    write_safetensors(tensors, out / "model.safetensors", dtype)
    ids = copy_tokenizer(Path(tok_dir), out, cfg.max_seq_len)
    config = gpt2_config(cfg) if arch == "gpt2" else llama_config(cfg)
    config.update(ids, torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(ids, indent=2), encoding="utf-8")
    return config["architectures"][0]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model.export CKPT OUT --format hf``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("checkpoint", help="run directory, step folder or state.pt")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--format", choices=["hf"], required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the "
                        "run's data.tokenizer)")
    args = parser.parse_args(argv)
    try:
        kind = export_hf(args.checkpoint, args.out, args.dtype, args.tokenizer)
    except (UnsupportedExport, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {kind} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
