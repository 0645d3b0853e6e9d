"""What an evaluation runs on: the feature vectors of one channel, the candidates and the queries.

The features are those an index hashes (:func:`medhash.retrieval.combine`): one trained model per block
(CT, dose), each block divided by its RMS row norm and weighted. They come either from a named
index's manifest (the same models, scales and weights; then the index's own fitted hasher comes
with them) or, for a channel, from the newest trained
model(s) of that channel with weights 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..errors import InputError, NotFoundError
from ..hashing import Hasher
from ..retrieval import CHANNELS, Index, block_scale, channel_blocks, combine, pick_model


@dataclass
class FeatureSet:
    """Combined features of every archive row for one channel.

    Attributes
    ----------
    channel : ``"ct"``, ``"dose"`` or ``"ct+dose"``.
    X : (n_rows, D) float32 combined features; NaN rows where a block is missing (no dose).
    models : block channel -> model config (name, sha256, arch, latent_dim, ...).
    scales, weights : block channel -> float (see :func:`medhash.retrieval.combine`).
    index : the index whose manifest defined them, or None.
    index_bits : that index's code length, or None.
    hasher : that index's fitted hasher (what the index's codes were made with), or None.
    """
    channel: str
    X: np.ndarray
    models: dict[str, dict]
    scales: dict[str, float]
    weights: dict[str, float]
    index: str | None = None
    index_bits: int | None = None
    hasher: Hasher | None = None
    valid: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.valid = np.isfinite(self.X).all(axis=1)

    def describe(self) -> dict:
        """JSON-ready summary (no arrays)."""
        return {"channel": self.channel, "dim": int(self.X.shape[1]), "index": self.index,
                "index_bits": self.index_bits, "rows_with_features": int(self.valid.sum()),
                "models": {ch: {k: m.get(k) for k in ("name", "sha256", "arch", "latent_dim")}
                           for ch, m in self.models.items()},
                "scales": self.scales, "weights": self.weights}


def feature_set(archive, *, channel: str | None = None, index: str | None = None,
                progress: bool = True) -> FeatureSet:
    """The features of ``index`` (its models, scales and weights), else of ``channel`` (default ct).

    Raises :class:`~medhash.errors.NotFoundError` when a model or the index is missing (the message
    says which command makes it).
    """

    if index is not None:
        idx = Index(archive, index)
        man = idx.manifest
        configs = {m["name"]: m for m in features.list_models(archive)}
        models = {ch: configs[m["name"]] for ch, m in man["models"].items()}
        blocks = {ch: np.asarray(features.archive_features(archive, m["name"], progress=progress))
                  for ch, m in models.items()}
        X = _live_only(archive, combine(blocks, man["scales"], man["weights"]))
        return FeatureSet(man["channel"], X, models, dict(man["scales"]), dict(man["weights"]),
                          index, int(man["n_bits"]), idx.hasher)
    channel = channel or "ct"
    if channel not in CHANNELS:
        raise InputError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}", param="channel")
    models = {ch: pick_model(archive, ch) for ch in channel_blocks(channel)}
    blocks = {ch: np.asarray(features.archive_features(archive, m["name"], progress=progress)) for ch, m in models.items()}
    scales = {ch: block_scale(b) for ch, b in blocks.items()}
    weights = {ch: 1.0 for ch in blocks}
    return FeatureSet(channel, _live_only(archive, combine(blocks, scales, weights)), models, scales, weights)


def _live_only(archive, X: np.ndarray) -> np.ndarray:
    """(n, D) features with NaN on the rows completed series superseded (so :attr:`FeatureSet.valid`
    leaves them out)."""
    dead = archive.superseded_rows()
    if len(dead):
        X = np.array(X, dtype=np.float32, copy=True)
        X[dead] = np.nan
    return X


def optional_feature_set(archive, channel: str, progress: bool = True) -> FeatureSet | None:
    """:func:`feature_set` of a channel, or None where the archive has no model for one of its blocks."""
    try:
        return feature_set(archive, channel=channel, progress=progress)
    except NotFoundError:
        return None


def draw_queries(candidates: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` distinct rows drawn from ``candidates`` with ``seed``, sorted (all of them if fewer)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) == 0:
        raise InputError("no archive slice has features for this channel (a dose channel needs slices with dose)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(int(n), len(candidates)), replace=False))
