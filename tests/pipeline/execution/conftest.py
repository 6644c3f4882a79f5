"""Fixtures of the execution tests: a small real crawl job's output, a headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc(pid: int) -> tuple[str, int, list[str]] | None:
    """``(name, parent pid, command line)`` of a live process from /proc, None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
    return name, int(rest.split()[1]), cmdline


def _processes() -> dict[int, tuple[str, int, list[str]]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _proc(int(entry))) is not None:
            found[int(entry)] = info
    return found


def _alive(pid: int) -> bool:
    info = _proc(pid)
    if info is None:
        return False
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


#: ``ray start`` gives up when a node has not registered within 30 s (not configurable),
#: which happens on an overloaded machine: a node that fails to start is stopped and tried
#: again, this many times in all
START_ATTEMPTS = 3

#: run by :meth:`RayTestCluster.run_job` in its own process: argv[1] is JSON
#: ``[job, output, address, hold points, signal dir]``
_DRIVER = """
import json, sys
from pipeline.execution import faults
from pipeline.execution.runner import run_job
job, output, address, holds, signal_dir = json.loads(sys.argv[1])
with faults.hold_once([tuple(h) for h in holds], signal_dir):
    run_job(job, output=output, address=address)
"""


class RayTestCluster:
    """A multi-node Ray cluster on this machine, all under ``root`` (never anyone else's).

    :meth:`start` starts a head that only schedules (``--num-cpus 0``: no task ever runs
    there, so killing a task's node never kills the head) and ``workers`` nodes of one CPU
    each, every node with its own ``--temp-dir`` and free ports. Its processes get a private
    token (``RAY_AUTH_TOKEN``), so ``~/.ray/auth_token`` is neither read nor written.
    Processes are found through /proc (Linux).
    """

    def __init__(self, root: Path, workers: int = 2, object_store: int = 80 * 2**20) -> None:
        import secrets
        import sys

        self.root, self.workers, self.object_store = root, workers, object_store
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        RAY_USAGE_STATS_ENABLED="0")
        # the GCS declares a node dead after 2 failed health checks 1 s apart, unless the
        # environment says otherwise (Ray's default: 5, 3 s apart)
        for key, value in (("RAY_health_check_period_ms", "1000"),
                           ("RAY_health_check_failure_threshold", "2"),
                           ("RAY_health_check_initial_delay_ms", "1000")):
            self.env.setdefault(key, value)
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, Path] = {}  # worker name -> its current temp dir
        self._starts = 0

    def start(self) -> None:
        """Start the head, then the worker nodes (at the same time)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            head = self.root / f"head-{attempt}"
            try:
                self._wait(self._ray_start(head, "--head", f"--port={self.port}",
                                           "--num-cpus=0", "--include-dashboard=false",
                                           f"--dashboard-port={_free_port()}"))
                break
            except RuntimeError:
                _terminate(self._pids(head))
                if attempt == START_ATTEMPTS:
                    raise
                self.port = _free_port()
                self.address = f"127.0.0.1:{self.port}"
        starting = [(f"w{i + 1}", self._start_worker(f"w{i + 1}")) for i in range(self.workers)]
        for name, proc in starting:
            self._wait_worker(name, proc)

    def _ray_start(self, temp: Path, *args: str) -> subprocess.Popen:
        temp.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([self.ray, "start", *args, f"--temp-dir={temp}",
                                 f"--object-store-memory={self.object_store}",
                                 f"--dashboard-agent-listen-port={_free_port()}",
                                 "--disable-usage-stats"],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @staticmethod
    def _wait(proc: subprocess.Popen) -> None:
        output, _ = proc.communicate(timeout=180)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(proc.args[:3])} failed: {output.decode()[-2000:]}")

    def _start_worker(self, name: str) -> subprocess.Popen:
        self._starts += 1
        temp = self.root / f"{name}-{self._starts}"
        self.nodes[name] = temp
        return self._ray_start(temp, f"--address={self.address}", "--num-cpus=1")

    def _wait_worker(self, name: str, proc: subprocess.Popen) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._wait(proc)
                return
            except RuntimeError:
                _terminate(self._pids(self.nodes[name]))
                if attempt == START_ATTEMPTS:
                    raise
                proc = self._start_worker(name)

    def start_worker(self, name: str) -> None:
        """Start (or restart, in a fresh temp dir) the one-CPU worker node ``name``."""
        self._wait_worker(name, self._start_worker(name))

    def _pids(self, under: Path) -> list[int]:
        """Processes whose command line names a path in ``under``, and all their children."""
        procs = _processes()
        mark = str(under)
        found = {pid for pid, (_, _, cmd) in procs.items()
                 if any(a == mark or mark + os.sep in a for a in cmd)}
        grown = True
        while grown:
            more = {pid for pid, (_, ppid, _) in procs.items() if ppid in found} - found
            found |= more
            grown = bool(more)
        return sorted(found)

    def raylet(self, name: str) -> int:
        """The pid of worker node ``name``'s raylet."""
        temp = self.nodes[name]
        for pid in self._pids(temp):
            info = _proc(pid)
            if info and info[0] == "raylet" and any(str(temp) + os.sep in a for a in info[2]):
                return pid
        raise LookupError(f"no raylet of node {name} ({temp}) is running")

    def node_of(self, pid: int) -> str:
        """Return the worker node whose raylet started process ``pid`` (a task's worker)."""
        info = _proc(pid)
        while info is not None and info[1] > 1:
            parent = _proc(info[1])
            if parent and parent[0] == "raylet":
                for name, temp in self.nodes.items():
                    if any(str(temp) + os.sep in a for a in parent[2]):
                        return name
            info = parent
        raise LookupError(f"process {pid} runs on no worker node of {self.root}")

    def kill_raylet(self, name: str) -> int:
        """SIGKILL worker node ``name``'s raylet (as a lost machine would); return its pid.

        The node's other processes (its workers, agents, log monitor) are left to notice on
        their own, as on a real node; :meth:`stop` removes what remains.
        """
        import signal
        import time

        pid = self.raylet(name)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid

    def run_job(self, job: dict, output: Path, holds: Sequence[tuple[str, int]] = (),
                signal_dir: Path | None = None) -> subprocess.Popen:
        """Start ``run_job(job)`` on this cluster in a driver process of its own (output and
        errors in ``<output>.log``), holding the first task at each of ``holds`` (see
        :func:`pipeline.execution.faults.hold_once`)."""
        import json
        import sys

        arg = json.dumps([job, str(output), self.address, [list(h) for h in holds],
                          str(signal_dir or "")])
        with open(output.with_suffix(".log"), "w") as log:
            return subprocess.Popen([sys.executable, "-c", _DRIVER, arg], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """Terminate every process of this cluster, by pid (``ray stop`` would stop every
        Ray cluster on the machine, other people's included)."""
        _terminate(self._pids(self.root))


def _terminate(pids: list[int]) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after 5 s."""
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while (pids := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids:
            return


@pytest.fixture(scope="module")
def ray_cluster():
    """A started :class:`RayTestCluster` (a head and two one-CPU worker nodes), stopped
    afterwards. Its temp dirs live in a short ``/tmp/rtc-*`` folder: Ray's socket paths
    must stay under 107 bytes, and pytest's temp folders are deeper."""
    import tempfile

    pytest.importorskip("ray")
    root = Path(tempfile.mkdtemp(prefix="rtc-", dir="/tmp"))
    cluster = RayTestCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
