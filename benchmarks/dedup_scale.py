"""Exact + MinHash + line deduplication from 1x to 64x webmix's extracted text, one job each.

For every scale ``s`` this benchmark

1. **builds a corpus** of ``s`` times the bytes of webmix's extracted text (resiliparse main
   content, as ``extract_v1`` leaves it) in ``shards_per_x * s`` JSONL shards under
   ``--root`` (default ``/tmp/dedup_scale``, outside the repository). Documents are new:
   each takes its length from a random webmix document and is filled with at least four
   random lines (paragraphs of >= 6 words, longer than 400 characters cut at sentence
   ends, so no single shared line makes two documents similar) of webmix and ``wiki_ref``
   text, every line with one or two
   of its words replaced by random words of the same text, so no two lines and no two
   documents are duplicates by construction. Planted on top, at known rates and
   seeded: **exact copies** (``--exact-rate`` of the documents) and **near copies**
   (``--near-rate``: 1% of the words, at least 3, replaced in a base of >= 200 words; a
   copy whose exact 5-gram Jaccard with its base is below 0.85 is not planted; a sample's
   Jaccard is reported) of earlier
   documents drawn from a reservoir over all earlier shards (so pairs cross shards), each
   base copied at most once; and **boilerplate**: 30% of the base documents belong to one
   of ``n / 130`` sites whose header and footer lines they carry (every site has many
   documents, so every boilerplate line occurs >= 2 times). Shards are shuffled, so a copy
   can come before its base. ``truth.json`` records every pair and every boilerplate line.
2. **runs one job** (``pipeline.execution.runner.run_job``) with ``dedup_exact_v1``,
   ``dedup_minhash_v1`` and ``dedup_lines_v1`` on a local multi-node Ray cluster it starts
   itself (a head and two worker nodes, one CPU each, own ``--temp-dir``, small object
   store), with ``partitions = partitions_per_x * s`` for every step so that partitions
   grow with the input. The cluster is stopped by pid at the end (``ray stop`` would stop
   other people's clusters).
3. **measures** every dedup phase from the ``<phase>/_stats.json`` files that
   :func:`pipeline.dedup.phases.store.run_phase` writes (CPU-seconds over tasks, wall
   time, the largest task's peak RSS, bytes written), and every shard stage (read, and the
   three apply stages) by wrapping the stage tasks in the same
   :func:`~pipeline.dedup.phases.store.metered_call`; bytes written there are the stage's
   Parquet files.
4. **scores** the output against the ground truth: recall of planted exact and near pairs
   (one of the two removed), false removals (documents outside planted pairs removed, plus
   pairs with both removed) over the documents outside planted pairs, boilerplate lines
   cut (of those in surviving documents) and other lines cut.

CPU time, not wall time, gives the rates: the 2-core VM is shared. Results:
``<root>/x<s>/result.json`` per scale, and with ``--report`` (after the runs, or alone to
merge finished scales) ``benchmarks/results/dedup_scale.json``, ``dedup_scale.png`` and a
Markdown table on stdout.

Usage (repository root)::

    .venv/bin/python benchmarks/dedup_scale.py --scales 1 4 16 64 --report
    .venv/bin/python benchmarks/dedup_scale.py --report          # merge finished scales only
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pipeline.dedup.phases.store import metered_call  # noqa: E402
from pipeline.execution.executor import RayExecutor  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("dedup_scale")

MIN_LINE_WORDS = 6
MAX_LINE = 400
MIN_DOC_LINES = 4
NEAR_EDIT = 0.01
NEAR_MIN_WORDS = 200
NEAR_MIN_JACCARD = 0.85
RESERVOIR = 3000
DOCS_PER_SITE = 130
BOILER_FRACTION = 0.3


# --------------------------------------------------------------------------- corpus


def load_pool(root: Path) -> dict[str, Any]:
    """Return the source lines, vocabulary, webmix document lengths and webmix's extracted
    bytes (cached in ``root/pool.json`` after the first extraction)."""
    cache = root / "pool.json"
    if cache.exists():
        with open(cache, encoding="utf-8") as f:
            pool = json.load(f)
        pool["lines"] = [c for ln in pool["lines"] for c in _chunks(ln)]
        return pool
    import gzip

    from dedup_webmix_eval import load_webmix

    web = [d.text for d in load_webmix(DATA / "webmix", "extracted")]
    with gzip.open(DATA / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        wiki = [json.loads(line)["text"] for line in f]
    lines = sorted({ln.strip() for t in web + wiki for ln in t.split("\n")
                    if len(ln.split()) >= MIN_LINE_WORDS})
    vocab = sorted({w for ln in lines for w in ln.split()})
    pool = {"web_bytes": sum(len(t.encode("utf-8")) for t in web), "web_docs": len(web),
            "lengths": [len(t) for t in web], "lines": lines, "vocab": vocab}
    root.mkdir(parents=True, exist_ok=True)
    with open(cache, "w", encoding="utf-8") as f:
        json.dump(pool, f)
    return pool


def _edit_words(rnd: random.Random, words: list[str], k: int, vocab: list[str]) -> None:
    """Replace ``k`` random words (not spanning a line break) by other vocabulary words."""
    n = len(words)
    for _ in range(k):
        for _try in range(8):
            j = rnd.randrange(n)
            if "\n" not in words[j]:
                break
        w = vocab[rnd.randrange(len(vocab))]
        while w == words[j]:
            w = vocab[rnd.randrange(len(vocab))]
        words[j] = w


def _chunks(line: str) -> list[str]:
    """Split a line longer than ``MAX_LINE`` characters at sentence ends into pieces of at
    most about ``MAX_LINE`` characters, keeping those of >= ``MIN_LINE_WORDS`` words: two
    documents that drew the same long line would otherwise be near-duplicates by accident."""
    if len(line) <= MAX_LINE:
        return [line]
    out, cur = [], ""
    for sent in line.replace(". ", ".\0").split("\0"):
        if cur and len(cur) + len(sent) + 1 > MAX_LINE:
            out.append(cur)
            cur = ""
        cur = f"{cur} {sent}" if cur else sent
    out.append(cur)
    return [c[:MAX_LINE] for c in out if len(c.split()) >= MIN_LINE_WORDS]


@dataclass
class _Generator:
    """Streams a corpus shard by shard (bounded memory: a reservoir of bases, not the corpus)."""

    pool: dict[str, Any]
    rnd: random.Random
    exact_rate: float
    near_rate: float
    n_sites: int
    reservoir: list[tuple[str, str]] = field(default_factory=list)
    seen_bases: int = 0
    sites: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from pipeline.dedup.text import ShingleHasher

        self._hasher = ShingleHasher(5)
        v = self.pool["vocab"]
        for _ in range(self.n_sites):
            name = " ".join(v[self.rnd.randrange(len(v))].title() for _ in range(3))
            self.sites.append((f"{name} | Home | News | About us | Contact | Subscribe",
                               f"Copyright {name}. All rights reserved. Privacy policy | "
                               "Terms of use | Cookie settings"))

    def base_text(self) -> tuple[str, int | None]:
        """A new document and its site (None without boilerplate)."""
        rr, lines, vocab = self.rnd.random, self.pool["lines"], self.pool["vocab"]
        lengths = self.pool["lengths"]
        nl, nv = len(lines), len(vocab)
        target = min(max(lengths[int(rr() * len(lengths))], 300), 60_000)
        out, n = [], 0
        while n < target or len(out) < MIN_DOC_LINES:
            # one or two words of every line replaced: no line repeats by accident
            words = lines[int(rr() * nl)].split(" ")
            words[int(rr() * len(words))] = vocab[int(rr() * nv)]
            if rr() < 0.5:
                words[int(rr() * len(words))] = vocab[int(rr() * nv)]
            s = " ".join(words)
            out.append(s)
            n += len(s) + 1
        site = None
        if rr() < BOILER_FRACTION:
            site = self.rnd.randrange(self.n_sites)
            out = [self.sites[site][0], *out, self.sites[site][1]]
        return "\n".join(out), site

    def near_copy(self, base: str) -> str | None:
        """``base`` with 1% of its words (at least 3) replaced, or None when the copy's exact
        5-gram Jaccard with ``base`` would be below ``NEAR_MIN_JACCARD`` (scripts the
        shingler splits otherwise than spaces, punctuation-only words)."""
        from pipeline.dedup.text import jaccard

        words = base.split(" ")
        _edit_words(self.rnd, words, max(3, round(len(words) * NEAR_EDIT)), self.pool["vocab"])
        text = " ".join(words)
        a, b = self._hasher.shingle_sets([base, text])
        return text if jaccard(a, b) >= NEAR_MIN_JACCARD else None

    def shard(self, prefix: str, target_bytes: int) -> tuple[list[dict], list[list], dict]:
        """Return (documents, planted pairs ``[copy, base, kind]``, ``{doc id: site}``)."""
        docs: list[dict] = []
        pairs: list[list] = []
        sites: dict[str, int] = {}
        pending_base: list[tuple[str, str]] = []
        n = 0
        while n < target_bytes:
            doc_id = f"{prefix}-{len(docs):06d}"
            r = self.rnd.random()
            if r < self.exact_rate + self.near_rate and self.reservoir:
                j = self.rnd.randrange(len(self.reservoir))
                base_id, base = self.reservoir[j]
                self.reservoir[j] = self.reservoir[-1]
                self.reservoir.pop()
                if r < self.exact_rate:
                    text, kind = base, "exact"
                else:
                    text, kind = self.near_copy(base), "near"
                    if text is None:  # too few shingles to plant a safe near pair
                        continue
                pairs.append([doc_id, base_id, kind])
                if base_id in self._site_of:
                    sites[doc_id] = self._site_of[base_id]
            else:
                text, site = self.base_text()
                if site is not None:
                    sites[doc_id] = site
                if text.count(" ") >= NEAR_MIN_WORDS:
                    pending_base.append((doc_id, text))
            docs.append({"id": doc_id, "text": text})
            n += len(text.encode("utf-8"))
        self._site_of.update(sites)
        # bases enter the reservoir after their shard, so copies always cross shards
        for item in pending_base:
            self.seen_bases += 1
            if len(self.reservoir) < RESERVOIR:
                self.reservoir.append(item)
            else:
                j = self.rnd.randrange(self.seen_bases)
                if j < RESERVOIR:
                    self.reservoir[j] = item
        self.rnd.shuffle(docs)
        return docs, pairs, sites

    _site_of: dict[str, int] = field(default_factory=dict)
    _hasher: Any = field(default=None)


def build_corpus(root: Path, scale: int, pool: dict[str, Any], shards_per_x: int, seed: int,
                 exact_rate: float, near_rate: float) -> dict[str, Any]:
    """Write the JSONL shards and ``truth.json`` of one scale (kept if already complete)."""
    out = root / f"x{scale}"
    truth_path = out / "truth.json"
    if truth_path.exists():
        with open(truth_path, encoding="utf-8") as f:
            return json.load(f)
    shutil.rmtree(out / "input", ignore_errors=True)
    (out / "input").mkdir(parents=True)
    n_shards = shards_per_x * scale
    total = pool["web_bytes"] * scale
    expected_docs = pool["web_docs"] * scale
    gen = _Generator(pool, random.Random(f"{seed}-{scale}"), exact_rate, near_rate,
                     max(4, round(expected_docs * BOILER_FRACTION / DOCS_PER_SITE)))
    t0 = time.process_time()
    pairs: list[list] = []
    sites: dict[str, int] = {}
    n_docs = n_bytes = 0
    for i in range(n_shards):
        docs, p, s = gen.shard(f"x{scale}-{i:04d}", total // n_shards)
        pairs += p
        sites.update(s)
        with open(out / "input" / f"shard-{i:04d}.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False))
                f.write("\n")
        n_docs += len(docs)
        n_bytes += sum(len(d["text"].encode("utf-8")) for d in docs)
    truth = {"scale": scale, "seed": seed, "shards": n_shards, "documents": n_docs,
             "text_bytes": n_bytes, "pairs": pairs, "sites": sites,
             "boilerplate": [list(x) for x in gen.sites], "build_cpu_s": time.process_time() - t0}
    truth["near_jaccard"] = _near_jaccard_sample(out / "input", pairs)
    with open(truth_path, "w", encoding="utf-8") as f:
        json.dump(truth, f)
    return truth


def _near_jaccard_sample(folder: Path, pairs: list[list], k: int = 200) -> dict[str, float]:
    """Exact 5-gram shingle Jaccard of up to ``k`` planted near pairs (min, median, max)."""
    import numpy as np

    from pipeline.dedup.text import ShingleHasher, jaccard

    want = {}
    for copy, base, kind in pairs:
        if kind == "near" and len(want) < k:
            want[copy] = base
    need = set(want) | set(want.values())
    texts: dict[str, str] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if len(texts) == len(need):  # the first near pairs lie in the first shards
            break
        with open(path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if d["id"] in need:
                    texts[d["id"]] = d["text"]
    hasher = ShingleHasher(5)
    vals = []
    for copy, base in want.items():
        a, b = hasher.shingle_sets([texts[copy], texts[base]])
        vals.append(jaccard(a, b))
    if not vals:
        return {}
    return {"pairs": len(vals), "min": float(np.min(vals)), "median": float(np.median(vals)),
            "max": float(np.max(vals))}


# --------------------------------------------------------------------------- cluster


# Ray's client keeps the first token it used for the life of the process, so every
# cluster this process starts (one per scale) shares one private token.
_PROCESS_TOKEN = secrets.token_hex(32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head and ``workers`` worker nodes started with ``ray start`` on this machine, one CPU
    each, all under ``root`` (a short path: Ray's socket paths must stay under 107 bytes),
    with a private auth token; :meth:`stop` ends exactly their processes, by pid."""

    def __init__(self, root: Path, workers: int = 2, object_store: int = 150 * 2**20) -> None:
        self.root, self.workers, self.object_store = root, workers, object_store
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_PROCESS_TOKEN,
                        RAY_USAGE_STATS_ENABLED="0")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, temp: Path, *args: str) -> None:
        temp.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([self.ray, "start", *args, f"--temp-dir={temp}", "--num-cpus=1",
                               f"--object-store-memory={self.object_store}",
                               f"--dashboard-agent-listen-port={_free_port()}",
                               "--disable-usage-stats"],
                              env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"ray start {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def start(self) -> None:
        """Start the head, then the workers; export the token to this (driver) process."""
        self._start(self.root / "head", "--head", f"--port={self.port}",
                    "--include-dashboard=false", f"--dashboard-port={_free_port()}")
        for i in range(self.workers):
            self._start(self.root / f"w{i + 1}", f"--address={self.address}")
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED"):
            os.environ[k] = self.env[k]

    def _pids(self) -> list[int]:
        """Processes whose command line names a path under ``root``, and their children."""
        procs: dict[int, tuple[int, list[str]]] = {}
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                with open(f"/proc/{e}/stat", encoding="utf-8", errors="replace") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{e}/cmdline", "rb") as f:
                    cmd = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except (OSError, ValueError, IndexError):
                continue
            procs[int(e)] = (ppid, cmd)
        mark = str(self.root)
        found = {p for p, (_, cmd) in procs.items()
                 if any(a == mark or mark + os.sep in a for a in cmd)}
        while more := {p for p, (pp, _) in procs.items() if pp in found} - found:
            found |= more
        found.discard(os.getpid())
        return sorted(found)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of this cluster."""
        import signal

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(3)
            if not self._pids():
                return


@dataclass
class MeteredRayExecutor(RayExecutor):
    """A :class:`RayExecutor` that meters the shard-stage tasks (``desc`` "stage ...") with
    :func:`metered_call`; dedup phases meter themselves (``run_phase``)."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def map(self, fn, args, *, names=None, desc="tasks", unit="task", resources=None,
            shared=(), status=None):
        kw = {"names": names, "desc": desc, "unit": unit, "shared": shared, "status": status}
        if resources is not None:
            kw["resources"] = resources
        if not desc.startswith("stage"):
            return super().map(fn, args, **kw)
        t0 = time.perf_counter()
        outcomes = super().map(functools.partial(metered_call, fn), args, **kw)
        meters = [o.value for o in outcomes if o.ok]
        for o in outcomes:
            if o.ok:
                o.value = o.value["value"]
        self.stages[desc] = {
            "units_run": len(meters), "wall_s": time.perf_counter() - t0,
            "cpu_s": sum(m["cpu_s"] for m in meters),
            "max_task_rss": max((m["peak_rss"] for m in meters), default=0),
            "max_task_rss_growth": max((m["peak_rss"] - m["rss_start"] for m in meters),
                                       default=0)}
        return outcomes


