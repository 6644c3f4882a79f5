"""LSH bands and rows follow the Jaccard threshold unless given."""

from __future__ import annotations

import pytest

from pipeline.core.config import JobConfigError, parse_steps
from pipeline.dedup.minhash import lsh_params, s_curve


def test_defaults_are_the_chosen_pair_for_threshold_point_eight() -> None:
    assert lsh_params(0.8, 120) == (20, 6)
    (step,) = parse_steps(["dedup_minhash_v1"])
    assert (step.options.bands, step.options.rows) == (20, 6)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_chosen_pair_meets_the_recall_target_with_least_work(threshold: float) -> None:
    bands, rows = lsh_params(threshold, 120)
    assert bands * rows <= 120
    assert s_curve(threshold, bands, rows) >= 0.997
    # every other pair that meets the target lets through more pairs below the threshold
    import numpy as np

    grid = np.linspace(0, threshold, 801)
    chosen = np.trapezoid(s_curve(grid, bands, rows), grid)
    for r in range(1, 13):
        for b in range(1, 120 // r + 1):
            if s_curve(threshold, b, r) >= 0.997:
                assert np.trapezoid(s_curve(grid, b, r), grid) >= chosen - 1e-12


def test_threshold_moves_the_bands_and_explicit_pairs_are_kept() -> None:
    (step,) = parse_steps([{"dedup_minhash_v1": {"threshold": 0.6}}])
    assert (step.options.bands, step.options.rows) == lsh_params(0.6, 120)
    assert (step.options.bands, step.options.rows) != (20, 6)
    (step,) = parse_steps([{"dedup_minhash_v1": {"bands": 10, "rows": 5}}])
    assert (step.options.bands, step.options.rows) == (10, 5)
    with pytest.raises(JobConfigError, match="both bands and rows"):
        parse_steps([{"dedup_minhash_v1": {"bands": 10}}])


def test_unreachable_target_is_refused() -> None:
    with pytest.raises(ValueError, match="raise num_perm"):
        lsh_params(0.3, 2, 0.999)
