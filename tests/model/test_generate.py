"""Sampling and the KV cache (model/generate.py), and the ``pipeline sample`` command (CPU)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from model import Transformer
from model.generate import (
    StaticDecoder,
    beam_search,
    filter_logits,
    generate,
    generate_text,
    load_checkpoint,
)
from model.model import KVCache

# a seeded, one-thread torch for every test here (tests/model/conftest.py)
pytestmark = pytest.mark.usefixtures("seed_and_one_thread")

CACHE_CONFIGS = [
    {},
    {"n_kv_heads": 1},
    {"pos_encoding": "alibi", "n_heads": 8, "d_model": 48, "n_kv_heads": 2},
    {"pos_encoding": "learned"},
    {"pos_encoding": "sinusoidal"},
    {"pos_encoding": "none"},
    {"sliding_window": 4, "sliding_window_layers": [0]},
    {"sliding_window": 3, "pos_encoding": "alibi"},
    {"attn_logit_softcap": 5.0, "final_logit_softcap": 3.0, "qk_norm": True},
    {"norm_placement": "sandwich", "norm_type": "layernorm"},
    {"norm_placement": "deepnorm"},
    {"norm_placement": "post"},
    {"n_experts": 4, "experts_per_token": 2},
]


@pytest.mark.parametrize("kw", CACHE_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_cached_generation_equals_uncached(kw, tiny: Callable):
    model = Transformer(tiny(**kw)).eval()
    prompts = [[5, 17, 3, 88, 1, 40, 2], [9, 9, 9, 9, 9, 9, 9]]
    greedy = dict(max_new_tokens=20, temperature=0)
    cached = generate(model, prompts, use_cache=True, **greedy)
    assert cached == generate(model, prompts, use_cache=False, **greedy)
    assert all(len(t) == 20 for t in cached)
    sampled = dict(max_new_tokens=20, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    assert generate(model, prompts, **sampled) == generate(model, prompts, use_cache=False,
                                                            **sampled)
    # The logits themselves: prefill then one token at a time vs one full pass.
    idx = torch.tensor(prompts)[:, :1].repeat(1, 30) + torch.arange(30)
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config, 2)
        parts = [model(idx[:, :11], cache=cache)] + [model(idx[:, t:t + 1], cache=cache)
                                                     for t in range(11, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)


def test_cache_holds_only_the_key_value_heads(tiny: Callable):
    cfg = tiny(n_heads=4, n_kv_heads=1)
    cache = KVCache(cfg, batch_size=3, max_len=10)
    assert cache.k[0].shape == (3, 1, 10, cfg.head_dim) and len(cache.v) == cfg.n_layers
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model(torch.randint(0, 97, (3, 6)), cache=cache)
    assert cache.pos == 6 and cache.k[1][:, :, :6].abs().sum() > 0
    assert cache.k[1][:, :, 6:].abs().sum() == 0
    with pytest.raises(ValueError, match="KV cache full"):
        model(torch.randint(0, 97, (3, 5)), cache=cache)


def test_batched_prompts_of_different_lengths_match_one_at_a_time(tiny: Callable):
    model = Transformer(tiny()).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11, 12]]
    batched = generate(model, prompts, max_new_tokens=6, temperature=0)
    assert batched == [generate(model, [p], max_new_tokens=6, temperature=0)[0] for p in prompts]


def test_sampling_is_seeded_and_top_k_one_is_greedy(tiny: Callable):
    model = Transformer(tiny()).eval()
    prompts = [[3, 1, 4, 1, 5]]
    a = generate(model, prompts, max_new_tokens=15, temperature=1.5, seed=7)
    assert a == generate(model, prompts, max_new_tokens=15, temperature=1.5, seed=7)
    assert a != generate(model, prompts, max_new_tokens=15, temperature=1.5, seed=8)
    greedy = generate(model, prompts, max_new_tokens=15, temperature=0)
    assert generate(model, prompts, max_new_tokens=15, temperature=2.0, top_k=1, seed=1) == greedy
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, [[1] * 60], max_new_tokens=5)


def test_filter_logits_top_k_and_nucleus():
    logits = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    keep = lambda out: (out > float("-inf")).tolist()[0]  # noqa: E731
    assert keep(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert keep(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert keep(filter_logits(logits, top_p=0.6)) == [True, True, False, False]
    assert keep(filter_logits(logits, top_p=0.8)) == [True, True, True, False]
    assert keep(filter_logits(logits, top_p=0.9)) == [True, True, True, True]
    assert keep(filter_logits(logits[:, [3, 2, 1, 0]], top_p=0.6)) == [False, False, True, True]


def test_eos_stops_a_continuation(tiny: Callable):
    model = Transformer(tiny()).eval()
    prompt = [[2, 7, 1]]
    free = generate(model, prompt, max_new_tokens=10, temperature=0)[0]
    eos = free[3]
    stopped = generate(model, prompt, max_new_tokens=10, temperature=0, eos_id=eos)[0]
    assert stopped == free[: free.index(eos) + 1]


class _ByteCodec:
    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def _fake_run(tmp_path, tokenizer_dir: str | None, tiny: Callable):
    """A train run's out_dir as model.train lays it out: config.json and a checkpoint."""
    from model.train import Checkpointer

    cfg = tiny(vocab_size=256 + 128, pos_encoding="alibi", n_heads=4)
    model = Transformer(cfg)
    run = tmp_path / "run"
    Checkpointer(run, keep=2).save({"step": 3, "model": model.state_dict(),
                                    "model_config": cfg.to_dict()}, 3, is_main=True)
    data = {"train": "x"} | ({"tokenizer": tokenizer_dir} if tokenizer_dir else {})
    (run / "config.json").write_text(json.dumps({"data": data}))
    return run, model.eval()


