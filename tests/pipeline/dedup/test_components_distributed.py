"""Distributed connected components (star rounds over edge partitions) against the in-memory
union-find: same components, same root (smallest ref) and size for every ref, on seeded
random graphs of every awkward shape, with several partition counts, and inside the MinHash
job on the webmix crawl. Everything runs under :class:`LocalExecutor`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard
from pipeline.dedup.components import components_of_refs
from pipeline.dedup.phases.components import run_components, star_round
from pipeline.dedup.phases.minhash import MinHashConfig, prepare_minhash
from pipeline.dedup.phases.shuffle import SHIFT, concat, read_decisions, read_routed
from pipeline.dedup.phases.store import list_phase_files, marker_path, read_table, write_table
from pipeline.execution import faults
from pipeline.execution.executor import LocalExecutor, TaskFailures

N_SHARDS = 97  # the random graphs' refs spread over this many shards, routed to one group


def _refs(nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dense node numbers to document refs (shard << 32 | position), order-scrambled."""
    perm = rng.permutation(int(nodes.max()) + 1 if len(nodes) else 0)
    return ((perm[nodes] % N_SHARDS) << SHIFT) | (perm[nodes] // N_SHARDS)


def _graph(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded edges ``(a, b)`` of one shape, as refs; duplicate and reversed edges included."""
    rng = np.random.default_rng(seed)
    if kind == "chain":  # the worst case for star rounds: diameter n
        n = 3000
        order = rng.permutation(n)
        a, b = order[:-1], order[1:]
    elif kind == "sorted_chain":  # the chain whose node order follows the path
        a, b = np.arange(2999), np.arange(1, 3000)
    elif kind == "big_star":  # one document duplicated many times, centre neither min nor max
        n = 5000
        a, b = np.full(n - 1, n // 2), np.delete(np.arange(n), n // 2)
    elif kind == "small_components":  # many pairs and triangles
        n = 6000
        a = rng.integers(0, n, 4000)
        b = a ^ rng.integers(1, 4, 4000)
        b = np.minimum(b, n - 1)
    elif kind == "giant":  # one giant component (random graph above its threshold) plus dust
        n = 4000
        a, b = rng.integers(0, n, 8000), rng.integers(0, n, 8000)
        a = np.concatenate([a, np.arange(n, n + 500, 2)])
        b = np.concatenate([b, np.arange(n + 1, n + 501, 2)])
    elif kind == "mixed":  # LSH-like: stars from bucket heads over clusters of Zipf sizes
        sizes = np.minimum(rng.zipf(1.6, 800), 400)
        a_parts, b_parts, start = [], [], 0
        for s in sizes:
            members = np.arange(start, start + s)
            for _ in range(3):  # three bands, each a star from a random member
                head = rng.choice(members)
                a_parts.append(np.full(s, head))
                b_parts.append(members)
            start += s
        a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    else:
        raise ValueError(kind)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    flip = rng.random(len(a)) < 0.3  # edges arrive in either direction, some twice
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    again = rng.random(len(a)) < 0.1
    a, b = np.concatenate([a, b[again]]), np.concatenate([b, a[again]])
    refs = _refs(np.concatenate([a, b]), rng)
    return refs[: len(a)], refs[len(a):]


def _distributed(tmp: Path, a: np.ndarray, b: np.ndarray, partitions: int,
                 n_inputs: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Run the rounds on ``(a, b)`` split over ``n_inputs`` files; rows sorted by ref + stats."""
    inputs = []
    for i, idx in enumerate(np.array_split(np.arange(len(a)), n_inputs)):
        path = tmp / "in" / f"e{i}.parquet"
        write_table(path, {"a": a[idx], "b": b[idx]})
        inputs.append(path)
    work = str(tmp / "work")
    summary = run_components(work, inputs, partitions, N_SHARDS, 1, LocalExecutor())
    tables = [read_routed(work, "components", p, 0) for p in range(partitions)]
    ref, cluster, size = (concat(tables, k, np.int64) for k in ("ref", "cluster", "size"))
    order = np.argsort(ref)
    stats = json.loads((Path(work) / "components.json").read_text())
    assert {k: stats[k] for k in summary} == summary
    return ref[order], cluster[order], size[order], stats


@pytest.mark.parametrize(("kind", "partitions"), [
    ("chain", 1), ("chain", 4), ("sorted_chain", 3), ("big_star", 5), ("small_components", 7),
    ("giant", 2), ("giant", 6), ("mixed", 3),
])
def test_star_rounds_equal_the_in_memory_union_find(tmp_path, kind, partitions) -> None:
    a, b = _graph(kind, seed=len(kind) * 31 + partitions)
    ref, cluster, size, stats = _distributed(tmp_path, a, b, partitions)
    want_ref, want_root, want_size = components_of_refs(a, b)
    np.testing.assert_array_equal(ref, want_ref)
    np.testing.assert_array_equal(cluster, want_root)  # the root is the smallest ref
    np.testing.assert_array_equal(size, want_size)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    assert stats["edges"] == len({(int(x), int(y)) for x, y in zip(lo, hi, strict=True)})
    assert stats["removed"] == int((want_ref != want_root).sum())
    assert stats["clusters"] == len(np.unique(want_root))
    # every round is logged with its edges, its unsettled count and its largest task
    rounds = stats["per_round"]
    assert [r["round"] for r in rounds] == list(range(stats["rounds"] + 1))
    assert rounds[-1]["unsettled"] == 0 and all(r["unsettled"] > 0 for r in rounds[1:-1])
    assert all(r["max_peak_bytes"] > 0 for r in rounds[1:])


def test_rounds_grow_logarithmically_on_chains(tmp_path) -> None:
    """A path of n nodes (the graph with the largest diameter) takes O(log n) rounds."""
    rounds = {}
    for n in (64, 1024, 8192):
        rng = np.random.default_rng(n)
        order = rng.permutation(n).astype(np.int64)
        ref, cluster, size, stats = _distributed(tmp_path / str(n), order[:-1], order[1:], 2)
        assert (cluster == order.min()).all() and (size == n).all() and len(ref) == n
        rounds[n] = stats["rounds"]
        assert rounds[n] <= 2 * math.log2(n) + 3, rounds
    # 128 times longer costs a bounded number of extra rounds, not 128 times more
    assert rounds[8192] - rounds[64] <= 2 * 7 + 3, rounds


def test_no_task_holds_more_than_its_share_of_the_edges(tmp_path) -> None:
    """With many small components every task holds about 2E/P directed rows, never all E."""
    a, b = _graph("small_components", seed=5)
    partitions = 8
    _, _, _, stats = _distributed(tmp_path, a, b, partitions)
    directed = 2 * stats["edges"]
    for r in stats["per_round"][1:]:
        assert r["max_rows_in"] <= 1.5 * directed / partitions, r


def test_star_operations_on_a_settled_graph_change_nothing() -> None:
    # stars around 1 and 10; rows of one partition holding every node (both directions)
    edges = np.array([[1, 4], [1, 7], [10, 12]])
    rows = np.concatenate([edges, edges[:, ::-1]])
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    for large in (True, False):
        out, unsettled = star_round(rows, large)
        assert unsettled == 0
        assert {tuple(e) for e in out.tolist()} == {tuple(e) for e in edges.tolist()}
    # a path 1-4-7: node 4 has a smaller neighbour and two neighbours: unsettled
    path = np.array([[1, 4], [4, 1], [4, 7], [7, 4]])
    assert star_round(path, True)[1] == 1


def test_rounds_resume_after_a_crash_in_any_phase(tmp_path) -> None:
    a, b = _graph("giant", seed=3)
    clean = _distributed(tmp_path / "clean", a, b, 3)
    inputs = []
    for i, idx in enumerate(np.array_split(np.arange(len(a)), 2)):
        path = tmp_path / "in" / f"e{i}.parquet"
        write_table(path, {"a": a[idx], "b": b[idx]})
        inputs.append(path)
    work = str(tmp_path / "crashed")
    for point in (("cc_r000", 1), ("cc_r001", 2), ("cc_r003", 0), ("components", 1)):
        with faults.inject_failures([point]), pytest.raises(TaskFailures) as err:
            run_components(work, inputs, 3, N_SHARDS, 1, LocalExecutor())
        assert isinstance(err.value.__cause__, faults.InjectedFailure)
        assert [o.name for o in err.value.failures] == [f"{point[0]}/{'ip'[point[0] != 'cc_r000']}"
                                                        f"{point[1]:05d}"]
        assert not marker_path(work, point[0], err.value.failures[0].name.split("/")[1]).exists()
    run_components(work, inputs, 3, N_SHARDS, 1, LocalExecutor())
    tables = [read_routed(work, "components", p, 0) for p in range(3)]
    ref = concat(tables, "ref", np.int64)
    order = np.argsort(ref)
    np.testing.assert_array_equal(ref[order], clean[0])
    np.testing.assert_array_equal(concat(tables, "cluster", np.int64)[order], clean[1])
    np.testing.assert_array_equal(concat(tables, "size", np.int64)[order], clean[2])


@pytest.fixture(scope="module")
def webmix_stage(shared_data, tmp_path_factory) -> list[StageShard]:
    """The webmix crawl's response payloads (decoded, the first 8,000 characters: enough
    for its planted near duplicates, a quarter of the hashing), one shard per WARC file."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    from pipeline.io.writer import write_documents_parquet

    root = tmp_path_factory.mktemp("webmix-stage")
    stage = []
    for path in sorted((shared_data / "webmix").glob("webmix-*.warc.gz")):
        docs = []
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                body = rec.reader.read()
                docs.append(Document(id=rec.headers["WARC-Record-ID"],
                                     text=bytes_to_str(body, detect_encoding(body))[:8000]))
        out = root / f"{path.name.split('.')[0]}.parquet"
        write_documents_parquet(docs, out, {})
        stage.append(StageShard(path.name.split(".")[0], (str(out),)))
    return stage


def test_minhash_on_webmix_keeps_the_union_find_clusters(webmix_stage, tmp_path) -> None:
    """The MinHash job's decisions on webmix are those of the union-find over its own edges."""
    work = str(tmp_path)
    config = MinHashConfig(threshold=0.7, partitions=5, verify="signature")
    summary = prepare_minhash(webmix_stage, work, config, LocalExecutor())
    assert summary["removed"] > 100  # webmix plants near duplicates
    edges = [read_table(f) for f in list_phase_files(work, "verify2")]
    refs, roots, sizes = components_of_refs(concat(edges, "a", np.int64),
                                            concat(edges, "b", np.int64))
    got = [read_decisions(work, s) for s in range(len(webmix_stage))]
    np.testing.assert_array_equal(concat(got, "ref", np.int64), refs)
    np.testing.assert_array_equal(concat(got, "cluster", np.int64), roots)
    np.testing.assert_array_equal(concat(got, "size", np.int64), sizes)
    assert summary["removed"] == int((refs != roots).sum())
