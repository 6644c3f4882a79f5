"""Fixtures shared by the step tests and the contract test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def url_domain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``cache_dir`` for ``url_filter_v1``: the first step that loads the 4.56M-domain
    list builds its hash array here (a few CPU seconds), every later one maps it."""
    return tmp_path_factory.mktemp("url_domain_cache")