# --------------------------------------------------------------------------- run + score


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_scale(root: Path, scale: int, truth: dict[str, Any], partitions_per_x: float,
              executor: str) -> dict[str, Any]:
    """Run the dedup job on one scale's corpus; return per-phase measures and scores."""
    from pipeline.execution.runner import run_job

    base = root / f"x{scale}"
    out = base / "out"
    shutil.rmtree(out, ignore_errors=True)
    p = max(2, round(partitions_per_x * scale))
    job = {"job": "crawl", "name": f"dedup-scale-x{scale}", "executor": executor,
           "inputs": [str(base / "input" / "*.jsonl")], "output": str(out),
           "read": {"format": "jsonl"},
           "steps": [{"dedup_exact_v1": {"partitions": p}},
                     {"dedup_minhash_v1": {"partitions": p}},
                     {"dedup_lines_v1": {"partitions": p}}],
           "write": {"keep_removed": False}}
    cluster = None
    if executor == "ray":
        for attempt in range(4):
            # Ray gives a node 30 s to register; on a loaded machine that can pass: retry
            cluster = LocalCluster(Path(f"/tmp/dsr-{os.getpid()}-{attempt}"))
            try:
                cluster.start()
                break
            except Exception as e:
                cluster.stop()
                shutil.rmtree(cluster.root, ignore_errors=True)
                if attempt == 3:
                    raise
                log.warning("cluster start failed (%s); retrying", str(e).splitlines()[0])
        ex = MeteredRayExecutor(address=cluster.address, log_to_driver=False)
    else:
        from pipeline.execution.executor import LocalExecutor
        ex = LocalExecutor()
    t0 = time.perf_counter()
    try:
        stats = run_job(job, executor=ex)
    finally:
        ex.shutdown()
        if executor == "ray":
            import ray

            ray.shutdown()
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
    wall = time.perf_counter() - t0
    phases = _phase_rows(out, getattr(ex, "stages", {}))
    result = {"scale": scale, "partitions": p, "documents": truth["documents"],
              "text_bytes": truth["text_bytes"], "shards": truth["shards"],
              "near_jaccard": truth.get("near_jaccard"), "job_wall_s": wall,
              "phases": phases, "steps": {k: v for k, v in stats.get("steps", {}).items()}
              if isinstance(stats.get("steps"), dict) else stats.get("steps"),
              "scores": score(out, truth)}
    return result


