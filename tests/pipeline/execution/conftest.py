"""Fixtures of the execution tests: a small real crawl job's output, a headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

#: a console line of an uncaught script error, as Chromium logs it with --enable-logging
_CONSOLE_ERROR = re.compile(r'CONSOLE.*"(Uncaught [^"]*)"')
_BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def webmix_crawl(tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
                 repo_root: Path) -> Path:
    """The output folder of ``jobs/crawl.yaml`` run over the first webmix archive (its steps
    and options unchanged; one shard, local executor), report.html included."""
    from pipeline.execution.runner import run_job

    job = yaml.safe_load((repo_root / "jobs" / "crawl.yaml").read_text(encoding="utf-8"))
    job["inputs"] = [str(sorted((shared_data / "webmix").glob("*.warc.gz"))[0])]
    job["executor"] = "local"
    out = tmp_path_factory.mktemp("webmix-crawl")
    run_job(job, output=str(out))
    return out


@pytest.fixture(scope="session")
def chromium() -> Callable[..., tuple[str, list[str]]]:
    """A function ``load(html, screenshot=None) -> (DOM after scripts ran, script errors)``
    that opens a file in a real headless Chromium; skips when no Chromium is installed
    (Debian: ``apt-get install -y chromium``)."""
    browser = next((b for b in map(shutil.which, _BROWSERS) if b), None)
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install -y chromium); the report "
                    "page is not rendered in a browser")

    def load(html: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
        base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--enable-logging=stderr", "--v=0", "--window-size=1400,1800"]
        url = html.resolve().as_uri()
        run = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120, check=True)
        errors = _CONSOLE_ERROR.findall(run.stderr)
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True,
                           timeout=120, check=True)
        return run.stdout, errors

    return load


@pytest.fixture(scope="session")
def webmix_dedup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The output folder of a job that extracts the first webmix archive, then runs MinHash
    near-duplicate removal (Jaccard 0.5) and line dedup (local executor)."""
    from pipeline.execution.runner import run_job

    job = {"job": "crawl", "name": "webmix-dedup", "executor": "local",
           "inputs": [str(sorted((shared_data / "webmix").glob("*.warc.gz"))[0])],
           "read": {"html_only": False},
           "steps": [{"extract_v1": {}}, {"dedup_minhash_v1": {"threshold": 0.5}},
                     {"dedup_lines_v1": {}}],
           "write": {"keep_removed": True, "checkpoint_docs": 500}}
    out = tmp_path_factory.mktemp("webmix-dedup")
    run_job(job, output=str(out))
    return out