def test_load_checkpoint_and_generate_text(tmp_path, tiny: Callable):
    run, model = _fake_run(tmp_path, None, tiny)
    loaded = load_checkpoint(run)
    for path in (run, run / "checkpoints", run / "checkpoints" / "step_00000003"):
        torch.testing.assert_close(load_checkpoint(path).state_dict(), loaded.state_dict())
    texts = generate_text(loaded, _ByteCodec(), ["ab", "hello"], max_new_tokens=4,
                          temperature=0)
    ids = generate(model, [list(b"ab"), list(b"hello")], max_new_tokens=4, temperature=0)
    assert texts == [_ByteCodec().decode(t) for t in ids]


def test_pipeline_sample_command(tmp_path, capsys, tiny: Callable):
    for dependency in ("pydantic", "yaml", "regex"):  # the pipeline CLI's, not model/'s
        pytest.importorskip(dependency)
    from pipeline.cli import main
    from tokenizer.encoder import Tokenizer

    tok_dir = tmp_path / "tok"
    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [],
                    ["<|endoftext|>"])
    tok.save(tok_dir)
    run, model = _fake_run(tmp_path, str(tok_dir), tiny)
    args = ["sample", str(run), "--prompt", "hi there", "--max-new-tokens", "6",
            "--temperature", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = tok.decode(generate(model, [tok.encode("hi there")], max_new_tokens=6,
                                   temperature=0)[0])
    assert out == "hi there" + expected + "\n"
    assert main(args + ["--tokenizer", str(tok_dir), "--temperature", "1", "--seed", "2",
                        "--top-k", "5", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.startswith("hi there")
    assert main(args + ["--num-beams", "4", "--length-penalty", "0.5", "--no-eos"]) == 0
    beams = generate(model, [tok.encode("hi there")], max_new_tokens=6, num_beams=4,
                     length_penalty=0.5)[0]
    assert capsys.readouterr().out == "hi there" + tok.decode(beams) + "\n"
    run2, _ = _fake_run(tmp_path / "b", None, tiny)
    assert main(["sample", str(run2), "--prompt", "x"]) == 2  # no tokenizer known
    assert "pass --tokenizer" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing"), "--prompt", "x"]) == 2


# ---- CUDA -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kw", CACHE_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_gpu_cached_generation_equals_uncached(kw, monkeypatch, tiny: Callable):
    """On CUDA kernels (float32, TF32 off): the cache gives the uncached tokens, and in bf16
    the cached logits stay close to the full pass."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # undone after
    model = Transformer(tiny(**{"max_seq_len": 256, **kw})).cuda().eval()
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 97, (3, 40), generator=g).tolist()
    greedy = dict(max_new_tokens=48, temperature=0)
    assert generate(model, prompts, **greedy) == generate(model, prompts, use_cache=False,
                                                          **greedy)
    idx = torch.randint(0, 97, (3, 120), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        full = model(idx).float()
        cache = KVCache(model.config, 3, device="cuda")
        parts = [model(idx[:, :64], cache=cache)] + [model(idx[:, t:t + 1], cache=cache)
                                                     for t in range(64, 120)]
    step = torch.cat(parts, dim=1).float()
    rel = ((step - full).norm() / full.norm()).item()
    assert rel < 2e-2, f"cached bf16 logits differ from the full pass: relative error {rel:.4f}"


# ---- static-cache decoding (CPU: the fixed-shape step without graph capture) ----------------


@pytest.mark.parametrize("kw", CACHE_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_static_cache_decoding_equals_dynamic_cache(kw, tiny: Callable):
    model = Transformer(tiny(**kw)).eval()
    prompts = [[5, 17, 3, 88, 1, 40, 2], [9, 9, 9, 9, 9, 9, 9], [1, 2, 3], [4, 5, 6]]
    for args in (dict(temperature=0), dict(temperature=1.0, top_k=20, seed=3)):
        want = generate(model, prompts, max_new_tokens=12, **args)
        assert generate(model, prompts, max_new_tokens=12, decode="static", **args) == want


def test_static_decoder_is_reusable_and_checks_its_shapes(tiny: Callable):
    model = Transformer(tiny()).eval()
    decoder = StaticDecoder(model, batch_size=2, max_len=40)
    assert decoder.graph is None  # no CUDA graph on CPU
    a = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    b = torch.tensor([[2, 7], [1, 8]])
    for idx in (a, b, a):  # the buffers are overwritten by each prefill
        want = generate(model, idx.tolist(), max_new_tokens=9, temperature=0)
        assert decoder.generate(idx, 9).tolist() == want
    eos = want[0][2]
    got = decoder.generate(a, 9, eos_id=eos)[0].tolist()
    assert got[:3] == want[0][:3] and set(got[3:]) == {eos}  # rows repeat eos once done
    with pytest.raises(ValueError, match="max_len"):
        decoder.generate(a, 36)
    with pytest.raises(ValueError, match="batch"):
        decoder.generate(a[:1], 3)
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(model, 1, cuda_graph=True)
    with pytest.raises(ValueError, match="decode"):
        generate(model, [[1]], decode="fast")


# ---- beam search ------------------------------------------------------------------------------


def _exhaustive(model: Transformer, prompt: list[int], n: int, alpha: float,
                eos: int | None) -> list[tuple[float, list[int]]]:
    """Every continuation of up to ``n`` tokens (ending at ``eos`` or at length ``n``) scored
    from full forward passes: ``sum log p / len ** alpha``, best first."""
    V = model.config.vocab_size
    seqs: list[list[int]] = [[]]
    done: list[list[int]] = []
    for length in range(1, n + 1):
        seqs = [s + [t] for s in seqs for t in range(V)]
        done += [s for s in seqs if s[-1] == eos or length == n]
        seqs = [s for s in seqs if s[-1] != eos]
    out = []
    with torch.no_grad():
        for length in range(1, n + 1):
            group = [s for s in done if len(s) == length]
            if not group:
                continue
            idx = torch.tensor([prompt + s for s in group])
            logp = torch.log_softmax(model(idx).float(), dim=-1)
            P = len(prompt)
            tok_lp = logp[:, P - 1:-1].gather(-1, idx[:, P:, None])[..., 0].sum(-1)
            out += [(lp / length ** alpha, s) for lp, s in zip(tok_lp.tolist(), group,
                                                                 strict=True)]
    return sorted(out, key=lambda x: -x[0])


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5, -1.0])
def test_beam_search_equals_exhaustive_search_when_nothing_is_pruned(alpha, tiny: Callable):
    model = Transformer(tiny(vocab_size=5, init_std=0.5)).eval()
    prompt, n, eos = [3, 1, 4], 4, 0
    beams = (5 - 1) ** (n - 1)  # every live prefix survives
    ranked = _exhaustive(model, prompt, n, alpha, eos)
    hyps = beam_search(model, prompt, beams, n, alpha, eos)
    assert [h.tokens for h in hyps] == [s for _, s in ranked[:beams]]
    assert [h.score for h in hyps] == pytest.approx([sc for sc, _ in ranked[:beams]], rel=1e-5)
    # Without eos every sequence has length n: the best is the most likely sequence.
    ranked = _exhaustive(model, prompt, 3, alpha, None)
    assert beam_search(model, prompt, 25, 3, alpha)[0].tokens == ranked[0][1]


def test_beam_search_length_penalty_cache_and_greedy(tiny: Callable):
    model = Transformer(tiny(vocab_size=7, init_std=0.5)).eval()
    prompt = [2, 5, 1, 6]
    greedy = generate(model, [prompt], max_new_tokens=6, temperature=0)[0]
    assert beam_search(model, prompt, 1, 6)[0].tokens == greedy
    # The penalty decides between short and long finished hypotheses.
    best = {a: _exhaustive(model, prompt, 4, a, 0)[0][1] for a in (-2.0, 3.0)}
    assert len(best[-2.0]) < len(best[3.0])
    for a, want in best.items():
        got = generate(model, [prompt], max_new_tokens=4, num_beams=6 ** 3, length_penalty=a,
                       eos_id=0)
        assert got == [want]
    # A small beam: the cache gives the same beams as recomputing every sequence.
    cached = beam_search(model, prompt, 3, 8, 1.0, eos_id=0)
    recomputed = beam_search(model, prompt, 3, 8, 1.0, eos_id=0, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in recomputed] and len(cached) == 3
    assert [h.score for h in cached] == pytest.approx([h.score for h in recomputed], abs=1e-5)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model, prompt, 0, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("decode,kw", [
    ("cuda_graph", {}),
    ("cuda_graph", {"pos_encoding": "alibi", "sliding_window": 24, "n_kv_heads": 1}),
    ("compiled", {}),
    ("compiled", {"pos_encoding": "learned", "qk_norm": True}),
], ids=["graph", "graph-alibi-window-mqa", "compiled", "compiled-learned-qknorm"])
def test_gpu_graph_and_compiled_decode_give_the_eager_tokens(decode, kw, monkeypatch,
                                                             tiny: Callable):
    """Greedy tokens of the static-cache step replayed from a CUDA graph (compiled or not)
    equal the eager dynamic-cache tokens (float32, TF32 off), eos handling included, and a
    reused decoder gives them again."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = Transformer(tiny(**{"max_seq_len": 256, **kw})).cuda().eval()
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 97, (3, 40), generator=g).tolist()
    want = generate(model, prompts, max_new_tokens=48, temperature=0)
    eos = want[1][5]
    want_eos = generate(model, prompts, max_new_tokens=48, temperature=0, eos_id=eos)
    if decode == "cuda_graph":  # through generate() (builds a decoder per call)
        assert generate(model, prompts, max_new_tokens=48, temperature=0, decode=decode) == want
    decoder = StaticDecoder(model, 3, 100, compile=decode == "compiled")
    assert decoder.graph is not None
    idx = torch.tensor(prompts, device="cuda")
    for _ in range(2):
        assert decoder.generate(idx, 48).tolist() == want
    got = decoder.generate(idx, 48, eos_id=eos).tolist()
    assert [t[: t.index(eos) + 1] if eos in t else t for t in got] == want_eos