STEP_OF_STAGE = {1: "dedup_exact_v1", 2: "dedup_minhash_v1", 3: "dedup_lines_v1"}


def _phase_rows(out: Path, stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dedup phase (components rounds folded into one) and per shard stage."""
    rows: list[dict[str, Any]] = []
    for k, step in STEP_OF_STAGE.items():
        work = out / "_global" / f"stage-{k}"
        merged: dict[str, dict[str, Any]] = {}
        for path in sorted(work.glob("*/_stats.json")):
            name = path.parent.name
            key = "components" if name.startswith("cc_r") or name == "components" else name
            with open(path, encoding="utf-8") as f:
                s = json.load(f)
            m = merged.setdefault(key, {"step": step, "phase": key, "rounds": 0, "cpu_s": 0.0,
                                        "wall_s": 0.0, "max_task_rss": 0,
                                        "max_task_rss_growth": 0, "bytes_written": 0,
                                        "units_run": 0})
            m["rounds"] += 1
            for f_ in ("cpu_s", "wall_s", "bytes_written", "units_run"):
                m[f_] += s[f_]
            m["max_task_rss"] = max(m["max_task_rss"], s["max_task_rss"])
            m["max_task_rss_growth"] = max(m["max_task_rss_growth"], s["max_task_rss_growth"])
        rows += list(merged.values())
    n = len(STEP_OF_STAGE) + 1
    for desc, s in stages.items():
        k = int(desc.split()[1].split("/")[0]) - 1  # "stage 2/4 [...]": stage index 1
        folder = out / ("data" if k == n - 1 else f"_stages/stage-{k + 1}")
        step = "read" if k == 0 else STEP_OF_STAGE[k]
        rows.append({"step": step, "phase": "apply" if k else "JSONL -> stage",
                     "rounds": 1, "bytes_written": _dir_bytes(folder) if folder.exists() else 0,
                     **{f: s[f] for f in ("cpu_s", "wall_s", "max_task_rss",
                                          "max_task_rss_growth", "units_run")}})
    return rows


def score(out: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """Recall of planted pairs, false removals, and boilerplate / other line cuts."""
    import pyarrow.parquet as pq

    kept: set[str] = set()
    sites = truth["sites"]
    boiler = truth["boilerplate"]
    b_total = b_left = lines_removed = lines_total = 0
    for path in sorted((out / "data").glob("**/*.parquet")):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(columns=["id", "text", "dedup_lines_removed"],
                                     batch_size=2048):
            ids = batch.column("id").to_pylist()
            kept.update(ids)
            texts = batch.column("text").to_pylist()
            removed = batch.column("dedup_lines_removed").to_pylist()
            for i, t, r in zip(ids, texts, removed, strict=True):
                r = r or 0
                lines_total += t.count("\n") + 1 + r
                lines_removed += r
                s = sites.get(i)
                if s is not None:
                    b_total += 2
                    left = sum(1 for ln in boiler[s] if ln in t)
                    b_left += left
                    lines_removed -= 2 - left  # boilerplate cut is not an "other" cut
    in_pair: set[str] = set()
    found = {"exact": 0, "near": 0}
    planted = {"exact": 0, "near": 0}
    both_removed = 0
    for copy, base, kind in truth["pairs"]:
        in_pair.update((copy, base))
        planted[kind] += 1
        gone = (copy not in kept) + (base not in kept)
        found[kind] += gone >= 1
        both_removed += gone == 2
    non_planted = truth["documents"] - len(in_pair)
    n_kept_non_planted = sum(1 for i in kept if i not in in_pair)
    false = (non_planted - n_kept_non_planted) + both_removed
    pairs = planted["exact"] + planted["near"]
    return {
        "planted_exact": planted["exact"], "planted_near": planted["near"],
        "recall_exact": found["exact"] / max(1, planted["exact"]),
        "recall_near": found["near"] / max(1, planted["near"]),
        "recall": (found["exact"] + found["near"]) / max(1, pairs),
        "non_planted": non_planted, "false_removals": false,
        "false_removal_rate": false / max(1, non_planted),
        "kept": len(kept),
        "boilerplate_lines": b_total, "boilerplate_cut": (b_total - b_left) / max(1, b_total),
        "other_lines": lines_total - b_total,
        "other_lines_cut": lines_removed / max(1, lines_total - b_total),
    }


# --------------------------------------------------------------------------- report


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(root: Path, results_dir: Path) -> str:
    """Merge finished scales into JSON, a PNG and a Markdown table (returned)."""
    runs = []
    for path in sorted(root.glob("x*/result.json"), key=lambda p: int(p.parent.name[1:])):
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    if not runs:
        raise SystemExit(f"no finished scale under {root}; run with --scales first")
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = ["| scale | docs | text MB | P | CPU s (dedup phases) | CPU s (apply) | "
             "CPU us/doc | CPU core-h/TB | largest task peak RSS | recall exact / near | "
             "false removals | boilerplate cut | other lines cut |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    summary = []
    for r in runs:
        dedup = [p for p in r["phases"] if p["phase"] not in ("apply", "JSONL -> stage")]
        apply = [p for p in r["phases"] if p["phase"] == "apply"]
        cpu_d = sum(p["cpu_s"] for p in dedup)
        cpu_a = sum(p["cpu_s"] for p in apply)
        rss = max(p["max_task_rss"] for p in dedup + apply)
        growth = max(p["max_task_rss_growth"] for p in dedup + apply)
        per_doc = (cpu_d + cpu_a) / r["documents"] * 1e6
        per_tb = (cpu_d + cpu_a) / 3600 / (r["text_bytes"] / 1e12)
        s = r["scores"]
        summary.append({"scale": r["scale"], "documents": r["documents"],
                        "text_bytes": r["text_bytes"], "cpu_dedup_s": cpu_d, "cpu_apply_s": cpu_a,
                        "cpu_us_per_doc": per_doc, "core_hours_per_tb": per_tb,
                        "max_task_rss": rss, "max_task_rss_growth": growth, **s})
        lines.append(
            f"| {r['scale']}x | {r['documents']:,} | {r['text_bytes'] / 1e6:,.0f} | "
            f"{r['partitions']} | {cpu_d:,.0f} | {cpu_a:,.0f} | {per_doc:,.0f} | {per_tb:.1f} | "
            f"{rss / 2**20:,.0f} MiB (+{growth / 2**20:,.0f}) | "
            f"{s['recall_exact']:.4f} / {s['recall_near']:.4f} | "
            f"{s['false_removals']} ({s['false_removal_rate']:.3%}) | "
            f"{s['boilerplate_cut']:.4f} | {s['other_lines_cut']:.4%} |")
    lines += ["", "Per phase (CPU-s over tasks; wall s; largest task's peak RSS MiB; MB written):",
              "", "| phase | " + " | ".join(f"{r['scale']}x" for r in runs) + " |",
              "|---|" + "---:|" * len(runs)]
    keys: list[tuple[str, str]] = []
    for r in runs:
        for p in r["phases"]:
            if (p["step"], p["phase"]) not in keys:
                keys.append((p["step"], p["phase"]))
    for step, phase in keys:
        cells = []
        for r in runs:
            p = next((x for x in r["phases"] if (x["step"], x["phase"]) == (step, phase)), None)
            cells.append("" if p is None else
                         f"{p['cpu_s']:,.1f} / {p['wall_s']:,.0f} / "
                         f"{p['max_task_rss'] / 2**20:,.0f} / {p['bytes_written'] / 1e6:,.1f}"
                         + (f" ({p['rounds']} rounds)" if phase == "components" else ""))
        lines.append(f"| {step.replace('dedup_', '').replace('_v1', '')} {phase} | "
                     + " | ".join(cells) + " |")
    fit = _fit(summary)
    if fit:
        lines += ["", f"Least-squares fit over {len(summary)} scales, CPU-s = a + b x TB of text: "
                  f"b = {fit['core_hours_per_tb']:.1f} core-hours per TB (marginal), "
                  f"a = {fit['intercept_cpu_s']:.1f} CPU-s; largest task's peak RSS = "
                  f"{fit['rss_mib_at_1x']:.0f} MiB x scale^{fit['rss_exponent']:.3f} "
                  f"(64x: {fit['rss_mib_at_1x'] * 64 ** fit['rss_exponent']:.0f} MiB, "
                  f"3e9 documents: {fit['rss_mib_at_dump']:.0f} MiB at the same rows per "
                  "partition); one dump (12 TB): "
                  f"{fit['core_hours_per_tb'] * 12:,.0f} core-hours."]
    table = "\n".join(lines)
    with open(results_dir / "dedup_scale.json", "w", encoding="utf-8") as f:
        json.dump({"commit": _git_commit(), "fit": fit, "summary": summary, "runs": runs}, f,
                  indent=1)
    _plot(summary, results_dir / "dedup_scale.png")
    return table


def _fit(summary: list[dict[str, Any]]) -> dict[str, float] | None:
    """Fit total CPU against text bytes (linear) and peak RSS against scale (power law);
    extrapolate to one dump (3e9 documents, 12 TB). None with fewer than two scales."""
    import numpy as np

    if len(summary) < 2:
        return None
    tb = np.array([s["text_bytes"] / 1e12 for s in summary])
    cpu = np.array([s["cpu_dedup_s"] + s["cpu_apply_s"] for s in summary])
    b, a = np.polyfit(tb, cpu, 1)
    scale = np.array([s["scale"] for s in summary], dtype=float)
    rss = np.array([s["max_task_rss"] / 2**20 for s in summary])
    k, c = np.polyfit(np.log(scale), np.log(rss), 1)
    dump_scale = 3e9 / summary[0]["documents"] * summary[0]["scale"]
    return {"core_hours_per_tb": float(b / 3600), "intercept_cpu_s": float(a),
            "rss_exponent": float(k), "rss_mib_at_1x": float(np.exp(c)),
            "dump_scale": float(dump_scale),
            "rss_mib_at_dump": float(np.exp(c) * dump_scale ** k)}


def _plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s["scale"] for s in summary]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=90)
    a.plot(xs, [s["cpu_us_per_doc"] for s in summary], "o-")
    a.set(xscale="log", xlabel="corpus size (x webmix extracted text)", ylabel="CPU us / document",
          title="CPU per document", ylim=(0, None))
    b.plot(xs, [s["max_task_rss"] / 2**20 for s in summary], "o-", label="peak RSS")
    b.plot(xs, [s["max_task_rss_growth"] / 2**20 for s in summary], "s--",
           label="growth during task")
    b.set(xscale="log", xlabel="corpus size (x webmix extracted text)", ylabel="MiB",
          title="largest task's memory", ylim=(0, None))
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.set_xticks(xs, [f"{x}x" for x in xs])
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="*", default=[])
    ap.add_argument("--root", type=Path, default=Path("/tmp/dedup_scale"))
    ap.add_argument("--shards-per-x", type=int, default=2)
    ap.add_argument("--partitions-per-x", type=float, default=2.0)
    ap.add_argument("--exact-rate", type=float, default=0.04)
    ap.add_argument("--near-rate", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--executor", choices=["ray", "local"], default="ray")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--keep-output", action="store_true", help="keep each job's output folder")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pool = load_pool(a.root) if a.scales else None
    for scale in a.scales:
        t0 = time.perf_counter()
        truth = build_corpus(a.root, scale, pool, a.shards_per_x, a.seed, a.exact_rate,
                             a.near_rate)
        log.info("x%d: %d documents, %.1f MB in %d shards (built in %.0f s), near Jaccard %s",
                 scale, truth["documents"], truth["text_bytes"] / 1e6, truth["shards"],
                 time.perf_counter() - t0, truth.get("near_jaccard"))
        if a.build_only:
            continue
        result = run_scale(a.root, scale, truth, a.partitions_per_x, a.executor)
        result["commit"] = _git_commit()
        result["uncommitted"] = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "pipeline"],
            capture_output=True, text=True).stdout.split("\n")[:-1]
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(a.root / f"x{scale}" / "result.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        log.info("x%d done: %s", scale, json.dumps(result["scores"]))
        if not a.keep_output:
            shutil.rmtree(a.root / f"x{scale}" / "out", ignore_errors=True)
    if a.report:
        print(report(a.root, a.results))


if __name__ == "__main__":
    main()
