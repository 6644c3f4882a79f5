"""Golden outputs: prove that a change (such as a layout refactor) leaves every job's bytes alone.

The script drives the jobs only through the command line (``python -m pipeline.cli run JOB
--output DIR``), never by importing the project, so it keeps working when modules move
between packages. It runs four jobs into one folder, then records a manifest: the sha256 of
every data file they write, and the counts (never the timings) of every ``stats.json``.

Record a manifest of the working tree and compare it with the committed baseline::

    python benchmarks/golden_outputs.py run --out /tmp/g/new && \\
        python benchmarks/golden_outputs.py compare \\
        benchmarks/results/golden-53abc60.json /tmp/g/new/manifest.json

``compare`` prints every differing entry and exits 1, or prints ``identical: N files, M
stats`` and exits 0. A run takes about five to six minutes on two cores (crawl 2-2.5 min,
dedup 2 min, tokenizer and token stream 1 min); ``--out`` must be a fresh folder (a job rerun
into a finished folder does nothing, which would prove nothing). Each job log is kept in
``DIR/logs/``, and ``DIR/run.json`` records the commit, interpreter and job times.

The baseline of another commit is recorded from a worktree of it, with its own native
extensions and ``PYTHONPATH`` pointing at it (the venv's editable install points elsewhere)::

    git worktree add /tmp/golden-base 53abc60
    (cd /tmp/golden-base && /work/main/.venv/bin/python setup.py build_ext --inplace)
    PYTHONPATH=/tmp/golden-base python benchmarks/golden_outputs.py run \\
        --repo /tmp/golden-base --out /tmp/golden/base

``run`` refuses to start when the interpreter, run from ``--repo``, imports ``pipeline`` or
the native encoder ``tokenizer._encode`` from anywhere else.

The jobs, written to ``DIR/jobs/`` with absolute paths and run with the repository as the
current directory:

* ``crawl``: the repository's ``jobs/crawl.yaml`` (webmix WARCs: extraction, langid, Gopher,
  C4, PII), its ``../shared/data/`` prefix replaced by the absolute data folder (``--data``);
* ``dedup``: webmix WARCs through ``extract_v1``, ``dedup_exact_v1``, ``dedup_minhash_v1``
  and ``dedup_lines_v1`` with default options, removed documents kept;
* ``tokenizer``: ``jobs/tokenizer.yaml`` on ``DIR/crawl/data``, with a 4000-token vocabulary;
* ``tokens``: ``jobs/tokens_webmix.yaml`` on ``DIR/crawl/data`` with ``DIR/tokenizer``; the
  stream goes to ``DIR/tokens/webmix``, the job's own output to ``DIR/tokens/_jobs/webmix``.

What the manifest holds and leaves out:

* ``files``: path (relative to ``DIR``), sha256, size and, for Parquet, row count of every
  data file: Parquet under ``data/`` and ``removed/``, the tokenizer files, the token
  stream's parts, ``manifest.json`` and done records;
* ``stats``: each ``stats.json`` and the tokenizer's ``train_report.json`` without timings
  (``seconds``, ``wall_seconds``, ``docs_per_second``, ``cpu_seconds_in_steps``), the
  report's ``key`` (a hash over absolute paths) and with ``DIR`` written as ``$OUT``; also
  the token stream's ``_tokenize.json`` and ``_shards.json``, which list absolute paths
  (normalised the same way);
* left out: bookkeeping that holds timestamps or absolute paths or is derived from the
  above (``_job.json``, ``_plan.json``, ``_SUCCESS``, ``_progress/``, ``_stages/``,
  ``_global/``, ``summary.md``, ``stats.png``), and this script's own ``jobs/``, ``logs/``,
  ``run.json`` and ``manifest.json``. Any other file is hashed, so a file that a change adds
  or stops writing shows up in ``compare``.

Two runs of the same code give identical manifests (checked on 53abc60, into two different
folders): every data file was byte-identical, and of the JSON bookkeeping only timings and
paths under the output folder differed, so no data field needs normalising.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = "refinery-golden-outputs-v1"
MANIFEST = "manifest.json"
OUT_TOKEN = "$OUT"
JOBS = ("crawl", "dedup", "tokenizer", "tokens")

# Bookkeeping the runner writes next to the data: timestamps, absolute paths, or a
# rendering of stats.json (summary.md, stats.png). Nothing in them is an output of a step.
SKIP_NAMES = frozenset({"_job.json", "_plan.json", "_SUCCESS", "summary.md", "stats.png",
                        "report.html"})
SKIP_DIRS = frozenset({"_progress", "_stages", "_global"})
# The script's own files at the top of DIR.
OWN_TOP = frozenset({"jobs", "logs", "run.json", MANIFEST})
# JSON files recorded by content after normalisation instead of by hash.
STATS_NAMES = frozenset({"stats.json", "train_report.json"})
# The token stream's input lists: they name the (absolute) Parquet files it read.
PATH_JSON_NAMES = frozenset({"_tokenize.json", "_shards.json"})
# Fields that measure time, not output: they differ between two runs of identical code.
TIMING_KEYS = frozenset({"seconds", "wall_seconds", "docs_per_second", "cpu_seconds_in_steps"})
# train_report.json's "key" is a sha256 over the absolute input paths and the output
# folder, so it differs with DIR; the inputs and options it covers are recorded anyway.
DROP_KEYS = TIMING_KEYS | {"key"}


def _yaml(value: Any, indent: int = 0) -> str:
    """Render dicts, lists and JSON scalars as block YAML (JSON scalars are valid YAML)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:\n{_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{k}: {_yaml(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for v in value:
            if isinstance(v, (dict, list)) and v:
                body = _yaml(v, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            else:
                lines.append(f"{pad}- {_yaml(v)}")
        return "\n".join(lines)
    return json.dumps(value)


def write_jobs(out: Path, repo: Path, data: Path) -> dict[str, Path]:
    """Write the four job files under ``out/jobs`` with absolute paths; return them by name."""
    jobs_dir = out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    webmix = str(data / "webmix" / "*.warc.gz")
    crawl_data = str(out / "crawl" / "data" / "*.parquet")
    crawl_text = (repo / "jobs" / "crawl.yaml").read_text(encoding="utf-8")
    if "../shared/data/" not in crawl_text:
        raise SystemExit(f"{repo}/jobs/crawl.yaml no longer reads ../shared/data/; update me")
    specs: dict[str, str] = {
        "crawl": crawl_text.replace("../shared/data/", f"{data}/"),
        "dedup": _yaml({
            "job": "crawl",
            "name": "golden-dedup",
            "inputs": [webmix],
            "output": str(out / "dedup"),
            "steps": [{"extract_v1": {}}, {"dedup_exact_v1": {}}, {"dedup_minhash_v1": {}},
                      {"dedup_lines_v1": {}}],
            "write": {"keep_removed": True},
        }) + "\n",
        "tokenizer": _yaml({
            "job": "tokenizer",
            "name": "webmix-tokenizer",
            "inputs": [crawl_data],
            "output": str(out / "tokenizer"),
            "vocab_size": 4000,
            "special_tokens": ["<|endoftext|>"],
            "pattern": "gpt2",
            "max_bytes": 1_000_000_000,
        }) + "\n",
        "tokens": _yaml({
            "job": "crawl",
            "name": "webmix-tokens",
            "inputs": [crawl_data],
            "output": str(out / "tokens" / "_jobs" / "webmix"),
            "steps": [{"tokenize_v1": {"tokenizer": str(out / "tokenizer"),
                                       "eos_token": "<|endoftext|>",
                                       "output": "../../webmix"}}],
        }) + "\n",
    }
    paths = {}
    for name, text in specs.items():
        paths[name] = jobs_dir / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def job_outputs(out: Path) -> dict[str, Path]:
    """The ``--output`` folder of each job under ``out``."""
    return {"crawl": out / "crawl", "dedup": out / "dedup", "tokenizer": out / "tokenizer",
            "tokens": out / "tokens" / "_jobs" / "webmix"}


def check_imports(python: str, repo: Path) -> dict[str, str]:
    """Return where ``python`` (run from ``repo``) imports the code from; exit if not ``repo``."""
    probe = ("import json, pipeline, tokenizer._encode as e; "
             "print(json.dumps({'pipeline': pipeline.__file__, 'tokenizer._encode': e.__file__}))")
    result = subprocess.run([python, "-c", probe], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{python} cannot import the project from {repo} (native extensions "
                         f"not built?):\n{result.stderr.strip()}")
    found = json.loads(result.stdout)
    for module, file in found.items():
        print(f"{module}: {file}")
        if not Path(file).resolve().is_relative_to(repo):
            raise SystemExit(f"{module} comes from {file}, not from {repo}; set PYTHONPATH={repo}")
    return found


def _git_commit(repo: Path) -> str | None:
    result = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def run_jobs(out: Path, repo: Path, data: Path, python: str) -> dict[str, Any]:
    """Run the four jobs into ``out`` (cwd ``repo``), then write ``out/manifest.json``."""
    out = out.resolve()
    repo = repo.resolve()
    data = data.resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; use a fresh folder (a rerun resumes, "
                         "and a finished job would not run again)")
    imports = check_imports(python, repo)
    jobs = write_jobs(out, repo, data)
    outputs = job_outputs(out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"repo": str(repo), "commit": _git_commit(repo), "python": python,
                              "pythonpath": os.environ.get("PYTHONPATH"), "imports": imports,
                              "data": str(data), "jobs": {}}
    # Each job starts its own local Ray cluster: one joined through RAY_ADDRESS would run
    # its workers with whatever code that cluster was started with.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    for name in JOBS:
        cmd = [python, "-m", "pipeline.cli", "run", str(jobs[name]), "--output",
               str(outputs[name])]
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        with open(logs / f"{name}.log", "w", encoding="utf-8") as log:
            rc = subprocess.run(cmd, cwd=repo, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        seconds = round(time.monotonic() - t0, 1)
        record["jobs"][name] = {"command": cmd, "returncode": rc, "seconds": seconds}
        print(f"[{name}] exit {rc} in {seconds} s (log: {logs / f'{name}.log'})", flush=True)
        if rc != 0:
            tail = (logs / f"{name}.log").read_text(encoding="utf-8").splitlines()[-20:]
            print("\n".join(tail), file=sys.stderr)
            (out / "run.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
            raise SystemExit(f"job {name} failed with exit status {rc}")
    record["seconds"] = round(time.monotonic() - started, 1)
    (out / "run.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    manifest = build_manifest(out)
    write_manifest(manifest, out / MANIFEST)
    print(f"{out / MANIFEST}: {len(manifest['files'])} files, {len(manifest['stats'])} stats; "
          f"jobs took {record['seconds']} s")
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(value: Any, out: str) -> Any:
    """Drop timing keys and write the output folder as ``$OUT``, recursively."""
    if isinstance(value, dict):
        return {k: _normalise(v, out) for k, v in sorted(value.items()) if k not in DROP_KEYS}
    if isinstance(value, list):
        return [_normalise(v, out) for v in value]
    if isinstance(value, str):
        return value.replace(out, OUT_TOKEN)
    return value


def _skipped(rel: Path) -> bool:
    if rel.parts[0] in OWN_TOP:
        return True
    return rel.name in SKIP_NAMES or any(part in SKIP_DIRS for part in rel.parts[:-1])


def build_manifest(out: Path) -> dict[str, Any]:
    """Hash every data file under ``out`` and normalise every stats file; return the manifest."""
    import pyarrow.parquet as pq

    out = out.resolve()
    files: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if _skipped(rel):
            continue
        key = rel.as_posix()
        if rel.name in STATS_NAMES or rel.name in PATH_JSON_NAMES:
            stats[key] = _normalise(json.loads(path.read_text(encoding="utf-8")), str(out))
            continue
        entry: dict[str, Any] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        if path.suffix == ".parquet":
            entry["rows"] = pq.ParquetFile(path).metadata.num_rows
        files[key] = entry
    missing = [name for name, p in job_outputs(out).items() if not (p / "stats.json").exists()
               and name != "tokenizer"]
    if missing or not (out / "tokenizer" / "train_report.json").exists():
        raise SystemExit(f"{out}: not a finished golden run (no stats for {missing or 'tokenizer'})")
    return {"format": FORMAT, "files": files, "stats": stats}


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write ``manifest`` as sorted, indented JSON (byte-identical for equal manifests)."""
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        items: dict[str, Any] = {}
        for k, v in value.items():
            items.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return items
    if isinstance(value, list) and value:
        items = {}
        for i, v in enumerate(value):
            items.update(_flat(v, f"{prefix}[{i}]"))
        return items
    return {prefix: value}


def diff_manifests(a: dict[str, Any], b: dict[str, Any],
                   allow_added: Sequence[str] = ()) -> list[str]:
    """Return one line per entry that differs between manifests ``a`` and ``b``.

    A stats field absent from ``a`` whose dotted name matches a glob in ``allow_added``
    (a counter a later version adds on purpose) is not a difference.
    """
    lines = []
    for section in ("files", "stats"):
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) | set(sb)):
            if key not in sb:
                lines.append(f"{section}: only in A: {key}")
            elif key not in sa:
                lines.append(f"{section}: only in B: {key}")
            elif sa[key] != sb[key]:
                if section == "files":
                    lines.append(f"files: differs: {key}: {json.dumps(sa[key], sort_keys=True)}"
                                 f" != {json.dumps(sb[key], sort_keys=True)}")
                    continue
                fa, fb = _flat(sa[key]), _flat(sb[key])
                for field in sorted(set(fa) | set(fb)):
                    va, vb = fa.get(field, "<absent>"), fb.get(field, "<absent>")
                    if field not in fa and any(fnmatch.fnmatchcase(field, g) for g in allow_added):
                        continue
                    if va != vb:
                        lines.append(f"stats: differs: {key}: {field}: {va!r} != {vb!r}")
    return lines


def _load(path: str) -> dict[str, Any]:
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise SystemExit(f"{path}: not a {FORMAT} manifest")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: ``run``, ``manifest`` and ``compare``."""
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the jobs into a fresh folder and write its manifest")
    run.add_argument("--out", required=True, type=Path, help="fresh output folder")
    run.add_argument("--repo", type=Path, default=here,
                     help=f"repository root to run the jobs from (default: {here})")
    run.add_argument("--data", type=Path, default=None,
                     help="shared data folder (default: ../shared/data beside --repo, else "
                          "beside this script's repository)")
    run.add_argument("--python", default=sys.executable,
                     help="interpreter that runs `-m pipeline.cli` (default: this one)")
    man = sub.add_parser("manifest", help="compute a finished folder's manifest")
    man.add_argument("dir", type=Path)
    man.add_argument("--output", help="where to write it (default: DIR/manifest.json; - prints)")
    cmp = sub.add_parser("compare", help="compare two manifests; exit 1 if they differ")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--allow-added", action="append", default=[], metavar="GLOB",
                     help="stats fields new in B that are not differences, e.g. "
                          "'read.counters.decode:*' (repeatable)")
    args = parser.parse_args(argv)

    if args.cmd == "run":
        data = args.data
        if data is None:
            candidates = [args.repo.resolve().parent / "shared" / "data",
                          here.parent / "shared" / "data"]
            data = next((c for c in candidates if (c / "webmix").is_dir()), None)
            if data is None:
                raise SystemExit(f"no shared data at {' or '.join(map(str, candidates))}; "
                                 "pass --data")
        run_jobs(args.out, args.repo, data, args.python)
        return 0
    if args.cmd == "manifest":
        manifest = build_manifest(args.dir)
        if args.output == "-":
            print(json.dumps(manifest, indent=1, sort_keys=True))
        else:
            path = Path(args.output) if args.output else args.dir / MANIFEST
            write_manifest(manifest, path)
            print(f"{path}: {len(manifest['files'])} files, {len(manifest['stats'])} stats")
        return 0
    a, b = _load(args.a), _load(args.b)
    lines = diff_manifests(a, b, args.allow_added)
    if lines:
        print("\n".join(lines))
        print(f"{len(lines)} difference(s) between {args.a} (A) and {args.b} (B)")
        return 1
    print(f"identical: {len(a['files'])} files, {len(a['stats'])} stats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
