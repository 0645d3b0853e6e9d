"""Features of an index: one block per model channel, each normalised by its RMS norm, weighted and
concatenated (:func:`combine`); :data:`CHANNELS` are the channels an index can search."""
from __future__ import annotations

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..errors import IndexConfigError

CHANNELS = ("ct", "dose", "ct+dose", "geometry", "ct+geometry")
"""Index channels: one model's features, or the CT model's combined with the dose or the geometry model's."""
BLOCK_ORDER = ("ct", "dose", "geometry")
"""Model channels in the order their blocks are concatenated."""


def channel_blocks(channel: str) -> list[str]:
    """The model channels an index channel combines: ``"ct+dose"`` -> ``["ct", "dose"]``,
    ``"ct+geometry"`` -> ``["ct", "geometry"]``."""
    if channel not in CHANNELS:
        raise IndexConfigError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}", param="channel")
    return channel.split("+")


def block_scale(features: np.ndarray) -> float:
    """RMS of the row norms of a feature block (finite rows only): dividing by it gives mean
    squared norm 1, so blocks of different models weigh the same before the user's weights.

    Parameters
    ----------
    features : (n, d) float features, NaN rows where the channel is missing.
    """
    ok = np.isfinite(features).all(axis=1)
    if not ok.any():
        raise IndexConfigError("no finite feature rows to scale")
    f = features[ok].astype(np.float64)
    scale = float(np.sqrt(np.mean(np.sum(f * f, axis=1))))
    return scale if scale > 0 else 1.0


def combine(blocks: dict[str, np.ndarray], scales: dict[str, float], weights: dict[str, float]) -> np.ndarray:
    """Concatenate feature blocks, each divided by its scale and multiplied by its weight.

    Parameters
    ----------
    blocks : channel -> (n, d_c) float32 features (NaN rows where the channel is missing).
    scales, weights : channel -> float.

    Returns
    -------
    (n, sum d_c) float32; a row is NaN where any block is.
    """
    parts = [blocks[c].astype(np.float32) * np.float32(weights[c] / scales[c]) for c in sorted(blocks, key=_order)]
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _order(channel: str) -> int:
    return BLOCK_ORDER.index(channel)


def archive_combined_features(archive, manifest: dict, rows: np.ndarray | None = None,
                              progress: bool = False) -> np.ndarray:
    """(len(rows), D) float32 combined features of archive rows (all rows by default) for an index's manifest."""
    blocks = {}
    for ch, m in manifest["models"].items():
        f = features.archive_features(archive, m["name"], progress=progress)
        blocks[ch] = np.asarray(f if rows is None else f[rows])
    return combine(blocks, manifest["scales"], manifest["weights"])
