"""``python -m model.export CKPT OUT --format hf``: transformers loads the folder and its
logits equal ours; options it cannot express are refused by name."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from model.export import UnsupportedExport, hf_architecture, main
from model.model import ModelConfig, Transformer, config_from_preset

LLAMA = dict(vocab_size=384, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=160,
             max_seq_len=64, rope_theta=500.0)
GPT2 = dict(vocab_size=384, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=64,
            norm_type="layernorm", pos_encoding="learned", bias=True, mlp="gelu", dropout=0.1)


@pytest.fixture(scope="module")
def tok_dir(shared_data, tmp_path_factory) -> Path:
    """A 384-token BPE tokenizer trained on held-out Wikipedia, saved in all formats (needs
    the tokenizer's packages, which a GPU machine lacks)."""
    pytest.importorskip("regex")
    from tokenizer.encoder import Tokenizer
    from tokenizer.trainer import train_bpe

    with gzip.open(shared_data / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(next(f))["text"] for _ in range(3)]
    root = tmp_path_factory.mktemp("tok")
    (root / "train.txt").write_text("\n".join(texts), encoding="utf-8")
    vocab, merges = train_bpe([str(root / "train.txt")], 384 - 1, ["<|endoftext|>"],
                              progress=False)
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(root / "tok")
    return root / "tok"


def _checkpoint(cfg: ModelConfig, run: Path, tok: Path, seed: int = 0) -> Transformer:
    """A run folder as ``model.train`` leaves it, with every weight (biases and norm gains
    too) random so that a wrong mapping cannot go unnoticed."""
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    step = run / "checkpoints" / "step_00000010"
    step.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "step": 10},
               step / "state.pt")
    (run / "checkpoints" / "latest").write_text("step_00000010")
    (run / "config.json").write_text(json.dumps({"data": {"tokenizer": str(tok)}}))
    return model.eval()


@pytest.mark.parametrize("name,options", [
    ("llama-gqa-tied", LLAMA),
    ("llama-untied-bias", {**LLAMA, "tie_embeddings": False, "bias": True, "n_kv_heads": 4}),
    ("gpt2", GPT2),
])
def test_transformers_loads_the_export_with_equal_logits(name, options, tok_dir, tmp_path,
                                                         capsys) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig.from_dict(options)
    ours = _checkpoint(cfg, tmp_path / "run", tok_dir)
    assert main([str(tmp_path / "run"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    kind = "GPT2LMHeadModel" if name == "gpt2" else "LlamaForCausalLM"
    assert capsys.readouterr().out.strip() == f"wrote {kind} to {tmp_path / 'hf'}"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", torch_dtype=torch.float32, attn_implementation="eager").eval()
    assert type(theirs).__name__ == kind
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator()
                        .manual_seed(1))
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
    assert diff < 1e-4, diff
    # the run's tokenizer comes along and encodes as ours does
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "The committee's report, published in 1997, was<|endoftext|> rejected."
    from tokenizer.encoder import Tokenizer

    assert hf_tok(text)["input_ids"] == Tokenizer.load(tok_dir).encode(text)
    assert hf_tok.eos_token == "<|endoftext|>"


def test_the_gpt2_preset_has_gpt2_smalls_parameter_count() -> None:
    model = Transformer(config_from_preset("gpt2-124m"))
    assert model.num_params() == 124_439_808
    assert hf_architecture(model.config) == "gpt2"
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith(".bias"))


def test_gpt2_dropout_acts_in_training_only() -> None:
    model = Transformer(ModelConfig.from_dict(GPT2))
    ids = torch.randint(0, 384, (2, 32), generator=torch.Generator().manual_seed(0))
    model.train()
    torch.manual_seed(1)
    a = model(ids)
    torch.manual_seed(2)
    assert not torch.equal(a, model(ids))  # embedding, attention and residual dropout
    model.eval()
    assert torch.equal(model(ids), model(ids))
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig.from_dict({**GPT2, "dropout": 1.0})
    with pytest.raises(ValueError, match="mlp"):
        ModelConfig.from_dict({**GPT2, "mlp": "relu"})


@pytest.mark.parametrize("options,named", [
    ({**LLAMA, "pos_encoding": "alibi"}, ["pos_encoding='alibi'"]),
    ({**LLAMA, "qk_norm": True, "attn_logit_softcap": 50.0}, ["qk_norm=True",
                                                              "attn_logit_softcap=50.0"]),
    ({**LLAMA, "n_experts": 4}, ["n_experts=4"]),
    ({**LLAMA, "norm_placement": "post"}, ["norm_placement='post'"]),
    ({**GPT2, "n_kv_heads": 2}, ["n_kv_heads=2"]),
    ({**GPT2, "bias": False}, ["bias=False"]),
])
def test_options_transformers_cannot_express_are_refused_by_name(options, named, tok_dir,
                                                                 tmp_path, capsys) -> None:
    cfg = ModelConfig.from_dict(options)
    with pytest.raises(UnsupportedExport) as err:
        hf_architecture(cfg)
    assert all(n in str(err.value) for n in named)
    _checkpoint(cfg, tmp_path / "run", tok_dir)
    assert main([str(tmp_path / "run"), str(tmp_path / "hf"), "--format", "hf"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: cannot export as") and all(n in err_text for n in named)
    assert not (tmp_path / "hf" / "model.safetensors").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpt2_options_train_compiled_in_bf16_on_cuda() -> None:
    """Biases, GELU and dropout (SDPA's dropout_p on the fused kernel) under torch.compile
    and bf16 autocast; in eval the CUDA logits match the CPU's."""
    torch.manual_seed(0)
    cpu = Transformer(ModelConfig.from_dict({**GPT2, "max_seq_len": 128}))
    model = Transformer(ModelConfig.from_dict({**GPT2, "max_seq_len": 128})).cuda()
    model.load_state_dict(cpu.state_dict())
    ids = torch.randint(0, 384, (4, 128), device="cuda")
    step = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step(ids, ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    model.eval()
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    with torch.no_grad():
        diff = (model(ids[:1]).float().cpu() - cpu.eval()(ids[:1].cpu())).abs().max().item()
    assert diff < 1e-3, diff
