"""End-to-end tests of the trainer (model/train.py) on small streams written in the test."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model.train import (
    HostCopy,
    TrainConfig,
    TrainingDiverged,
    build_optimizer,
    clip_gradients,
    load_config,
    load_init_weights,
    lr_at,
    main,
    optimizer_step,
    run,
    run_from_file,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_end_to_end_writes_metrics_plot_and_checkpoint(tmp_path, tiny_config: Callable):
    cfg = tiny_config(tmp_path, max_steps=30, eval_every=15, lr=1e-2)
    s = run(cfg)
    assert s["status"] == "completed" and s["steps"] == 30
    losses = s["train_losses"]
    assert losses[30] < losses[1] - 1.0  # it learns the counting sequences
    assert set(s["eval_losses"]) == {15, 30} and s["final_eval"]["val"] < losses[1]
    assert s["tokens_per_s"] > 0
    records = [json.loads(ln) for ln in Path(s["metrics_path"]).read_text().splitlines()]
    train_recs = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_recs] == list(range(1, 31))
    # the first step (compilation on a GPU) is in no interval: its tokens/s is not reported
    assert train_recs[0]["tokens_per_s"] is None
    assert all(r["tokens_per_s"] > 0 for r in train_recs[1:])
    assert train_recs[-1]["tokens"] == 30 * 4 * 2 * 32
    assert Path(s["plot_path"]).read_text().startswith("<svg")
    ckpt = Path(s["checkpoint_dir"]) / "step_00000030" / "state.pt"
    assert ckpt.exists()
    assert (Path(s["checkpoint_dir"]) / "latest").read_text() == "step_00000030"


@pytest.mark.parametrize("log_every", [1, 100])  # 100: losses read a step late
@pytest.mark.parametrize("variant", ["dense", "moe_bias_docmask"])
def test_resume_reproduces_uninterrupted_loss_curve_exactly(tmp_path, variant, log_every,
                                                            tiny_config: Callable):
    extra_model, extra_data = {}, {}
    if variant != "dense":
        extra_model = {"n_experts": 4, "experts_per_token": 2, "router_balance": "bias",
                       "bias_update_rate": 0.01}
        extra_data = {"doc_masking": True}
    full = tiny_config(tmp_path / "a", schedule="wsd", decay_frac=0.5, log_every=log_every)
    full["model"].update(extra_model)
    full["data"].update(extra_data)
    ref = run(full)
    assert sorted(ref["train_losses"]) == list(range(1, ref["steps"] + 1))

    part = tiny_config(tmp_path / "b", schedule="wsd", decay_frac=0.5, halt_at_step=5,
                       log_every=log_every)
    part["model"].update(extra_model)
    part["data"].update(extra_data)
    first = run(part)
    assert first["status"] == "halted" and first["steps"] == 5
    part["train"]["halt_at_step"] = None
    second = run(part)  # resumes from out_dir/checkpoints/latest
    assert second["status"] == "completed" and min(second["train_losses"]) == 6

    resumed = {**first["train_losses"], **second["train_losses"]}
    assert resumed == ref["train_losses"]  # bit-for-bit equal floats
    assert {**first["eval_losses"], **second["eval_losses"]} == ref["eval_losses"]
    # The metrics file after resuming holds each step once, same values as the reference.
    def train_log(s):
        return [(r["step"], r["loss"]) for r in map(json.loads, Path(s["metrics_path"]).read_text().splitlines())
                if r["kind"] == "train"]
    assert train_log(second) == train_log(ref)


@pytest.mark.parametrize("log_every", [1, 100])  # 100: step 3 is read during step 4
@pytest.mark.parametrize("moe", [False, True])
def test_nan_loss_stops_with_step_and_checkpoint(tmp_path, tiny_config: Callable,
                                                 log_every: int, moe: bool):
    cfg = tiny_config(tmp_path, max_steps=2, eval_every=100, log_every=log_every)
    if moe:
        cfg["model"].update(n_experts=4, experts_per_token=2, router_balance="bias",
                            bias_update_rate=0.01)
    run(cfg)
    # Poison the weights in the latest checkpoint, then continue training from it.
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002" / "state.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model"]["norm.weight"].fill_(float("nan"))
    torch.save(state, ckpt)
    cfg["train"]["max_steps"] = 5
    with pytest.raises(TrainingDiverged) as err:
        run(cfg)
    assert err.value.step == 3 and math.isnan(err.value.loss)
    assert err.value.checkpoint is not None and err.value.checkpoint.exists()
    # The checkpoint of the last good step is the state the diverged step started from:
    # weights, optimizer moments and step counts, sampler, MoE bias and (zero) counters.
    saved = torch.load(err.value.checkpoint, weights_only=True)
    assert saved["step"] == 2
    for name, t in state["model"].items():
        torch.testing.assert_close(saved["model"][name], t, rtol=0, atol=0, equal_nan=True,
                                   msg=name)
    torch.testing.assert_close(saved["optimizer"], state["optimizer"], rtol=0, atol=0)
    assert saved["sampler"] == state["sampler"]
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "diverged" and records[-1]["step"] == 3


def test_lr_schedules():
    c = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110, schedule="cosine")
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(1.0)
    assert lr_at(60, c) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110, c) == pytest.approx(0.1)
    w = TrainConfig(lr=1.0, min_lr_ratio=0.0, warmup_steps=10, max_steps=100, schedule="wsd",
                    decay_frac=0.2)
    assert lr_at(50, w) == 1.0 and lr_at(79, w) == 1.0
    assert lr_at(89, w) == pytest.approx(0.5) and lr_at(99, w) == pytest.approx(0.0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping and not
def test_clip_gradients_steps_like_clip_grad_norm(fused: bool, max_norm: float):
    """The clip factor handed to the fused AdamW kernel (or applied in place without it)
    gives the parameters, norms and gradients of clip_grad_norm_ followed by a step."""
    from model import Transformer
    from model.model import config_from_preset

    torch.manual_seed(0)
    ref = Transformer(config_from_preset("tiny", vocab_size=64))
    ours = Transformer(config_from_preset("tiny", vocab_size=64))
    ours.load_state_dict(ref.state_dict())
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, fused_adamw=fused)
    opt_ref = build_optimizer(ref, cfg, torch.device("cpu"))
    opt_ours = build_optimizer(ours, cfg, torch.device("cpu"))
    x = torch.randint(0, 64, (2, 17))
    for _ in range(3):
        ref(x[:, :-1], x[:, 1:]).loss.backward()
        ours(x[:, :-1], x[:, 1:]).loss.backward()
        n_ref = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), max_norm)
        n_ours = clip_gradients(opt_ours, list(ours.parameters()), max_norm)
        assert hasattr(opt_ours, "grad_scale") == fused
        assert float(n_ours) == pytest.approx(float(n_ref), rel=1e-6)
        opt_ref.step()
        g_ours = {n: p.grad for n, p in ours.named_parameters()}
        optimizer_step(opt_ours, list(ours.parameters()))
        assert not hasattr(opt_ours, "grad_scale")
        for n, p in ref.named_parameters():  # fused: the kernel stores the clipped gradients
            torch.testing.assert_close(g_ours[n], p.grad, rtol=1e-5, atol=1e-8)
        opt_ref.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in ours.parameters())
        for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if max_norm < 1:
        assert float(n_ref) > max_norm  # the case clipped
    # no gradients at all (FSDP2 with gradient sync off): a zero norm, no step changes
    assert float(clip_gradients(opt_ours, list(ours.parameters()), max_norm)) == 0.0


def test_clip_factor_is_float32_for_bf16_parameters_and_a_negative_clip_is_refused(
        tmp_path, tiny_config: Callable):
    p = torch.nn.Parameter(torch.randn(8, 8, dtype=torch.bfloat16))
    opt = torch.optim.AdamW([p], lr=1e-2, fused=True)
    p.grad = torch.full_like(p, 3.0)
    clip_gradients(opt, [p], 1.0)
    assert opt.grad_scale.dtype == torch.float32
    optimizer_step(opt, [p])  # the fused kernel takes it (a bf16 factor raised here)
    assert torch.isfinite(p.float()).all()
    with pytest.raises(ValueError, match="grad_clip must be >= 0"):
        run(tiny_config(tmp_path, grad_clip=-1.0))


@pytest.mark.parametrize("fused", [True, False])
def test_skipped_step_leaves_parameters_and_optimizer_state_as_they_were(fused: bool):
    """A step flagged non-finite (the device flag, read on the device by the fused kernel)
    changes nothing: the run continues exactly as one that never took that step."""
    from model import Transformer
    from model.model import config_from_preset

    torch.manual_seed(0)
    ref = Transformer(config_from_preset("tiny", vocab_size=64))
    ours = Transformer(config_from_preset("tiny", vocab_size=64))
    ours.load_state_dict(ref.state_dict())
    cfg = TrainConfig(lr=1e-2, fused_adamw=fused)
    opt_ref = build_optimizer(ref, cfg, torch.device("cpu"))
    opt_ours = build_optimizer(ours, cfg, torch.device("cpu"))
    x = torch.randint(0, 64, (2, 17))

    def take(model, opt, skip: bool) -> None:
        model(x[:, :-1], x[:, 1:]).loss.backward()
        params = list(model.parameters())
        norm = clip_gradients(opt, params, 1.0)
        optimizer_step(opt, params, skip=torch.tensor(skip) | ~torch.isfinite(norm))

    take(ref, opt_ref, False)
    take(ours, opt_ours, False)
    take(ours, opt_ours, True)  # skipped
    take(ref, opt_ref, False)
    take(ours, opt_ours, False)
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for p_ref, p_ours in zip(ref.parameters(), ours.parameters(), strict=True):
        s_ref, s_ours = opt_ref.state[p_ref], opt_ours.state[p_ours]
        assert float(s_ref["step"]) == float(s_ours["step"]) == 2.0
        torch.testing.assert_close(s_ref["exp_avg_sq"], s_ours["exp_avg_sq"], rtol=0, atol=0)
    assert HostCopy(torch.tensor([1.5, float("nan")])).get()[0] == 1.5


def test_init_from_fills_fields_a_checkpoint_predates_and_refuses_real_differences(
        tmp_path, tiny: Callable):
    """``train.init_from`` of a checkpoint written before a config field existed (here
    ``fp32_residual``) loads it with the field's default; a real difference is refused."""
    from model import Transformer

    torch.manual_seed(0)
    src = Transformer(tiny())
    stored = src.config.to_dict()
    del stored["fp32_residual"]
    path = tmp_path / "state.pt"
    torch.save({"model": src.state_dict(), "model_config": stored}, path)
    dst = Transformer(tiny())
    load_init_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                 dst.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="fp32_residual"):
        load_init_weights(Transformer(tiny(fp32_residual=False)), path)
    with pytest.raises(ValueError, match="unknown model config keys"):
        torch.save({"model": src.state_dict(), "model_config": {**stored, "rope_dim": 8}}, path)
        load_init_weights(dst, path)


