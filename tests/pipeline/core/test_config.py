"""Job validation checks the files steps need (models, tokenizers, targets) before running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import JobConfigError, validate_job


def _job(shared_data: Path, steps: list) -> dict:
    return {"inputs": [str(shared_data / "webmix" / "webmix-00000.warc.gz")], "output": "o",
            "steps": steps}


def _error(shared_data: Path, steps: list) -> str:
    with pytest.raises(JobConfigError) as err:
        validate_job(_job(shared_data, steps))
    return str(err.value)


def test_missing_kenlm_model_names_step_option_and_fix(shared_data: Path) -> None:
    msg = _error(shared_data, ["extract_v1", "langid_v2", {"kenlm_v1": {"model": "x.arpa"}}])
    assert msg == ("steps[2].kenlm_v1.model: file 'x.arpa' does not exist; train it with "
                   "`pipeline lm train` or fix the path")


def test_every_path_option_is_checked(shared_data: Path, tmp_path: Path) -> None:
    arpa = str(shared_data / "models" / "kenlm_sdist_test.arpa")
    assert "kenlm_v1.model: model" in _error(shared_data, [{"kenlm_v1": {"model": arpa}}])
    assert "has no sidecar 'kenlm_sdist_test.arpa.meta.json'" in _error(
        shared_data, [{"kenlm_v1": {"model": arpa}}])
    assert _error(shared_data, [{"kenlm_v1": {"model": arpa, "require_meta": False,
                                              "cutoff_csv": "c.csv"}}]).startswith(
        "steps[0].kenlm_v1.cutoff_csv: file 'c.csv' does not exist")
    assert _error(shared_data, [{"fasttext_quality_v1": {"model": "q.bin"}}]).startswith(
        "steps[0].fasttext_quality_v1.model: file 'q.bin' does not exist; train it with "
        "`pipeline classifier train`")
    assert _error(shared_data, ["extract_v1", {"fasttext_quality_top_v1": {
        "model": str(tmp_path), "fraction": 0.5}}]).startswith(
        f"steps[1].fasttext_quality_top_v1.model: file {str(tmp_path)!r} is a folder")
    assert _error(shared_data, [{"dsir_v1": {"model": "d.npz"}}]).startswith(
        "steps[0].dsir_v1.model: file 'd.npz' does not exist; fit it with `pipeline dsir fit`")
    wiki = str(shared_data / "reference" / "wiki_ref.jsonl.gz")
    assert _error(shared_data, [{"dsir_v1": {"target": [wiki, str(tmp_path / "*.jsonl")]}}]) == (
        f"steps[0].dsir_v1.target[1]: {str(tmp_path / '*.jsonl')!r} matches no file; "
        "fix the path or the glob")
    assert _error(shared_data, [{"tokenize_v1": {"tokenizer": "tok"}}]).startswith(
        "steps[0].tokenize_v1.tokenizer: folder 'tok' does not exist")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert f"folder {str(tmp_path)!r} has no 'refinery_tokenizer.json', 'tokenizer.tiktoken'" in (
        _error(shared_data, [{"tokenize_v1": {"tokenizer": str(tmp_path)}}]))
    assert _error(shared_data, [{"langid_v1": {"model_path": "lid.bin"}}]).startswith(
        "steps[0].langid_v1.model_path: file 'lid.bin' does not exist")


def test_existing_files_pass(shared_data: Path) -> None:
    arpa = str(shared_data / "models" / "kenlm_sdist_test.arpa")
    cutoffs = str(shared_data / "models" / "ccnet_perplexity_cutoff.csv")
    wiki = str(shared_data / "reference" / "wiki_ref.jsonl.gz")
    _, steps = validate_job(_job(shared_data, [
        "extract_v1", "langid_v2",
        {"kenlm_v1": {"model": arpa, "require_meta": False, "cutoff_csv": cutoffs}},
        {"dsir_v1": {"target": [wiki]}}]))
    assert [s.name for s in steps] == ["extract_v1", "langid_v2", "kenlm_v1", "dsir_v1"]


def test_pipeline_run_with_missing_model_exits_2_before_ray(shared_data: Path, repo_root: Path,
                                                            tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(
        {**_job(shared_data, ["extract_v1", "langid_v2", {"kenlm_v1": {"model": "x.arpa"}}]),
         "output": str(tmp_path / "out")}))
    code = ("import sys; from pipeline.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, "run", str(job)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: steps[2].kenlm_v1.model: file 'x.arpa' does not exist; train it with "
        "`pipeline lm train` or fix the path"]
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - started < 30
