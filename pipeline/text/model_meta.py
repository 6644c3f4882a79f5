"""Model sidecars: ``MODEL.meta.json`` records the options and files that made a model.

Every model the training commands write (KenLM ARPA/binary, fastText ``.bin``, DSIR
``.npz``) gets a sidecar with its kind, format version, normalisation options, training
options and the training files with their sizes and SHA-256. Steps read the sidecar in
``setup`` and refuse a model whose kind, version or normalisation does not match their own
options, with a message that says what differs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_write_json
from pipeline.text.normalize import NormalizeOptions


class ModelMismatchError(ValueError):
    """A model file that cannot be used with the step's options (or is missing/corrupt)."""


def meta_path(model_path: str | os.PathLike) -> Path:
    """Return the sidecar path of ``model_path`` (``MODEL.meta.json`` beside it)."""
    p = Path(model_path)
    return p.with_name(p.name + ".meta.json")


def write_meta(model_path: str | os.PathLike, kind: str, format_version: int,
               normalization: NormalizeOptions | None, options: dict[str, Any],
               training_files: list[dict[str, Any]], report: dict[str, Any] | None = None) -> Path:
    """Write the sidecar of ``model_path`` and return its path."""
    meta = {
        "kind": kind,
        "format_version": format_version,
        "normalization": normalization.model_dump() if normalization is not None else None,
        "options": options,
        "training_files": training_files,
        "model_file": os.path.basename(model_path),
        "model_bytes": os.path.getsize(model_path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "report": report or {},
    }
    path = meta_path(model_path)
    atomic_write_json(meta, path, indent=1, sort_keys=True)
    return path


def read_meta(model_path: str | os.PathLike) -> dict[str, Any]:
    """Return the sidecar of ``model_path``; ModelMismatchError if it is missing or corrupt."""
    p = meta_path(model_path)
    if not Path(model_path).is_file():
        raise ModelMismatchError(f"model file {str(model_path)!r} does not exist")
    if not p.is_file():
        raise ModelMismatchError(
            f"model {str(model_path)!r} has no sidecar {p.name!r}: it was not written by the "
            "training command, so its normalisation is unknown (retrain it, or set "
            "require_meta: false to use it anyway)"
        )
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelMismatchError(f"sidecar {str(p)!r} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelMismatchError(f"sidecar {str(p)!r} is not a JSON object")
    return meta


def check_meta(model_path: str | os.PathLike, kind: str, format_version: int,
               normalization: NormalizeOptions | None, expect: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Check a model's sidecar against what a step expects; return the sidecar.

    Raises ModelMismatchError naming each difference: the kind, the format version, the
    normalisation options, any ``expect`` option, or a model file whose size changed since
    it was written (a truncated or replaced file).
    """
    meta = read_meta(model_path)
    problems = []
    if meta.get("kind") != kind:
        problems.append(f"kind is {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("format_version") != format_version:
        problems.append(
            f"format_version is {meta.get('format_version')!r}, this code reads {format_version}"
        )
    if normalization is not None:
        have = meta.get("normalization") or {}
        want = normalization.model_dump()
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            desc = ", ".join(f"{k}: model {a!r} vs step {b!r}" for k, (a, b) in diff.items())
            problems.append(f"normalisation differs ({desc})")
    for key, value in (expect or {}).items():
        have = (meta.get("options") or {}).get(key)
        if have != value:
            problems.append(f"option {key} is {have!r} in the model, {value!r} in the step")
    size = os.path.getsize(model_path)
    if meta.get("model_bytes") not in (None, size):
        problems.append(
            f"the model file has {size} bytes, the sidecar says {meta.get('model_bytes')} "
            "(truncated or replaced since training)"
        )
    if problems:
        raise ModelMismatchError(f"model {str(model_path)!r} refused: " + "; ".join(problems))
    return meta