def test_weight_decay_only_on_matrices():
    from model import Transformer
    from model.model import config_from_preset

    m = Transformer(config_from_preset("tiny", n_experts=2, experts_per_token=1))
    opt = build_optimizer(m, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == m.num_params()


def test_job_file_and_cli(tmp_path, capsys, tiny_config: Callable, repo_root: Path):
    cfg = load_config(repo_root / "jobs" / "train.yaml")
    assert cfg["job"] == "train" and cfg["data"]["train"] == "out/tokens/webmix"
    assert isinstance(cfg["train"]["lr"], float)
    TrainConfig(**cfg["train"])  # every key in the job file is a real option

    job = tiny_config(tmp_path, max_steps=3, eval_every=3)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    summary = run_from_file(path, {"train.max_steps": 2})
    assert summary["steps"] == 2
    rc = main([str(path), "--set", "train.max_steps=4", "--set", "train.log_every=2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "tok/s" in out and '"steps": 4' in out
    with pytest.raises(ValueError, match="unknown keys"):
        run_from_file(path, {"train.learning_rate": 1.0})
    with pytest.raises(ValueError, match="top-level"):
        run_from_file(path, {"trian": {"max_steps": 1}})
    # `pipeline run --output DIR` passes a top-level out_dir.
    elsewhere = run_from_file(path, {"out_dir": str(tmp_path / "elsewhere"), "train.max_steps": 1})
    assert Path(elsewhere["metrics_path"]).parent == tmp_path / "elsewhere"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_compiled_bf16_moe_with_flex_document_masking_trains_and_resumes(tmp_path,
                                                                             tiny_config: Callable):
    """CUDA path end to end: torch.compile, bf16 autocast, fused AdamW, FlexAttention document
    masking, grouped-GEMM experts, checkpoint and resume."""
    cfg = tiny_config(tmp_path, device="cuda", compile=True, max_steps=12, eval_every=6,
                      lr=1e-2, halt_at_step=8)
    cfg["model"].update(n_experts=4, experts_per_token=2, d_model=64, n_heads=4, d_ff=128,
                        moe_d_ff=64)
    cfg["data"]["doc_masking"] = True
    first = run(cfg)
    assert first["status"] == "halted"
    losses = first["train_losses"]
    assert all(math.isfinite(v) for v in losses.values()) and losses[8] < losses[1]
    assert first["mfu"] is not None and first["tokens_per_s"] > 0
    cfg["train"]["halt_at_step"] = None
    second = run(cfg)
    assert second["status"] == "completed" and sorted(second["train_losses"]) == [9, 10, 11, 12]


def test_whole_eval_per_document_losses_do_not_depend_on_batch_or_world(tmp_path,
                                                                       tiny_config: Callable):
    """One tiny model scores its eval stream with batch 2 and batch 5, and as two 'ranks'
    of a world of 2 whose sums are added: the same per-document losses."""
    from model.data import eval_plan
    from model.model import Transformer
    from model.train import build_model_config, score_windows
    from tokenizer.token_stream import TokenStream

    cfg = tiny_config(tmp_path)
    stream = TokenStream(cfg["data"]["eval"]["val"])
    torch.manual_seed(0)
    model = Transformer(build_model_config(cfg["model"], 32, stream)).eval()
    plan = eval_plan(stream, 32)
    idx = np.arange(len(plan))
    cpu = torch.device("cpu")
    win2, doc2 = score_windows(model, stream, plan, idx, 2, cpu)
    win5, doc5 = score_windows(model, stream, plan, idx, 5, cpu)
    parts = [score_windows(model, stream, plan, idx, 3, cpu, rank=r, world=2) for r in (0, 1)]
    np.testing.assert_array_equal(doc5, doc2)
    np.testing.assert_allclose(parts[0][1] + parts[1][1], doc2, rtol=1e-6, atol=0)
    np.testing.assert_allclose(parts[0][0] + parts[1][0], win2, rtol=1e-6, atol=0)
    assert doc2.shape == (stream.num_docs,) and np.all(doc2 > 0)
    # the whole-stream mean is the model's own cross-entropy over every target token
    with torch.no_grad():
        ids = torch.from_numpy(stream.read(0, stream.num_tokens))
        ref = [torch.nn.functional.cross_entropy(model(ids[None, s:s + 32]).float()[0],
                                                 ids[s + 1:s + 33], reduction="none")
               for s in plan.starts.tolist()]
    total = sum(float((r.double() * torch.from_numpy(plan.weights(np.array([i]))[0])).sum())
                for i, r in enumerate(ref))
    assert doc2.sum() == pytest.approx(total, rel=1e-9)
    assert plan.doc_tokens().sum() == stream.num_tokens - 1


def test_mfu_peak_comes_from_the_device_name(monkeypatch):
    from model.train import peak_flops_of

    assert peak_flops_of(torch.device("cpu")) is None
    for name, peak in (("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce GTX 1080", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert peak_flops_of(torch.device("cuda")) == peak


def _tf32_on() -> bool:
    m = torch.backends.cuda.matmul
    return m.fp32_precision == "tf32" if hasattr(m, "fp32_precision") else m.allow_tf32


def _set_tf32(on: bool) -> None:
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        m.fp32_precision = "tf32" if on else "ieee"
    else:
        m.allow_tf32 = on


@pytest.mark.parametrize("dtype,tf32,expect", [("bf16", True, True), ("bf16", False, False),
                                               ("fp32", True, False)])
def test_tf32_is_on_for_the_run_only_under_bf16(monkeypatch, dtype: str, tf32: bool,
                                                 expect: bool):
    """Set and restored through the API a caller uses (on torch >= 2.9 the new
    ``fp32_precision``, after which reading the legacy ``allow_tf32`` raises)."""
    import model.train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "_train", lambda *a: seen.append(_tf32_on()) or {})
    m = torch.backends.cuda.matmul
    before = m.fp32_precision if hasattr(m, "fp32_precision") else m.allow_tf32
    _set_tf32(not expect)
    try:
        run({"data": {"train": "unused"},
             "train": {"dtype": dtype, "tf32": tf32, "device": "cpu"}})
        assert seen == [expect]
        assert _tf32_on() is (not expect)  # restored after the run
    finally:
        if hasattr(m, "fp32_precision"):
            m.fp32_precision = before
        else:
            m.allow_tf32 = before
