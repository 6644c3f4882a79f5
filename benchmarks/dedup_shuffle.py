"""The dedup shuffle: what one partition read costs per file format, and the dedup phases'
CPU and files on a ``dedup_scale`` corpus under two code trees.

``formats``: a map unit's rows (three 64-bit columns, ``--rows`` per partition, real exact
keys of webmix-sized random text would not change the cost) split into ``--parts``
partitions and written four ways: one zstd Parquet file per partition (the shuffle before
issue 13), one Parquet file with a row group per partition (``ParquetFile.read_row_group``),
an Arrow IPC file with a record batch per partition (``open_file`` + ``get_batch``), and
the partitioned file of :mod:`pipeline.dedup.phases.partfile`. Prints the CPU per
partition read (the reader opens the file each time, as a reduce task does) and per
unit's write, and each peer's ratio to the partitioned file.

``phases``: builds the stage Parquet of ``<root>/x<scale>/input/*.jsonl`` (once, under
``--out``), runs the exact, lines and MinHash jobs with the ``LocalExecutor`` and
``partitions = 2 x scale`` (as ``dedup_scale.py``) with the ``pipeline`` package found
first on ``PYTHONPATH``, and writes ``result.json``: per phase the CPU-seconds, units,
files written (data files under the phase folder) and bytes, plus a SHA-256 over the
decision, similarity and id files. ``compare A B`` prints the two results as a Markdown
table and whether the digests agree.

    python benchmarks/dedup_shuffle.py formats --parts 128 --rows 22
    PYTHONPATH=/tmp/old-tree python benchmarks/dedup_shuffle.py phases --scale 4 --out /tmp/b4
    PYTHONPATH=. python benchmarks/dedup_shuffle.py phases --scale 4 --out /tmp/a4
    python benchmarks/dedup_shuffle.py compare /tmp/b4 /tmp/a4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if not any(Path(p, "pipeline").is_dir() for p in sys.path if p):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_per_call(fn, n: int) -> float:
    c = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - c) / n


def formats(parts: int, rows: int, repeats: int) -> None:
    """Time one partition read (file opened each time) and one unit's write per format."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from pipeline.dedup.phases.partfile import read_parts, write_parts

    rng = np.random.default_rng(0)
    n = parts * rows
    key = np.sort(rng.integers(0, parts, n))
    cols = {"hi": rng.integers(0, 1 << 63, n).astype(np.uint64),
            "lo": rng.integers(0, 1 << 63, n).astype(np.uint64),
            "ref": (np.int64(5) << 32) | np.arange(n, dtype=np.int64)}
    bounds = np.searchsorted(key, np.arange(parts + 1))
    table = pa.table(cols)
    tmp = Path(tempfile.mkdtemp(prefix="dedup-shuffle-"))
    try:
        def w_files(_):
            for p in range(parts):
                pq.write_table(table.slice(bounds[p], bounds[p + 1] - bounds[p]),
                               tmp / f"p{p}.parquet", compression="zstd")

        def w_groups(_):
            with pq.ParquetWriter(tmp / "rg.parquet", table.schema, compression="zstd") as w:
                for p in range(parts):
                    w.write_table(table.slice(bounds[p], bounds[p + 1] - bounds[p]),
                                  row_group_size=1 << 30)

        def w_ipc(_):
            with pa.OSFile(str(tmp / "f.arrow"), "wb") as sink, \
                    ipc.new_file(sink, table.schema) as w:
                for p in range(parts):
                    w.write_table(table.slice(bounds[p], bounds[p + 1] - bounds[p]))

        def w_part(_):
            write_parts(tmp / "m.parts", key, parts, cols)

        def numpy_cols(t):
            return {k: t.column(k).to_numpy() for k in t.column_names}

        peers = {
            "Parquet file per partition": (
                w_files, lambda i: numpy_cols(pq.read_table(tmp / f"p{i % parts}.parquet"))),
            "Parquet row group per partition": (
                w_groups, lambda i: numpy_cols(pq.ParquetFile(tmp / "rg.parquet")
                                               .read_row_group(i % parts))),
            "Arrow IPC batch per partition": (
                w_ipc, lambda i: numpy_cols(pa.Table.from_batches(
                    [ipc.open_file(pa.memory_map(str(tmp / "f.arrow"))).get_batch(i % parts)]))),
            "partfile (pipeline.dedup.phases.partfile)": (
                w_part, lambda i: read_parts(tmp / "m.parts", i % parts)),
        }
        out = {}
        for name, (write, read) in peers.items():
            write(0)
            out[name] = (_cpu_per_call(write, 3), _cpu_per_call(read, repeats))
        ref_w, ref_r = out["partfile (pipeline.dedup.phases.partfile)"]
        print(f"{parts} partitions x {rows} rows of three 64-bit columns")
        print("| format | read one partition (us CPU) | x partfile | write the unit (ms CPU) "
              "| x partfile |")
        print("|---|---:|---:|---:|---:|")
        for name, (w, r) in out.items():
            print(f"| {name} | {r * 1e6:.0f} | {r / ref_r:.1f} | {w * 1e3:.1f} | {w / ref_w:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stage(root: Path, scale: int, out: Path) -> list:
    from pipeline.core.document import Document
    from pipeline.core.step import StageShard
    from pipeline.io.writer import write_documents_parquet

    stage_dir = out.parent / f"stage-x{scale}"
    stage_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for f in sorted((root / f"x{scale}" / "input").glob("*.jsonl")):
        path = stage_dir / f"{f.stem}.parquet"
        if not path.exists():
            with open(f, encoding="utf-8") as fh:
                docs = [Document(id=d["id"], text=d["text"]) for d in map(json.loads, fh)]
            write_documents_parquet(docs, path, {})
        shards.append(StageShard(f.stem, (str(path),)))
    return shards


def phases(root: Path, scale: int, out: Path, jobs: list[str]) -> None:
    """Run the dedup jobs in-process; record CPU, files and bytes per phase and a digest."""
    import pipeline
    from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
    from pipeline.dedup.phases.lines import LinesConfig, prepare_lines
    from pipeline.dedup.phases.minhash import MinHashConfig, prepare_minhash
    from pipeline.execution.executor import LocalExecutor

    print("pipeline from", Path(pipeline.__file__).parent, flush=True)
    shards = _stage(root, scale, out)
    P = max(2, 2 * scale)
    run = {"exact": (prepare_exact, ExactConfig(partitions=P)),
           "lines": (prepare_lines, LinesConfig(partitions=P)),
           "minhash": (prepare_minhash, MinHashConfig(partitions=P))}
    result = {}
    for job in jobs:
        work = out / job
        shutil.rmtree(work, ignore_errors=True)
        prepare, config = run[job]
        summary = prepare(shards, str(work), config, LocalExecutor())
        per_phase = {}
        for st in sorted(work.glob("*/_stats.json")):
            s = json.loads(st.read_text())
            files = sum(1 for f in st.parent.rglob("*")
                        if f.is_file() and f.parent.name != "_done" and not f.name.startswith("_"))
            per_phase[st.parent.name] = {"cpu_s": s["cpu_s"], "units": s["units_run"],
                                         "files": files, "bytes": s["bytes_written"]}
        digest = hashlib.sha256()
        for sub in ("decisions", "similarity", "ids"):
            for f in sorted((work / sub).glob("*.parquet")):
                digest.update(f.name.encode())
                digest.update(f.read_bytes())
        result[job] = {"summary": summary, "phases": per_phase, "digest": digest.hexdigest()}
        print(job, json.dumps(per_phase), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))


