"""The document record that flows between pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """One document moving through a job.

    ``text`` holds the raw markup until the extraction step replaces it with plain text;
    ``media_type`` says which (``text/html`` before extraction, ``text/plain`` after, or
    whatever the source declared). ``metadata`` collects each step's fields; the writer
    turns the keys a step declares into Parquet columns.
    """

    id: str
    text: str
    url: str | None = None
    media_type: str = "text/plain"
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
