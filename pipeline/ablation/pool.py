"""The prepared folder's token pool: every arm's training documents, each stored once.

Arms are subsets of one raw pool, so their token streams overlap heavily: eight arms cut
at 8M tokens each would be about 128 MB of ids, but the distinct documents they use are far
fewer (11.1M tokens for webmix's eight arms). ``prepare`` therefore writes one stream of
distinct documents (``pool/``) and, per arm, the pool indices of its documents in stream
order (``selections/<arm>.npy``). The folder grows with the union of the arms' cuts, which
for arms that only drop documents is bounded by the raw arm; a step that rewrites text
(``c4_v1``, ``pii_v1``) adds its rewritten documents. ``ablate train`` rebuilds each arm's stream from them on the GPU
machine (:func:`materialize_arm`). Imports only numpy, pyarrow and the stream writer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.io.atomic import atomic_write_json

POOL_DIR = "pool"
SELECTIONS_DIR = "selections"


def stream_documents(src: Path, manifest: dict[str, Any] | None = None) -> Iterator[np.ndarray]:
    """Yield every document's ids (EOS included) of the token stream ``src``, in order."""
    if manifest is None:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        with pa.memory_map(str(src / entry["path"])) as mm:
            reader = pa.ipc.open_file(mm)
            for b in range(reader.num_record_batches):
                yield from reader.get_batch(b).column(0).to_numpy(zero_copy_only=False)


class TokenPool:
    """Distinct documents (by their ids) collected from several arms' streams."""

    def __init__(self) -> None:
        self.docs: list[np.ndarray] = []
        self._index: dict[bytes, int] = {}

    def add(self, ids: np.ndarray) -> int:
        """Return the pool index of the document ``ids`` (EOS included), adding it if new."""
        key = hashlib.blake2b(np.ascontiguousarray(ids).tobytes(), digest_size=16).digest()
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = len(self.docs)
            self.docs.append(ids)
        return idx

    def write(self, prepared: Path, like: dict[str, Any]) -> dict[str, Any]:
        """Write the pool stream into ``prepared/pool`` with the dtype, EOS and tokenizer of
        the manifest ``like``; return the pool's manifest."""
        from tokenizer.token_stream import write_manifest, write_token_stream

        dest = prepared / POOL_DIR
        if dest.exists():
            shutil.rmtree(dest)
        part = write_token_stream((d[:-1] for d in self.docs), dest, "part-00000.arrow",
                                  like["dtype"], like["eos_id"])  # the writer adds EOS
        return write_manifest(dest, [part], like["dtype"], like["eos_id"], like["vocab_size"],
                              like["tokenizer_hash"])


def write_selection(prepared: Path, arm: str, indices: list[int]) -> None:
    """Record arm ``arm``'s documents as pool indices, in stream order."""
    (prepared / SELECTIONS_DIR).mkdir(parents=True, exist_ok=True)
    np.save(prepared / SELECTIONS_DIR / f"{arm}.npy", np.asarray(indices, dtype=np.int64))


def materialize_arm(prepared: Path, arm: str, dest: Path) -> dict[str, Any]:
    """Write arm ``arm``'s token stream into ``dest`` from the pool and its selection (kept
    if ``dest`` already holds it); return its manifest."""
    from tokenizer.token_stream import write_manifest, write_token_stream

    pool_dir = prepared / POOL_DIR
    pool_manifest = json.loads((pool_dir / "manifest.json").read_text(encoding="utf-8"))
    selection = np.load(prepared / SELECTIONS_DIR / f"{arm}.npy")
    stamp = hashlib.sha256(selection.tobytes() + json.dumps(
        pool_manifest, sort_keys=True).encode()).hexdigest()[:16]
    done = dest / "manifest.json"
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")).get("selection") == stamp:
        return json.loads(done.read_text(encoding="utf-8"))
    docs = list(stream_documents(pool_dir, pool_manifest))
    if dest.exists():
        shutil.rmtree(dest)
    part = write_token_stream((docs[i][:-1] for i in selection), dest, "part-00000.arrow",
                              pool_manifest["dtype"], pool_manifest["eos_id"])
    manifest = write_manifest(dest, [part], pool_manifest["dtype"], pool_manifest["eos_id"],
                              pool_manifest["vocab_size"], pool_manifest["tokenizer_hash"])
    manifest["selection"] = stamp
    atomic_write_json(manifest, done, indent=1, sort_keys=False)
    return manifest
