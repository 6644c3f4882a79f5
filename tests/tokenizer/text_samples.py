"""Sample texts for the encoder tests: real Wikipedia and Tatoeba text, code, emoji, specials.

Each sample is built on demand from the shared data folder (the `shared_data` fixture).
"""

from __future__ import annotations

import gzip
import inspect
import json
import json.decoder
from collections.abc import Callable
from pathlib import Path

EOT = "<|endoftext|>"


def tatoeba(shared: Path, codes: set[str]) -> str:
    """Tatoeba sentences whose CLD2 code is in `codes`, newline-joined."""
    lines = (shared / "langid" / "tatoeba_long_cld2.tsv").read_text(encoding="utf-8").splitlines()
    return "\n".join(line.split("\t")[3] for line in lines[1:] if line.split("\t")[0] in codes)


def wiki(shared: Path, n: int) -> str:
    """The first `n` held-out Wikipedia articles, EOT-joined."""
    texts = []
    with gzip.open(shared / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return EOT.join(texts)


_SAMPLES: dict[str, Callable[[Path], str]] = {
    "english": lambda shared: wiki(shared, 12),
    "german": lambda shared: tatoeba(shared, {"de"}) + "\nGrüße aus München, Straße, Öl, Äpfel.",
    "chinese": lambda shared: tatoeba(shared, {"zh", "zh-Hant", "ja"}),
    "many_scripts": lambda shared: tatoeba(
        shared, {"ru", "ar", "th", "hi", "ko", "el", "he", "ta", "am"}
    ),
    "code": lambda shared: inspect.getsource(json.decoder),
    "emoji": lambda shared: "Emoji 🤗👍🏽🇩🇪 family 👨‍👩‍👧‍👦, flags 🏳️‍🌈 and ✔︎ ❤️ done 🙂",
    "whitespace": lambda shared: "a  \n\n  b\t\t\n \r\n x   " + EOT + "  \n" + EOT + EOT + "  ",
    "specials": lambda shared: f"{EOT}start{EOT}middle {EOT} end{EOT}",
}
SAMPLE_NAMES: list[str] = sorted(_SAMPLES)


def sample(shared: Path, name: str) -> str:
    """The sample text `name` (one of SAMPLE_NAMES), read from the shared data folder `shared`."""
    return _SAMPLES[name](shared)
