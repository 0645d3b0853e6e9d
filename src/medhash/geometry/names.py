"""Structure names: organs normalised to AAPM TG-263, targets and their prescription levels.

Departments spell the same organ many ways (``Parotid_L``, ``LeftParotid``, ``L Parotid``,
``PAROTID LT``). :func:`organ_name` maps a name to its TG-263 name by a small synonym table
(:data:`ORGANS`): the name is lower-cased, its separators (space, ``_``, ``-``, ``.``) dropped, and
side words (``left``, ``lt``, ``l`` / ``right``, ``rt``, ``r``) read at either end. Names outside the
table are not organs medhash models (their masks stay in the archive, unused by dose prediction).

Targets: a name starting with ``PTV`` (or ``CTV`` / ``GTV`` when the set has no PTV) followed by a
number is a target at that level: ``PTV70``, ``PTV_70``, ``PTV70Gy``, ``PTV 70.0`` are 70 Gy;
``PTV_7000`` and ``PTV7000cGy`` are 7000 cGy = 70 Gy (a number of 1000 or more is read as cGy).
:func:`parse_targets` reads the override ``PTV70=70,PTV_boost=66`` that names targets whose names
carry no level (``--targets``).
"""
from __future__ import annotations

import re

from ..errors import InputError

#: TG-263 organ name -> its synonyms after :func:`_key` (lower case, no separators, side last).
ORGANS: dict[str, tuple[str, ...]] = {
    "Brainstem": ("brainstem", "brainstm", "brainstemprv"),
    "SpinalCord": ("spinalcord", "cord", "spinal", "myelon", "spinalcanal"),
    "Parotid_L": ("parotidl", "lparotid"),
    "Parotid_R": ("parotidr", "rparotid"),
    "Esophagus": ("esophagus", "oesophagus", "esoph"),
    "Larynx": ("larynx", "glottis"),
    "Bone_Mandible": ("bonemandible", "mandible"),
    "Submandibular_L": ("submandibularl", "glndsubmandibl", "submandl"),
    "Submandibular_R": ("submandibularr", "glndsubmandibr", "submandr"),
    "OralCavity": ("oralcavity", "cavityoral", "oral"),
    "Lung_L": ("lungl",),
    "Lung_R": ("lungr",),
    "Heart": ("heart",),
    "Rectum": ("rectum",),
    "Bladder": ("bladder",),
}
_SIDES = {"left": "l", "lt": "l", "l": "l", "right": "r", "rt": "r", "r": "r"}
_LOOKUP = {syn: name for name, syns in ORGANS.items() for syn in syns}
_TARGET = re.compile(r"^\s*(PTV|CTV|GTV)[\s_.-]*(\d+(?:[.,]\d+)?)\s*(c?gy)?\b", re.IGNORECASE)


def _key(name: str) -> str:
    """Lower case, separators dropped, a side word at either end moved to the end as ``l`` / ``r``."""
    words = [w for w in re.split(r"[\s_.\-]+", name.strip().lower()) if w]
    if len(words) > 1 and words[0] in _SIDES:
        words = words[1:] + [_SIDES[words[0]]]
    elif len(words) > 1 and words[-1] in _SIDES:
        words = words[:-1] + [_SIDES[words[-1]]]
    key = "".join(words)
    for side, short in (("left", "l"), ("right", "r")):
        if key.startswith(side):
            key = key[len(side):] + short
        elif key.endswith(side):
            key = key[: -len(side)] + short
    return key


def organ_name(name: str) -> str | None:
    """The TG-263 name of an organ at risk (``"L Parotid"`` -> ``"Parotid_L"``), or None for a name
    outside :data:`ORGANS` (targets included)."""
    if target_level(name) is not None:
        return None
    return _LOOKUP.get(_key(name))


def target_level(name: str) -> float | None:
    """The prescription level in Gy carried by a target's name (``"PTV_7000"`` -> 70.0), or None."""
    m = _TARGET.match(name)
    if not m:
        return None
    value = float(m.group(2).replace(",", "."))
    unit = (m.group(3) or "").lower()
    if unit == "cgy" or (unit != "gy" and value >= 1000):
        value /= 100.0
    return value if 0 < value <= 120 else None


def parse_targets(text: str | dict | None) -> dict[str, float]:
    """``"PTV70=70,PTV_boost=66"`` -> ``{"PTV70": 70.0, "PTV_boost": 66.0}`` (Gy, each in (0, 120]).

    A dict passes through the same checks; None or ``""`` gives ``{}``."""
    if not text:
        return {}
    items = text.items() if isinstance(text, dict) else (
        part.split("=", 1) if "=" in part else (part, "") for part in str(text).split(",") if part.strip())
    out: dict[str, float] = {}
    for name, value in items:
        name = str(name).strip()
        try:
            level = float(str(value).strip())
        except ValueError:
            raise InputError(f"targets: {name!r} needs a level in Gy, as NAME=GY (e.g. PTV70=70), not {value!r}",
                             param="targets") from None
        if not name or not 0 < level <= 120:
            raise InputError(f"targets: {name or '(no name)'}={value}: a level must be in (0, 120] Gy",
                             param="targets")
        out[name] = level
    return out


def structure_roles(names, targets: dict[str, float] | None = None) -> tuple[dict[float, list[str]], dict[str, str]]:
    """Sort a structure set's names into targets and organs.

    Parameters
    ----------
    names : the structure names of one patient.
    targets : name -> Gy overrides (:func:`parse_targets`); they win over levels read from names.

    Returns
    -------
    (levels, organs): ``levels`` maps a prescription level (Gy) to the names at that level
    (PTVs; CTVs / GTVs only when the set has no PTV with a level); ``organs`` maps a TG-263 name to
    the set's name for it (the first in sorted order when two spell the same organ).
    """
    targets = targets or {}
    names = sorted(set(names))
    levels: dict[float, list[str]] = {}
    read = {n: targets.get(n, target_level(n)) for n in names}
    has_ptv = any(level is not None and (n in targets or n.strip().upper().startswith("PTV"))
                  for n, level in read.items())
    for n, level in read.items():
        if level is None or (has_ptv and n not in targets and not n.strip().upper().startswith("PTV")):
            continue
        levels.setdefault(float(level), []).append(n)
    organs: dict[str, str] = {}
    for n in names:
        canon = None if n in targets else organ_name(n)
        if canon and canon not in organs:
            organs[canon] = n
    return dict(sorted(levels.items(), reverse=True)), organs
