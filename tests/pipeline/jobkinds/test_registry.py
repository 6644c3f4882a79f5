"""Job kinds are registered like steps: one module per ``job:`` value, found by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.config import JobConfigError
from pipeline.jobkinds import DEFAULT_KIND, get_job_kind, job_kinds


def test_every_kind_module_names_itself_and_runs() -> None:
    assert job_kinds() == ("ablation", "crawl", "tokenizer", "train", "train_filters")
    assert DEFAULT_KIND in job_kinds()
    for name in job_kinds():
        module = get_job_kind(name)
        assert module.KIND == name and callable(module.run)


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(JobConfigError, match="job: 'crawler' is not a known job kind; "
                       "known kinds: ablation, crawl, tokenizer, train, train_filters"):
        get_job_kind("crawler")
    with pytest.raises(JobConfigError, match="job: None is not a known job kind"):
        get_job_kind(None)  # type: ignore[arg-type]


def test_pipeline_run_refuses_an_unknown_kind_in_one_line(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("job: crawler\n")
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {job}: job: 'crawler' is not a known job kind; known kinds: "
                   "ablation, crawl, tokenizer, train, train_filters")


def test_finding_a_kind_imports_none_of_its_dependencies(repo_root: Path) -> None:
    """``job: train`` runs where only torch, numpy and pyarrow are installed: listing the
    kinds and loading the train kind import neither Ray nor pydantic (nor torch, yet)."""
    code = ("import sys, json; from pipeline.jobkinds import get_job_kind, job_kinds; "
            "job_kinds(); get_job_kind('train'); get_job_kind('crawl'); "
            "print(json.dumps([m for m in ('ray', 'pydantic', 'torch', 'yaml', 'numpy') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=repo_root)
    assert json.loads(out.stdout) == []


def test_tokenizer_kind_runs_from_pipeline_run(shared_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    job = tmp_path / "tok.yaml"
    job.write_text(json.dumps({"job": "tokenizer", "output": str(tmp_path / "unused"),
                               "inputs": [str(shared_data / "eval" / "wiki_val.jsonl.gz")],
                               "vocab_size": 300, "max_bytes": 50_000}))
    assert main(["run", str(job), "--output", str(tmp_path / "tok")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(tmp_path / "tok") and report["vocab_size"] == 300
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
