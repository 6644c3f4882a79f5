"""Ablation end to end on CPU: two arms, one seed, a tiny model, a small slice of webmix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.ablation.config import validate_ablation
from pipeline.ablation.prepare import prepare
from pipeline.ablation.report import parent_arm, render_svg, summarize, write_report
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
        "eval_max_tokens": 150_000,  # the last step scores every eval token: keep it small on CPU
        "eval": {"wiki_val": str(shared / "eval" / "wiki_val.jsonl.gz"), "web": "heldout_web",
                 "wiki_ws": {"path": str(shared / "eval" / "wiki_val.jsonl.gz"),
                             "steps": ["whitespace_v1"]}},
        "seeds": [1],
        "model": {"preset": "tiny"},
        "train": {"seq_len": 64, "batch_size": 8, "compile": False, "evals": 3,
                  "eval_windows": 16, "dtype": "fp32"},
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
        assert arm["distinct_tokens"] == arm["tokens_in_stream"]
        assert arm["repeats"] == pytest.approx(40_000 / arm["distinct_tokens"])
        assert arm["fraction_trained"] == pytest.approx(min(1.0, arm["repeats"]))
        assert arm["control"] is False
    assert plan["design"] == "budget" and plan["warnings"] == []
    # each document once in the pool; the arms' selections index it
    pool = plan["pool"]
    assert pool["tokens"] < raw["tokens_in_stream"] + lid["tokens_in_stream"]
    assert pool["tokens"] >= max(raw["tokens_in_stream"], lid["tokens_in_stream"])
    # the cut ranks documents the same way in every arm: a raw-arm document that the lid arm
    # also keeps ranks low there too (independent random cuts would share ~1% of documents)
    sel = {a: set(np.load(prepared / "selections" / f"{a}.npy").tolist()) for a in plan["arms"]}
    assert len(sel["raw"] & sel["lid+gopher"]) > 0.3 * len(sel["raw"])
    assert set(plan["eval"]) == {"wiki_val", "web", "wiki_ws"} and plan["eval"]["web"]["tokens"] > 1000
    # the eval stream with steps went through them (whitespace_v1 itself is tested in
    # tests/pipeline/steps/test_whitespace.py); each stream is a sample of whole documents
    assert plan["eval"]["wiki_ws"]["steps"] == ["whitespace_v1"]
    for k in plan["eval"]:
        assert 0 < plan["eval"][k]["tokens"] < 400_000  # cut: whole wiki_val is ~10x more
    # the shared first step ran once: one node per distinct prefix; every arm ends with
    # decontaminate_v1 against the eval streams' text (wiki_val once, the held-out web text)
    nodes = sorted(p.name.split("-", 1)[1] for p in (out / "nodes").iterdir())
    assert nodes == ["decontaminate_v1", "decontaminate_v1", "extract_v1", "gopher_quality_v1",
                     "langid_v1"]
    evals = plan["decontamination"]["evals"]
    assert len(evals) == 2 and evals[0].endswith("wiki_val.jsonl.gz")
    assert "eval_text" in evals[1] and evals[1].endswith(".parquet")
    for arm in (raw, lid):
        loss = arm["decontamination"]
        assert arm["steps"][-1] == {"decontaminate_v1": plan["decontamination"]}
        assert loss["documents_in"] - loss["documents_removed"] == arm["documents_kept"]
        assert sum(loss["by_eval_file"].values()) == loss["documents_removed"]
    # chained jobs keep earlier steps' metadata (language from langid_v1 after gopher)
    gopher_out = next((out / "nodes").glob("*-gopher_quality_v1")) / "data"
    table = pq.read_table(sorted(gopher_out.glob("*.parquet"))[0])
    assert set(table.column("language").to_pylist()) == {"en"}
    size = sum(f.stat().st_size for f in prepared.rglob("*") if f.is_file())
    assert size < 20_000_000  # eval streams are cut at eval_max_tokens; arms at the budget

    record = train_all(prepared, parallel=2)  # two processes, one run each
    assert sorted((r["arm"], r["seed"]) for r in record["runs"]) == [("lid+gopher", 1), ("raw", 1)]
    for run in record["runs"]:
        assert run["status"] == "completed"
        assert run["sampler"]["kind"] == "epochs" and run["sampler"]["epochs"] > 0.6
        for name, info in plan["eval"].items():  # the whole stream, document by document
            docs = np.load(out / run["eval_docs"][name])
            assert docs.shape == (info["documents"], 2)
            assert docs[:, 1].sum() == info["tokens"] - 1
            assert docs[:, 0].sum() / docs[:, 1].sum() == pytest.approx(run["final_eval"][name])
        assert run["tokens_trained"] >= 40_000
        assert set(run["final_eval"]) == {"wiki_val", "web", "wiki_ws"}
        curve = run["eval_curve"]["wiki_val"]
        assert len(curve) >= 3 and curve[-1][1] < curve[0][1]
        assert [s["prompt"] for s in run["samples"]] == plan["samples"]["prompts"]
        assert all(s["text"] for s in run["samples"])
    report = (out / "report.md").read_text()
    assert "## Samples" in report and "- **lid+gopher**: The history of the city" in report
    assert "| raw |" in report and "| lid+gopher |" in report and "n/a (1 seed)" in report
    # same seed, same initial weights in both arms: the runs pair
    assert len({r["init_digest"] for r in record["runs"]}) == 1
    assert "Pairing checked" in report and "Holm-corrected over all 3 comparisons" in report
    s = summarize(record, out)
    for ef in s["effects"]:  # one seed: only the document bootstrap measures noise
        assert ef["n_seeds"] == 1 and ef["se_doc"] > 0 and ef["mde"] > 0
        assert ef["doc_ci"][0] < ef["diff"] < ef["doc_ci"][1]
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


def test_paired_effects_against_parent_with_holm_and_control() -> None:
    arms = {"raw": {"steps": ["a"], "documents_kept": 1, "tokens_kept": 100},
            "f": {"steps": ["a", "b"], "documents_kept": 1, "tokens_kept": 100},
            "g": {"steps": ["a", "b", "c"], "documents_kept": 1, "tokens_kept": 10},
            "ctl": {"steps": ["a", {"control_shuffle_words_v1": {}}], "documents_kept": 1,
                    "tokens_kept": 100}}
    assert parent_arm("g", arms) == "f" and parent_arm("f", arms) == "raw"
    assert parent_arm("raw", arms) is None and parent_arm("ctl", arms) == "raw"

    def runs(arm: str, losses: list[float]) -> list[dict]:
        return [{"arm": arm, "seed": i, "final_eval": {"v": x}, "eval_curve": {"v": []},
                 "init_digest": f"w{i}"} for i, x in enumerate(losses)]

    record = {"arms": arms, "eval": {"v": {}}, "budget_tokens": 50,
              "runs": runs("raw", [3.0, 3.1, 2.9]) + runs("f", [2.5, 2.62, 2.41])
              + runs("g", [2.45, 2.65, 2.5]) + runs("ctl", [3.3, 3.42, 3.18])}
    s = summarize(record)
    assert s["stats"]["raw"]["v"]["mean"] == pytest.approx(3.0)
    assert s["stats"]["raw"]["v"]["std"] == pytest.approx(0.1)
    by = {(e["arm"], e["against"]): e for e in s["effects"]}
    # paired over seeds: f - raw = -0.50, -0.48, -0.49 -> mean -0.49, sd 0.01 (unpaired, the
    # arms' own sds of 0.1 would hide nothing here but would give a 10x wider interval)
    f = by[("f", "raw")]
    assert f["diff"] == pytest.approx(-0.49)
    assert f["se_seed"] == pytest.approx(0.01 / 3 ** 0.5, rel=1e-6)
    assert f["seed_ci"][0] == pytest.approx(f["diff"] - 4.302653 * f["se_seed"], rel=1e-5)
    assert f["significant"] and f["p_holm"] >= f["p"]
    # g vs its parent f: +0.0233 inside the noise
    assert by[("g", "f")]["kind"] == "parent" and not by[("g", "f")]["significant"]
    assert s["comparisons"] == 4  # f-raw, g-f, g-raw, ctl-raw
    assert s["controls"] == [{"arm": "ctl", "against": "raw", "eval": "v",
                              "effect": pytest.approx(0.3), "ci": by[("ctl", "raw")]["ci"],
                              "p_holm": by[("ctl", "raw")]["p_holm"], "detected": True}]
    assert s["repetition"]["g"]["repeats"] == 5.0 and "'g' repeats" in s["warnings"][0]
    assert s["pairing"] == {"checked": True, "unpaired_seeds": []}


def test_parents_ignore_the_decontamination_every_arm_ends_with() -> None:
    d = {"decontaminate_v1": {"evals": ["x"]}}
    arms = {"raw": {"steps": ["extract_v1", d]},
            "lid": {"steps": ["extract_v1", "langid_v1", d]},
            "lid+g": {"steps": ["extract_v1", "langid_v1", "gopher_quality_v1", d]},
            "ctl": {"steps": ["extract_v1", {"control_shuffle_words_v1": {}}, d]}}
    assert parent_arm("lid+g", arms) == "lid" and parent_arm("lid", arms) == "raw"
    assert parent_arm("ctl", arms) == "raw" and parent_arm("raw", arms) is None


def test_report_shows_each_arms_losses_to_decontamination(tmp_path: Path) -> None:
    arms = {"raw": {"steps": ["a"], "documents_kept": 90, "tokens_kept": 100,
                    "decontamination": {"documents_in": 100, "documents_removed": 10}},
            "f": {"steps": ["a", "b"], "documents_kept": 40, "tokens_kept": 100,
                  "decontamination": {"documents_in": 45, "documents_removed": 5}}}
    runs = [{"arm": a, "seed": i, "final_eval": {"v": 3.0 - i / 10}, "eval_curve": {"v": []},
             "init_digest": f"w{i}"} for a in arms for i in range(2)]
    write_report({"name": "t", "arms": arms, "eval": {"v": {}}, "budget_tokens": 50, "runs": runs},
                 tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "lost to decontamination" in text
    assert "| raw | 90 | 10 of 100 |" in text and "| f | 40 | 5 of 45 |" in text


def test_report_of_an_arm_subset_ignores_the_other_arms_runs() -> None:
    # a record resumed with fewer arms (one GPU's share of the runs) still holds the others
    arms = {"raw": {"steps": ["a"], "documents_kept": 1, "tokens_kept": 100},
            "f": {"steps": ["a", "b"], "documents_kept": 1, "tokens_kept": 100}}
    runs = [{"arm": a, "seed": i, "final_eval": {"v": 3.0 - i / 10}, "eval_curve": {"v": [[1, 3.0]]},
             "init_digest": f"w{i}"} for a in ("raw", "f", "gone") for i in range(2)]
    record = {"arms": arms, "arm_order": ["raw", "f"], "eval": {"v": {}}, "budget_tokens": 50,
              "runs": runs}
    s = summarize(record)
    assert set(s["stats"]) == {"raw", "f"}
    assert "gone" not in render_svg(record, ["v"])


def test_ablate_plan_from_a_pilot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`pipeline ablate plan` on a pilot with 3 seeds and per-document losses."""
    from pipeline.cli.main import main

    rng = np.random.default_rng(0)
    tokens = rng.integers(100, 2000, 200).astype(float)
    arms = {"raw": {"steps": ["a"], "documents_kept": 1, "tokens_kept": 10**6},
            "f": {"steps": ["a", "b"], "documents_kept": 1, "tokens_kept": 10**6}}
    runs = []
    for arm, shift in [("raw", 0.0), ("f", -0.03)]:
        for seed in (1, 2, 3):
            nll = (4.0 + shift + 0.02 * rng.standard_normal()
                   + 0.3 * rng.standard_normal(200)) * tokens
            rel = f"runs/{arm}-seed{seed}/eval/v.npy"
            (tmp_path / rel).parent.mkdir(parents=True)
            np.save(tmp_path / rel, np.stack([nll, tokens], axis=1))
            runs.append({"arm": arm, "seed": seed, "final_eval": {"v": nll.sum() / tokens.sum()},
                         "eval_curve": {"v": []}, "eval_docs": {"v": rel}})
    record = {"name": "pilot", "arms": arms, "eval": {"v": {"tokens": int(tokens.sum()),
                                                         "documents": 200}},
              "budget_tokens": 10**6, "runs": runs}
    (tmp_path / "ablation.json").write_text(json.dumps(record))
    assert main(["ablate", "plan", str(tmp_path), "--effect", "0.02"]) == 0
    text = capsys.readouterr().out
    assert "σ_seed" in text and "| 32 |" in text and "What this cannot tell" in text
    assert main(["ablate", "plan", str(tmp_path / "nope"), "--effect", "0.02"]) == 2
