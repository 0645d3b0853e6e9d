"""Isodose levels: which dose lines a picture draws, in which colours, and the text that chooses them.

* **Default** (:data:`DEFAULT_PERCENT`): 95, 80, 50 and 20 % of a reference dose: the prescription
  when it is known, else the maximum dose of the query slice (else of the slices shown). A plan of
  14.7 Gy thus gets lines at 14.0, 11.8, 7.4 and 2.9 Gy, one of 70 Gy at 66.5, 56, 35 and 14 Gy.
* **Chosen levels** (:func:`parse_isodose`): ``"95,80,50,20%"`` (percent of the reference) or
  ``"10,20,30"`` (Gy), at most :data:`MAX_LEVELS` levels.
* **Colours** (:data:`PALETTE`): distinct hues, given from the highest level down (red, yellow,
  green, cyan, magenta, orange, blue), so that two neighbouring levels never share a hue family,
  unlike a sequential colour map whose 10, 20 and 30 Gy look alike at thumbnail size.
* The fixed levels of the web app's slice pictures (:data:`ISODOSE_GY`, 10 to 70 Gy) take their
  colours from the same palette (:data:`ISODOSE_COLOURS`, aligned with :data:`ISODOSE_GY`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

PALETTE = ("#e6194b", "#ffe119", "#3cb44b", "#42d4f4", "#f032e6", "#f58231", "#4363d8")
"""Isodose colours from the highest level down: red, yellow, green, cyan, magenta, orange, blue."""
MAX_LEVELS = len(PALETTE)
"""The most isodose levels one picture draws (one colour each)."""
DEFAULT_PERCENT = (95.0, 80.0, 50.0, 20.0)
"""Default isodose levels, percent of the reference dose (prescription, else maximum)."""
ISODOSE_GY = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
"""Fixed levels of the web app's slice pictures (Gy, ascending)."""


def level_colours(levels_gy) -> list[str]:
    """The colour of each level: :data:`PALETTE` handed out from the highest level down.

    Parameters
    ----------
    levels_gy : sequence of float, Gy, at most :data:`MAX_LEVELS`, in any order.

    Returns
    -------
    list of str : ``"#rrggbb"`` per level, in the order given.
    """
    order = np.argsort(-np.asarray(levels_gy, dtype=float), kind="stable")
    out = [""] * len(order)
    for rank, i in enumerate(order):
        out[int(i)] = PALETTE[rank % MAX_LEVELS]
    return out


ISODOSE_COLOURS = tuple(level_colours(ISODOSE_GY))
"""Colours of :data:`ISODOSE_GY`, in its order (10 Gy blue ... 70 Gy red)."""


@dataclass(frozen=True)
class IsodoseSpec:
    """Isodose levels as asked for: ``values`` (highest first) in ``unit`` ``"%"`` (of the
    reference dose) or ``"Gy"``."""

    values: tuple[float, ...]
    unit: str = "%"

    def text(self) -> str:
        """The levels as :func:`parse_isodose` reads them (``"95,80,50,20%"``, ``"30,20,10 Gy"``)."""
        body = ",".join(f"{v:g}" for v in self.values)
        return body + ("%" if self.unit == "%" else " Gy")


DEFAULT_ISODOSE = IsodoseSpec(DEFAULT_PERCENT, "%")


