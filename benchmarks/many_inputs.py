"""A crawl job over many small input files: the driver's peak memory and its cost per file.

webmix (8 gzipped WARC files, 5,612 response records) is re-split, record by record in
order, into N small WARC files (each opens with a ``warcinfo`` record; with N above the
record count some files hold only that), written to a scratch folder outside the
repository. The steps of ``jobs/crawl.yaml`` then run over:

* ``original``: the 8 original files (the baseline: 8 shard tasks);
* ``N grouped``: the N files with ``read.target_shard_bytes`` set to the original files'
  mean size, so the job again has about 8 shard tasks (the option this benchmark is for);
* ``N one task per file`` (``--per-file N``): the N files without it, one Ray task each.

Each run is a fresh child process: it starts a private local Ray cluster (2 CPUs, a
0.5 GB object store), runs ``run_job`` with the Ray executor, and reports the driver's
peak resident memory (``ru_maxrss`` of that process alone; Ray's workers, raylet and GCS
are other processes), its CPU time during ``run_job`` (user + sys of the driver process,
Ray's client threads in it included) and wall time. The driver's overhead per input file
is ``(driver CPU-s of the N-file run - the original run's) / (N - 8)``, and the same for
wall time. Planning (globbing and ``plan_input_shards``) is also timed alone.

Every N-file run's output must equal the original run's: the same documents (id, text,
url, every metadata column; only ``source``, the input file's name, differs) and the same
per-step counts. ``--executor-units N`` also maps a no-op over N one-file shard tasks
with the Ray executor (the arguments and shared job of real shard tasks), which isolates
the driver's cost of one Ray task per file from the workers' work. The resume check (``--resume N``) kills a grouped N-file run (SIGKILL of
its process group, driver and Ray alike) once a third of the records are done, reruns it,
and compares its output with the uninterrupted run's.

Usage, from the repository root::

    python benchmarks/many_inputs.py [--files 1000 10000] [--resume 10000] [--per-file 1000]
        [--executor-units 1000 10000]
        [--scratch /tmp/manyinputs]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WEBMIX = ROOT.parent / "shared" / "data" / "webmix"


# ------------------------------------------------------------------ splitting


def gzip_members(data: bytes) -> list[bytes]:
    """Split a multi-member gzip file's bytes into its members (one WARC record each)."""
    members, pos, view = [], 0, memoryview(data)
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(view[pos:pos + 1])  # header byte; the rest below
        consumed = 1
        while not inflater.eof:
            chunk = view[pos + consumed:pos + consumed + (1 << 16)]
            if not chunk:
                raise ValueError(f"truncated gzip member at byte {pos}")
            inflater.decompress(chunk)
            consumed += len(chunk)
        end = pos + consumed - len(inflater.unused_data)
        members.append(bytes(view[pos:end]))
        pos = end
    return members


