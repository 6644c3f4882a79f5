"""Deduplication: exact documents, CCNet-style lines and MinHash-LSH near duplicates.

The in-memory API works on lists of texts; the ``dedup_*_v1`` steps run the same
algorithms across every shard of a job as resumable phases fanned out through the job's
executor (see :mod:`pipeline.dedup.phases`).
"""

from pipeline.dedup.components import component_roots, components_of_refs, connected_components
from pipeline.dedup.exact import exact_keep_mask
from pipeline.dedup.lines import exact_line_dedup, frequent_line_hashes, remove_lines
from pipeline.dedup.minhash import (
    DEFAULT_BANDS,
    DEFAULT_NGRAM,
    DEFAULT_NUM_PERM,
    DEFAULT_ROWS,
    DEFAULT_THRESHOLD,
    MinHasher,
    band_keys,
    candidate_pairs,
    estimated_jaccard,
    minhash_clusters,
    minhash_keep_mask,
    s_curve,
    s_curve_midpoint,
)
from pipeline.dedup.text import (
    ShingleHasher,
    document_key,
    jaccard,
    normalize_document,
    normalize_line,
)

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_NGRAM",
    "DEFAULT_NUM_PERM",
    "DEFAULT_ROWS",
    "DEFAULT_THRESHOLD",
    "MinHasher",
    "ShingleHasher",
    "band_keys",
    "candidate_pairs",
    "component_roots",
    "components_of_refs",
    "connected_components",
    "document_key",
    "estimated_jaccard",
    "exact_keep_mask",
    "exact_line_dedup",
    "frequent_line_hashes",
    "jaccard",
    "minhash_clusters",
    "minhash_keep_mask",
    "normalize_document",
    "normalize_line",
    "remove_lines",
    "s_curve",
    "s_curve_midpoint",
]