def parse_isodose(text: str) -> IsodoseSpec:
    """Read isodose levels from text: percent of the reference dose or Gy.

    Parameters
    ----------
    text : str
        Levels separated by commas or spaces. ``"95,80,50,20%"`` or ``"95%,80%"``: percent of the
        reference dose (a ``%`` on every level or only after the last); ``"10,20,30"`` or
        ``"10,20,30 Gy"``: Gy.

    Returns
    -------
    IsodoseSpec : the levels, highest first, each once.

    Raises
    ------
    InputError (``param="isodose"``)
        Empty text, a level that is not a positive number, ``%`` on some levels only, or more than
        :data:`MAX_LEVELS` levels.
    """
    raw = str(text).strip()
    gy = bool(re.search(r"gy\s*$", raw, flags=re.IGNORECASE))
    body = re.sub(r"\s+%", "%", re.sub(r"gy\s*$", "", raw, flags=re.IGNORECASE).strip())
    items = [t for t in re.split(r"[,\s]+", body) if t]
    if not items:
        raise InputError(f"no isodose level in {text!r}: give levels such as '95,80,50,20%' or '10,20,30' (Gy)",
                         param="isodose")
    marked = [t.endswith("%") for t in items]
    percent = all(marked) or (marked[-1] and not any(marked[:-1]))
    if any(marked) and (not percent or gy):
        raise InputError(f"isodose levels {text!r} mix percent and Gy: put '%' after every level or only after "
                         "the last for percent of the reference dose, none for Gy", param="isodose")
    values = []
    for t in items:
        try:
            v = float(t.rstrip("%"))
        except ValueError:
            raise InputError(f"isodose level {t!r} in {text!r} is not a number", param="isodose") from None
        if not np.isfinite(v) or v <= 0:
            raise InputError(f"isodose level {t!r} in {text!r} must be a positive number", param="isodose")
        values.append(v)
    values = sorted(set(values), reverse=True)
    if len(values) > MAX_LEVELS:
        raise InputError(f"{len(values)} isodose levels in {text!r}: at most {MAX_LEVELS} (one colour each)",
                         param="isodose")
    return IsodoseSpec(tuple(values), "%" if percent else "Gy")


def as_spec(isodose) -> IsodoseSpec:
    """``None`` (the default percentages), text (:func:`parse_isodose`), an :class:`IsodoseSpec`,
    or a sequence of Gy values, as an :class:`IsodoseSpec`."""
    if isodose is None:
        return DEFAULT_ISODOSE
    if isinstance(isodose, IsodoseSpec):
        return isodose
    if isinstance(isodose, str):
        return parse_isodose(isodose)
    return parse_isodose(",".join(f"{float(v):g}" for v in isodose) + " Gy")


@dataclass(frozen=True)
class Isodose:
    """The levels one picture draws.

    Attributes
    ----------
    gy : tuple of float, Gy, highest first.
    colours : tuple of str, one per level.
    labels : tuple of str, legend text per level (``"14.0 Gy (95 %)"`` or ``"20 Gy"``).
    title : str, the legend's title (what the levels are relative to).
    """

    gy: tuple[float, ...]
    colours: tuple[str, ...]
    labels: tuple[str, ...]
    title: str


def resolve_levels(isodose, reference_gy: float | None, reference_name: str = "the maximum dose") -> Isodose:
    """The Gy levels of a picture.

    Parameters
    ----------
    isodose : what :func:`as_spec` takes (default: 95, 80, 50 and 20 % of the reference).
    reference_gy : float or None
        Reference dose, Gy (prescription or maximum); percent levels need it (None or <= 0: no lines).
    reference_name : words for the reference in the legend's title (``"the prescription"``).

    Returns
    -------
    Isodose : levels in Gy (highest first), their colours, legend labels and title; empty when
    percent levels have no reference.
    """
    spec = as_spec(isodose)
    if spec.unit == "Gy":
        gy = spec.values
        return Isodose(gy, tuple(level_colours(gy)), tuple(f"{v:g} Gy" for v in gy), "isodose lines")
    if reference_gy is None or not np.isfinite(reference_gy) or reference_gy <= 0:
        return Isodose((), (), (), "")
    gy = tuple(round(p * reference_gy / 100.0, 3) for p in spec.values)
    labels = tuple(f"{g:.1f} Gy ({p:g} %)" for g, p in zip(gy, spec.values))
    return Isodose(gy, tuple(level_colours(gy)), labels,
                   f"isodose lines, % of {reference_name} ({reference_gy:.1f} Gy)")
