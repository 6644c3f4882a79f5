"""Connected components over duplicate edges (union-find, vectorised with numpy).

Edges only ever point at documents that have a duplicate, so the node set is the
endpoints of the edges, not the corpus. Components are found by min-label hooking with
pointer jumping (a Shiloach-Vishkin style union-find done as whole-array operations):
each round hooks the larger root of every edge under the smaller one and then compresses
paths, until every edge has both ends under one root. The root of a component is its
smallest node, which is how the survivor of a duplicate cluster is chosen deterministically.

This in-memory version holds every edge (about 128 bytes per edge at its peak). The
in-memory API (:func:`pipeline.dedup.minhash.minhash_clusters`) uses it; the
``dedup_minhash_v1`` job uses the distributed star rounds of
:mod:`pipeline.dedup.phases.components`, which find the same roots and sizes and are tested
against :func:`components_of_refs`.
"""

from __future__ import annotations

import numpy as np


def component_roots(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Return, for nodes ``0..n-1`` joined by edges ``(u[i], v[i])``, the smallest node of
    each node's component."""
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    if len(u) == 0:
        return parent
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            return parent
        lo = np.minimum(pu[differ], pv[differ])
        hi = np.maximum(pu[differ], pv[differ])
        # hook: every root that is the larger end of an edge points at the smallest partner
        np.minimum.at(parent, hi, lo)
        # pointer jumping until every node points at a root
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def connected_components(u: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (root, component size) per node ``0..n-1``; root = smallest node of the component."""
    root = component_roots(u, v, n)
    size = np.bincount(root, minlength=n)[root]
    return root, size


def components_of_refs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components of edges between arbitrary int64 refs.

    Returns ``(refs, root_refs, sizes)`` for every ref that appears in an edge; the root of
    a component is its smallest ref.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    refs, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    m = len(a)
    root, size = connected_components(inverse[:m], inverse[m:], len(refs))
    return refs, refs[root], size