def warcinfo(name: str) -> bytes:
    """A gzipped ``warcinfo`` record naming the file, as crawl WARC files begin."""
    body = f"software: refinery benchmarks/many_inputs.py\r\nfilename: {name}\r\n".encode()
    rid = hashlib.sha1(name.encode()).hexdigest()
    head = (f"WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Record-ID: <urn:sha1:{rid}>\r\n"
            f"WARC-Date: 2026-11-27T00:00:00Z\r\nContent-Type: application/warc-fields\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return _gzip(head + body + b"\r\n\r\n")


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def split_webmix(n: int, folder: Path) -> list[Path]:
    """Write webmix's records, in order, into ``n`` WARC files under ``folder`` (reused when
    a finished split is there); return the files."""
    done = folder / "_SPLIT_DONE"
    if done.exists() and done.read_text() == str(n):
        return sorted(folder.glob("*.warc.gz"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    records = [m for f in sorted(WEBMIX.glob("*.warc.gz")) for m in gzip_members(f.read_bytes())]
    files = []
    for k in range(n):
        name = f"webmix-{k:05d}.warc.gz"
        with open(folder / name, "wb") as f:
            f.write(warcinfo(name))
            f.writelines(records[k * len(records) // n:(k + 1) * len(records) // n])
        files.append(folder / name)
    done.write_text(str(n))
    return files


# ------------------------------------------------------------------ one run, in a child


def crawl_job(inputs: str, out: Path, target_shard_bytes: int | None) -> dict[str, Any]:
    """``jobs/crawl.yaml`` with other inputs and output, Ray with 2 CPUs."""
    job = yaml.safe_load((ROOT / "jobs" / "crawl.yaml").read_text(encoding="utf-8"))
    job["inputs"], job["output"], job["executor"] = [inputs], str(out), "ray"
    if target_shard_bytes:
        job["read"]["target_shard_bytes"] = target_shard_bytes
    return job


def child(job_file: str, ray_tmp: str) -> None:
    """Run one job with the Ray executor in this process; print its driver figures as JSON."""
    import resource

    import ray

    from pipeline.core.config import expand_inputs, validate_job
    from pipeline.execution.runner import plan_input_shards, run_job

    job_data = yaml.safe_load(Path(job_file).read_text(encoding="utf-8"))
    job, _ = validate_job(job_data)
    t0 = time.perf_counter()
    files = expand_inputs(job.inputs)
    shards = plan_input_shards(files, job.read)
    planning = time.perf_counter() - t0
    ray.init(address="local", num_cpus=2, object_store_memory=512 * 2**20,
             include_dashboard=False, _temp_dir=ray_tmp)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    stats = run_job(job_data)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    ray.shutdown()
    print("RESULT " + json.dumps({
        "files": len(files), "shards": len(shards), "planning_s": planning,
        "wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime)
        - (before.ru_utime + before.ru_stime),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "documents_in": stats["documents_in"], "documents_out": stats["documents_out"],
        "failed": len(stats["failed_shards"])}), flush=True)


def _unit(job: dict, unit: Any, stage: int, step_range: tuple[int, int], out_dir: str,
          final: bool) -> str:
    """A shard task's arguments in, its return value (the shard id) out, no work."""
    return unit.shard_id


def executor_child(n: int, ray_tmp: str) -> None:
    """Map a no-op over ``n`` planned input shards with the Ray executor (one task each, the
    arguments and ``shared`` job of a real shard task); print the driver's CPU and peak RSS."""
    import resource

    import ray

    from pipeline.core.config import JobConfig
    from pipeline.execution.executor import RayExecutor
    from pipeline.execution.runner import plan_input_shards

    files = [f"/data/crawl/CC-MAIN-2026-49/segment/warc/file-{i:06d}.warc.gz" for i in range(n)]
    job = JobConfig(**crawl_job("/data/*.warc.gz", Path("/tmp/x"), None))
    ray.init(address="local", num_cpus=2, object_store_memory=512 * 2**20,
             include_dashboard=False, _temp_dir=ray_tmp)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    units = plan_input_shards(files, job.read)
    values = RayExecutor().run(_unit, [(u, 0, (0, 6), "/tmp/x", True) for u in units],
                               shared=(job.model_dump(),), desc="no-op units")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    ray.shutdown()
    assert values == [u.shard_id for u in units]
    print("RESULT " + json.dumps({
        "files": n, "shards": n, "planning_s": 0.0, "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def run_executor_child(n: int) -> dict:
    """Run :func:`executor_child` in a fresh process; return its figures."""
    ray_tmp = f"/tmp/mi-ray-{os.getpid()}"
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "_executor", str(n), ray_tmp],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"the executor run of {n} units failed: {proc.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def run_child(job: dict[str, Any], scratch: Path, kill_at: int | None = None) -> dict | None:
    """Run ``job`` in a fresh child process; with ``kill_at``, SIGKILL its process group once
    the job's progress files count that many records, and return None."""
    job_file = scratch / f"job-{Path(job['output']).name}.yaml"
    job_file.write_text(yaml.safe_dump(job))
    ray_tmp = f"/tmp/mi-ray-{os.getpid()}"
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "_child", str(job_file), ray_tmp],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=ROOT, start_new_session=True)
    if kill_at is not None:
        progress = Path(job["output"]) / "_progress" / "stage-0"
        while proc.poll() is None:
            done = 0
            for p in progress.glob("*.json") if progress.exists() else []:
                try:
                    done += json.loads(p.read_text())["records_done"]
                except (OSError, ValueError):
                    pass
            if done >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                shutil.rmtree(ray_tmp, ignore_errors=True)
                return None
            time.sleep(0.5)
        raise RuntimeError("the job finished before it could be killed")
    out, _ = proc.communicate()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"the run of {job_file} failed (exit {proc.returncode})")
    return json.loads(lines[-1][7:])


# ------------------------------------------------------------------ comparing outputs


def output_digest(out: Path) -> tuple[str, int]:
    """SHA-256 over every output document (sorted by id, ``source`` left out) and the count."""
    import pyarrow.parquet as pq

    rows = []
    for p in sorted((out / "data").glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            r.pop("source", None)
            rows.append(json.dumps(r, sort_keys=True, default=str))
    rows.sort()
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16], len(rows)


def step_counts(out: Path) -> list[tuple]:
    """Every step's documents in and out and drop reasons, from ``stats.json``."""
    stats = json.loads((out / "stats.json").read_text())
    return [(s["name"], s["docs_in"], s["docs_out"], sorted(s["dropped"].items()))
            for s in stats["steps"]]


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--resume", type=int, default=10000, help="N of the kill-and-rerun check (0: none)")
    ap.add_argument("--per-file", type=int, default=0, help="also run N files as N tasks")
    ap.add_argument("--executor-units", type=int, nargs="*", default=[],
                    help="also map a no-op over N shard tasks (one Ray task per file)")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/manyinputs"))
    args = ap.parse_args()
    scratch = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    originals = sorted(WEBMIX.glob("*.warc.gz"))
    target = sum(p.stat().st_size for p in originals) // len(originals)
    runs: list[tuple[str, Path, dict]] = []

    def run(label: str, inputs: str, name: str, grouped: bool) -> dict:
        out = scratch / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        print(f"running {label} ...", flush=True)
        result = run_child(crawl_job(inputs, out, target if grouped else None), scratch)
        runs.append((label, out, result))
        print(f"  {result}", flush=True)
        return result

    base = run("original 8 files", str(WEBMIX / "*.warc.gz"), "original", False)
    for n in args.files:
        t0 = time.perf_counter()
        split_webmix(n, scratch / f"split-{n}")
        print(f"split webmix into {n} files in {time.perf_counter() - t0:.1f} s", flush=True)
        run(f"{n} files, grouped", str(scratch / f"split-{n}" / "*.warc.gz"), f"grouped-{n}", True)
    if args.per_file:
        n = args.per_file
        split_webmix(n, scratch / f"split-{n}")
        run(f"{n} files, one task each", str(scratch / f"split-{n}" / "*.warc.gz"),
            f"perfile-{n}", False)

    if args.executor_units:
        print("\none Ray task per file, no work in the task: the driver's cost of planning, "
              "submitting and collecting N shard tasks")
        print("| units | driver wall s | driver CPU-s | driver peak RSS MB | CPU ms/unit |")
        print("|---:|---:|---:|---:|---:|")
        for n in args.executor_units:
            r = run_executor_child(n)
            print(f"| {n:,} | {r['wall_s']:.1f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                  f"{1000 * r['cpu_s'] / n:.2f} |", flush=True)
    ref_digest, ref_docs = output_digest(scratch / "out" / "original")
    ref_counts = step_counts(scratch / "out" / "original")
    print(f"\nDate {datetime.date.today()}; base: {base['shards']} shards, "
          f"{base['documents_in']} documents in, {ref_docs} out (digest {ref_digest})\n")
    print("| run | files | shard tasks | planning s | run_job wall s | driver CPU-s | "
          "driver peak RSS MB | driver CPU ms/file | wall ms/file | output = original |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, out, r in runs:
        extra = r["files"] - base["files"]
        cpu_ms = 1000 * (r["cpu_s"] - base["cpu_s"]) / extra if extra else None
        wall_ms = 1000 * (r["wall_s"] - base["wall_s"]) / extra if extra else None
        same = output_digest(out) == (ref_digest, ref_docs) and step_counts(out) == ref_counts
        print(f"| {label} | {r['files']:,} | {r['shards']:,} | {r['planning_s']:.2f} | "
              f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              + (f"{cpu_ms:.2f} | {wall_ms:.2f} | " if extra else "- | - | ")
              + ("yes" if same else "**NO**") + " |")

    if args.resume:
        n = args.resume
        split_webmix(n, scratch / f"split-{n}")
        inputs = str(scratch / f"split-{n}" / "*.warc.gz")
        out = scratch / "out" / f"resumed-{n}"
        shutil.rmtree(out, ignore_errors=True)
        job = crawl_job(inputs, out, target)
        print(f"\nresume check, {n} files grouped: killing the run at 1/3 of the records",
              flush=True)
        run_child(job, scratch, kill_at=base["documents_in"] // 3)
        records = [json.loads(p.read_text()) for p in (out / "_progress" / "stage-0").glob("*.json")]
        partial = (sum(r["done"] for r in records), len(records),
                   sum(r["records_done"] for r in records))
        rerun = run_child(job, scratch)
        uninterrupted = scratch / "out" / f"grouped-{n}"
        same = (output_digest(out) == output_digest(uninterrupted)
                and step_counts(out) == step_counts(uninterrupted)
                and sorted(p.name for p in (out / "data").glob("*.parquet"))
                == sorted(p.name for p in (uninterrupted / "data").glob("*.parquet")))
        print(f"killed with {partial[0]} of {partial[1]} started shards done, {partial[2]} "
              f"records processed; the rerun took {rerun['wall_s']:.1f} s, peak driver RSS "
              f"{rerun['peak_rss_mb']:.0f} MB; output equals the uninterrupted run's: "
              + ("yes" if same and (out / "_SUCCESS").exists() else "**NO**"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_executor":
        executor_child(int(sys.argv[2]), sys.argv[3])
    else:
        main()
