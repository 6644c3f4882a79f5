"""Heuristic document filters as plain functions of text, shared by the pipeline steps.

``gopher_quality(text)``, ``gopher_repetition(text)`` and ``c4_quality(text)`` return True
when a document is kept under the published default thresholds; the ``*_reason``
functions and the rule classes give the reason and accept other thresholds.
"""

from pipeline.text.heuristics.c4 import C4Options, C4Result, C4Rules, c4_clean, c4_quality
from pipeline.text.heuristics.gopher_quality import (
    STOP_WORDS,
    GopherQuality,
    GopherQualityOptions,
    gopher_quality,
    gopher_quality_reason,
)
from pipeline.text.heuristics.gopher_repetition import (
    GopherRepetition,
    GopherRepetitionOptions,
    gopher_repetition,
    gopher_repetition_reason,
)

__all__ = [
    "STOP_WORDS",
    "C4Options",
    "C4Result",
    "C4Rules",
    "GopherQuality",
    "GopherQualityOptions",
    "GopherRepetition",
    "GopherRepetitionOptions",
    "c4_clean",
    "c4_quality",
    "gopher_quality",
    "gopher_quality_reason",
    "gopher_repetition",
    "gopher_repetition_reason",
]
