"""``job: tokenizer``: a tokenizer trained from extracted documents, in every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import JobConfigError
from pipeline.jobkinds.tokenizer import run_tokenizer_job
from tokenizer import Tokenizer


def test_tokenizer_job_trains_saves_and_skips_a_finished_rerun(shared_data: Path, tmp_path: Path) -> None:
    job = {"job": "tokenizer", "inputs": [str(shared_data / "eval" / "wiki_val.jsonl.gz")],
           "output": str(tmp_path / "tok"), "vocab_size": 600, "max_bytes": 400_000}
    report = run_tokenizer_job(job)
    assert report["vocab_size"] == 600 and report["merges"] == 600 - 256 - 1
    assert 400_000 <= report["corpus_bytes"] < 600_000 and report["documents"] > 10
    tok = Tokenizer.load(tmp_path / "tok")
    text = "The Battle of Hastings was fought on 14 October 1066.<|endoftext|>Next"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and ids.count(tok.encode("<|endoftext|>")[0]) == 1
    import tokenizers

    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert hf.encode(text).ids == ids
    mtime = (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns
    assert run_tokenizer_job(job) == report
    assert (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns == mtime


def test_tokenizer_job_from_the_cli_and_its_errors(shared_data: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "tok.yaml"
    path.write_text(yaml.safe_dump({"job": "tokenizer", "inputs": [str(shared_data / "webmix" / "webmix-00000.warc.gz")],
                                    "output": str(tmp_path / "t"), "vocab_size": 300}))
    assert main(["run", str(path)]) == 2
    assert "holds HTML" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"job": "tokenizer", "inputs": ["x.jsonl"], "output": "t", "vocab": 3}))
    assert main(["run", str(path)]) == 2
    assert "vocab: unknown key" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"job": "tokenizer", "output": str(tmp_path / "t2"), "vocab_size": 300,
                                    "max_bytes": 50_000,
                                    "inputs": [str(shared_data / "eval" / "wiki_val.jsonl.gz")]}))
    assert main(["run", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_size"] == 300 and (tmp_path / "t2" / "vocab.json").exists()


def test_warc_input_is_refused_before_training(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match="crawl job's output"):
        run_tokenizer_job({"inputs": [str(shared_data / "cc" / "pywb_iana2014.warc.gz")],
                           "output": str(tmp_path / "t"), "vocab_size": 300})
