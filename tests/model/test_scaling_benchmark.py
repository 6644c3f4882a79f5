"""benchmarks/model_scaling.py on CPU (gloo, tiny model): its per-rank slicing of the global
batch reproduces the one-process computation, and the report divides by the 1-GPU run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def scaling(repo_root: Path):
    """``benchmarks/model_scaling.py`` imported from its file."""
    script = repo_root / "benchmarks" / "model_scaling.py"
    spec = importlib.util.spec_from_file_location("model_scaling", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_scaling"] = module
    spec.loader.exec_module(module)
    return module


def test_two_ranks_reproduce_one_process_and_report_efficiency(tmp_path, scaling, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    common = ["--smoke", "--seq", "32", "--global-batch", "4", "--micro-batch", "1",
              "--warmup", "1", "--steps", "2", "--nosync-steps", "1", "--timeout", "200"]
    one, two = tmp_path / "w1.json", tmp_path / "w2.json"
    assert scaling.main(["run", "--world", "1", "--out", str(one), *common]) == 0
    assert scaling.main(["run", "--world", "2", "--mode", "ddp", "--variants", "default,before",
                         "--out", str(two), *common]) == 0
    ref = json.loads(one.read_text())[0]
    runs = json.loads(two.read_text())
    assert [r["variant"] for r in runs] == ["default", "before"]
    assert ref["grad_accum"] == 4 and all(r["grad_accum"] == 2 for r in runs)
    for r in runs:
        assert "error" not in r, r
        assert len(r["losses"]) == len(ref["losses"]) == 3
        assert r["losses"] == pytest.approx(ref["losses"], rel=1e-5)  # float32 on CPU
        assert r["nosync_fwdbwd_s"] > 0
    table = scaling.report([str(one), str(two)])
    rows = [ln for ln in table.splitlines() if ln.startswith("| 2 | ddp")]
    assert len(rows) == 2
    for r in runs:
        row = next(ln for ln in rows if f"| {r['variant']} |" in ln)
        assert f"| {100 * r['tokens_per_s'] / (2 * ref['tokens_per_s']):.1f}% |" in row


def test_unknown_variant_is_refused(scaling):
    with pytest.raises(SystemExit, match="unknown variant"):
        scaling.variant_options("default+fastest")


def test_report_spans_several_one_gpu_baselines(tmp_path, scaling):
    """Two 1-GPU runs of one configuration: each multi-GPU efficiency is printed as the range
    over both, the loss difference as the larger, and the baselines show their own spread."""
    def rec(world: int, tokens: float, losses: list[float]) -> dict:
        return {"world": world, "mode": "ddp" if world > 1 else "none", "variant": "default",
                "global_batch": 8, "micro_batch": 2, "grad_accum": 8 // (2 * world), "seq": 16,
                "step_s": 0.1, "fwdbwd_s": 0.09, "optim_s": 0.01, "tokens_per_s": tokens,
                "mfu": None, "losses": losses, "peak_mem_gib": 1.0}

    paths = []
    for name, recs in (("a", [rec(1, 100.0, [5.0, 4.0])]), ("b", [rec(1, 110.0, [5.0, 4.01])]),
                       ("c", [rec(2, 200.0, [5.0, 4.03])])):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(recs))
    rows = [ln for ln in scaling.report([str(p) for p in paths]).splitlines()
            if ln.startswith("| ")][1:]
    two = next(ln for ln in rows if ln.startswith("| 2 |"))
    assert "| 90.9-100.0% |" in two and "| 0.0300 |" in two
    ones = [ln for ln in rows if ln.startswith("| 1 |")]
    assert any("| 100.0-110.0% |" in ln for ln in ones)
    assert all("| 0.0100 |" in ln for ln in ones)
