"""Ablation end to end on CPU: two arms, one seed, a tiny model, a small slice of webmix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.ablation.config import validate_ablation
from pipeline.ablation.prepare import prepare
from pipeline.ablation.report import parent_arm, summarize
from pipeline.ablation.train import train_all
from pipeline.core.config import JobConfigError


def _job(shared: Path, out: Path, budget: int) -> dict:
    return {
        "job": "ablation",
        "name": "tiny",
        "output": str(out),
        "pool": [str(shared / "webmix" / "webmix-0000[01].warc.gz")],
        "heldout_files": 1,
        "arms": {
            "raw": ["extract_v1"],
            "lid+gopher": ["extract_v1", {"langid_v1": {"languages": ["en"]}}, "gopher_quality_v1"],
        },
        "tokenizer": {"train": {"arm": "raw", "vocab_size": 600, "max_bytes": 1_500_000}},
        "budget_tokens": budget,
        "eval": {"wiki_val": str(shared / "eval" / "wiki_val.jsonl.gz"), "web": "heldout_web",
                 "wiki_ws": {"path": str(shared / "eval" / "wiki_val.jsonl.gz"),
                             "steps": ["whitespace_v1"]}},
        "seeds": [1],
        "model": {"preset": "tiny"},
        "train": {"seq_len": 64, "batch_size": 8, "compile": False, "evals": 3,
                  "eval_batches": 2, "dtype": "fp32"},
        "ray": {"num_cpus": 2},
    }


def test_bad_ablation_files_are_refused_with_the_key(shared_data: Path, tmp_path: Path) -> None:
    job = _job(shared_data, tmp_path, 1000)
    job["arms"]["bad"] = ["extract_v1", {"gopher_quality_v1": {"min_wrods": 1}}]
    with pytest.raises(JobConfigError, match=r"arms\.bad\.steps\[1\]\.gopher_quality_v1\.min_wrods"):
        validate_ablation(job)
    job = _job(shared_data, tmp_path, 1000)
    job["tokenizer"]["train"]["arm"] = "nope"
    with pytest.raises(JobConfigError, match="tokenizer.train.arm"):
        validate_ablation(job)
    job = _job(shared_data, tmp_path, 1000)
    job["eval"]["wiki_ws"]["steps"] = ["whitespace_v9"]
    with pytest.raises(JobConfigError, match=r"eval\.wiki_ws\..*whitespace_v9"):
        validate_ablation(job)


def test_two_arm_ablation_end_to_end(ray_local, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "abl"
    with pytest.raises(JobConfigError, match=r"budget_tokens: 1,000,000,000 is more than the smallest arm.*raw: [\d,]+"):
        prepare(validate_ablation(_job(shared_data, out, 10**9)))

    prepared = prepare(validate_ablation(_job(shared_data, out, 40_000)))
    plan = json.loads((prepared / "plan.json").read_text())
    raw, lid = plan["arms"]["raw"], plan["arms"]["lid+gopher"]
    assert raw["documents_kept"] > lid["documents_kept"] > 0
    assert raw["tokens_kept"] > lid["tokens_kept"] >= 40_000
    for arm in plan["arms"].values():
        assert 40_000 <= arm["tokens_in_stream"] < 40_000 + 20_000
    # each document once in the pool; the arms' selections index it
    pool = plan["pool"]
    assert pool["tokens"] < raw["tokens_in_stream"] + lid["tokens_in_stream"]
    assert pool["tokens"] >= max(raw["tokens_in_stream"], lid["tokens_in_stream"])
    # the cut ranks documents the same way in every arm: a raw-arm document that the lid arm
    # also keeps ranks low there too (independent random cuts would share ~1% of documents)
    sel = {a: set(np.load(prepared / "selections" / f"{a}.npy").tolist()) for a in plan["arms"]}
    assert len(sel["raw"] & sel["lid+gopher"]) > 0.3 * len(sel["raw"])
    assert set(plan["eval"]) == {"wiki_val", "web", "wiki_ws"} and plan["eval"]["web"]["tokens"] > 1000
    # the same articles, fewer tokens once table padding is collapsed
    assert plan["eval"]["wiki_ws"]["tokens"] < plan["eval"]["wiki_val"]["tokens"]
    # the shared first step ran once: one node per distinct prefix
    nodes = sorted(p.name.split("-", 1)[1] for p in (out / "nodes").iterdir())
    assert nodes == ["extract_v1", "gopher_quality_v1", "langid_v1"]
    # chained jobs keep earlier steps' metadata (language from langid_v1 after gopher)
    gopher_out = next((out / "nodes").glob("*-gopher_quality_v1")) / "data"
    table = pq.read_table(sorted(gopher_out.glob("*.parquet"))[0])
    assert set(table.column("language").to_pylist()) == {"en"}
    size = sum(f.stat().st_size for f in prepared.rglob("*") if f.is_file())
    assert size < 20_000_000  # eval streams are cut at 2M tokens; arms at the budget

    record = train_all(prepared, parallel=2)  # two processes, one run each
    assert sorted((r["arm"], r["seed"]) for r in record["runs"]) == [("lid+gopher", 1), ("raw", 1)]
    for run in record["runs"]:
        assert run["status"] == "completed"
        assert run["tokens_trained"] >= 40_000
        assert set(run["final_eval"]) == {"wiki_val", "web", "wiki_ws"}
        curve = run["eval_curve"]["wiki_val"]
        assert len(curve) >= 3 and curve[-1][1] < curve[0][1]
        assert [s["prompt"] for s in run["samples"]] == plan["samples"]["prompts"]
        assert all(s["text"] for s in run["samples"])
    report = (out / "report.md").read_text()
    assert "## Samples" in report and "- **lid+gopher**: The history of the city" in report
    assert "| raw |" in report and "| lid+gopher |" in report and "n/a (1 seed)" in report
    assert "<polyline" in (out / "ablation.svg").read_text()
    # a rerun finds every (arm, seed) done and trains nothing
    assert train_all(prepared)["runs"] == record["runs"]
    # the arm streams rebuilt from the pool hold exactly the arms' documents
    from pipeline.ablation.pool import stream_documents
    pool_docs = list(stream_documents(prepared / "pool"))
    for name in plan["arms"]:
        order = np.load(prepared / "selections" / f"{name}.npy")
        rebuilt = list(stream_documents(out / "streams" / name))
        assert len(rebuilt) == len(order)
        assert all(np.array_equal(a, pool_docs[i]) for a, i in zip(rebuilt, order, strict=True))


def test_train_refuses_a_folder_that_is_not_prepared(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{}")  # e.g. a folder from before the token pool
    with pytest.raises(FileNotFoundError, match=r"pool/manifest.json is missing.*ablate prepare"):
        train_all(tmp_path)


def test_effects_against_parent_and_noise() -> None:
    arms = {"raw": {"steps": ["a"], "documents_kept": 1, "tokens_kept": 1},
            "f": {"steps": ["a", "b"], "documents_kept": 1, "tokens_kept": 1},
            "g": {"steps": ["a", "b", "c"], "documents_kept": 1, "tokens_kept": 1}}
    assert parent_arm("g", arms) == "f" and parent_arm("f", arms) == "raw"
    assert parent_arm("raw", arms) is None

    def runs(arm: str, losses: list[float]) -> list[dict]:
        return [{"arm": arm, "seed": i, "final_eval": {"v": x}, "eval_curve": {"v": []}}
                for i, x in enumerate(losses)]

    record = {"arms": arms, "eval": {"v": {}},
              "runs": runs("raw", [3.0, 3.1, 2.9]) + runs("f", [2.5, 2.6, 2.4])
              + runs("g", [2.45, 2.65, 2.5])}
    s = summarize(record)
    assert s["stats"]["raw"]["v"]["mean"] == pytest.approx(3.0)
    assert s["stats"]["raw"]["v"]["std"] == pytest.approx(0.1)
    by = {(e["arm"], e["against"]): e for e in s["effects"]}
    # f vs raw: diff -0.5, se sqrt(0.01/3 + 0.01/3) = 0.0816 -> exceeds 2 se
    assert by[("f", "raw")]["diff"] == pytest.approx(-0.5)
    assert by[("f", "raw")]["se"] == pytest.approx((0.02 / 3) ** 0.5)
    assert by[("f", "raw")]["exceeds_noise"]
    # g vs its parent f: diff +0.0333 is inside the noise
    assert by[("g", "f")]["kind"] == "parent" and not by[("g", "f")]["exceeds_noise"]