def compare(a: Path, b: Path) -> None:
    """Print two ``phases`` results side by side."""
    ra = json.loads((a / "result.json").read_text())
    rb = json.loads((b / "result.json").read_text())
    print("| job | phase | CPU-s A | CPU-s B | B / A | files A | files B | bytes A | bytes B |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for job in ra:
        if job not in rb:
            continue
        for ph, x in ra[job]["phases"].items():
            y = rb[job]["phases"].get(ph, {"cpu_s": 0.0, "files": 0, "bytes": 0})
            ratio = y["cpu_s"] / x["cpu_s"] if x["cpu_s"] else float("nan")
            print(f"| {job} | {ph} | {x['cpu_s']:.2f} | {y['cpu_s']:.2f} | {ratio:.2f} | "
                  f"{x['files']} | {y['files']} | {x['bytes']} | {y['bytes']} |")
        same = ra[job]["digest"] == rb[job]["digest"] and ra[job]["summary"] == rb[job]["summary"]
        print(f"| {job} | decision/id/similarity files and summary identical: {same} "
              "| | | | | | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("formats")
    f.add_argument("--parts", type=int, default=128)
    f.add_argument("--rows", type=int, default=22)
    f.add_argument("--repeats", type=int, default=2000)
    p = sub.add_parser("phases")
    p.add_argument("--root", type=Path, default=Path("/tmp/dedup_scale"))
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", default="exact,lines,minhash")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    a = ap.parse_args()
    if a.cmd == "formats":
        formats(a.parts, a.rows, a.repeats)
    elif a.cmd == "phases":
        a.out.mkdir(parents=True, exist_ok=True)
        phases(a.root, a.scale, a.out, a.jobs.split(","))
    else:
        compare(a.a, a.b)


if __name__ == "__main__":
    main()
