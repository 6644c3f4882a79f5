"""Both native extensions are built and used, unless REFINERY_ALLOW_PURE_PYTHON=1.

``setup.py`` marks ``tokenizer/_bpe.c`` and ``tokenizer/_encode.c`` optional so that users
without a compiler can install; the suite, though, fails when they are missing (the
``native`` marker, tests/conftest.py), so a machine whose build failed does not pass it
silently on the slower fallbacks.
"""

from __future__ import annotations

import pytest

from tokenizer import merges, native


@pytest.mark.native("_bpe", "_encode")
def test_native_extensions_are_built_and_detected() -> None:
    # what the code checks before taking the native path, not just that the files import
    assert merges.native_available(), "tokenizer.merges does not see tokenizer._bpe"
    assert native._encode is not None, "tokenizer.native does not see tokenizer._encode"
    assert native.native_encoder({b"a": 0}, native.GPT2_PATTERN) is not None
