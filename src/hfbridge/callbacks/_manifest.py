"""The checkpoint manifest: which checkpoints are complete, their metrics, and the best-K / last-N choice.

The manifest is one JSON file replaced atomically. Every checkpoint folder also carries its own marker
(``checkpoint.json``) with the same record, written before the folder is renamed into place, so a folder published
just before a crash (manifest not yet updated) can be recognised as complete and adopted again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "MARKER_NAME",
    "decode_float",
    "encode_float",
    "entry_is_complete",
    "rank_best",
    "read_json",
    "select_kept",
]

FORMAT = "hfbridge-checkpoint"
MANIFEST_NAME = "manifest.json"
MARKER_NAME = "checkpoint.json"


def encode_float(x: float | None) -> float | str | None:
    """JSON-safe float: non-finite values become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_float(x: Any) -> float | None:
    """Inverse of :func:`encode_float`."""
    return None if x is None else float(x)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def entry_is_complete(folder: Path, entry: dict[str, Any]) -> str | None:
    """``None`` when every file the entry lists exists in ``folder`` with its recorded size, else the reason."""
    if not folder.is_dir():
        return f"folder {str(folder)!r} is missing"
    for name, size in entry.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"file {name!r} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"file {name!r} has {actual} bytes, the manifest recorded {size}"
    return None


def _score(entry: dict[str, Any]) -> float | None:
    return decode_float(entry.get("score"))


def rank_best(entries: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Entries that carry a monitored score, best first.

    NaN ranks below every number (it is never "best"); on a tie the earlier checkpoint ranks first, so a later
    checkpoint must strictly improve to displace it.
    """
    scored = [e for e in entries if _score(e) is not None]

    def key(e: dict[str, Any]) -> tuple[int, float, int]:
        s = float(e["score"])  # not None: filtered above
        if math.isnan(s):
            return (1, 0.0, e["seq"])
        return (0, s if mode == "min" else -s, e["seq"])

    return sorted(scored, key=key)


def select_kept(
    entries: list[dict[str, Any]], *, mode: str, keep_best: int, keep_last: int | None
) -> tuple[list[str], list[str]]:
    """Names of the best ``keep_best`` (best first) and the newest ``keep_last`` (newest first) entries."""
    best = [e["name"] for e in rank_best(entries, mode)[:keep_best]]
    newest = sorted(entries, key=lambda e: e["seq"], reverse=True)
    last = [e["name"] for e in (newest if keep_last is None else newest[:keep_last])]
    return best, last
