"""Queries: what a search starts from, turned into an index's combined features.

A slice query (:class:`Query`: an archive slice, a DICOM CT slice or series slice, a PNG/NPY image)
comes from :func:`parse_query` / :func:`archive_query`; a patient query (:class:`PatientQuery`: an
archive patient or a DICOM series) from :func:`patient_query`. :func:`query_features` and
:func:`query_slice_features` give their features for an index: archive slices read the stored
features, other images are encoded by the index's models (:func:`encode_images`, the one place that
runs the CNN on a query).

Indexes with a ``geometry`` block (:func:`needs_geometry`) need the query's geometry image
(:mod:`medhash.geometry.slices`), computed from its CT and contours: a DICOM query is read with the
RTSTRUCT of its folder (target levels from an RT plan there, else from the names), a PNG/NPY image
has no contours and is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..errors import InputError, NotFoundError
from .blocks import combine
from .index import Index

_ARCHIVE_QUERY = re.compile(r"^(?P<pid>[^:]+):(?P<idx>-?\d+)$")


@dataclass
class Query:
    """A prepared slice query: where it came from and its images on the model grid.

    Attributes
    ----------
    kind : ``"archive"``, ``"dicom"`` or ``"image"``.
    info : JSON-ready description (patient/slice for archive queries, the file otherwise).
    ct : (128, 128) float32 HU, or None.
    dose : (128, 128) float32 Gy, or None.
    geometry : (128, 128) float32 geometry image in [-1, 1] (DICOM queries read for a geometry index), or None.
    row : archive row for archive queries (their features are read from the archive, not recomputed).
    patient_id : the query's patient in the archive (archive queries), else None.
    identity : DICOM queries: what names the series (:func:`dicom_identity`), to recognise it among the
        archive's patients (:func:`recognise`); else None.
    """

    kind: str
    info: dict
    ct: np.ndarray | None = None
    dose: np.ndarray | None = None
    row: int | None = None
    geometry: np.ndarray | None = None
    patient_id: str | None = None
    identity: dict | None = None


@dataclass
class PatientQuery:
    """The slices of a query patient on the model grid.

    Attributes
    ----------
    kind : ``"archive"`` or ``"dicom"``.
    patient_id : archive patient id (archive queries), else None.
    z_mm : (n,) slice positions, increasing; slice_index : (n,) their indexes.
    rows : (n,) archive rows (archive queries), else None.
    ct : (n, 128, 128) HU (DICOM queries; archive queries read theirs from the archive when needed).
    dose : (n, 128, 128) Gy or None; info : JSON-ready description.
    volume : the DICOM query's :class:`~medhash.core.records.Volume` (body slices), else None.
    identity : DICOM queries: what names the series (:func:`dicom_identity`), else None.
    recognised : the archive patient a DICOM series was recognised as (:func:`recognise`), else None.
    """
    kind: str
    patient_id: str | None
    z_mm: np.ndarray
    slice_index: np.ndarray
    rows: np.ndarray | None
    ct: np.ndarray | None
    dose: np.ndarray | None
    info: dict
    volume: object = None
    identity: dict | None = None
    recognised: dict | None = None

    def own_patients(self) -> list[str]:
        """The archive patients this query is (:func:`own_patients`): left out of its searches by default."""
        return own_patients(self, self.recognised)


def needs_geometry(index: Index) -> bool:
    """Whether ``index`` has a geometry block (its queries need a geometry image)."""
    return "geometry" in index.manifest["models"]


def dicom_identity(vol) -> dict:
    """What names a DICOM query's series, as :meth:`~medhash.store.archive.Archive.identify` takes it:
    ``patient_id`` (PatientID), ``study_uid``, ``frame_uid`` (FrameOfReferenceUID), ``series_uid``."""
    info = vol.info or {}
    return {"patient_id": vol.patient_id or None, "study_uid": info.get("study_uid") or None,
            "frame_uid": info.get("frame_of_reference_uid") or None, "series_uid": vol.series_uid or None}


def recognise(archive, identity: dict | None, pseudonymise=None) -> dict | None:
    """The archive patient a DICOM query belongs to, or None.

    Parameters
    ----------
    identity : the query's :func:`dicom_identity` (None for archive and image queries: nothing to recognise).
    pseudonymise : None, or the key (file path, bytes or
        :class:`~medhash.ingest.pseudonymise.Pseudonymiser`) the archive was ingested with: the query's
        PatientID and UIDs are also compared through it (an archive built with ``--pseudonymise KEY``
        holds only pseudonyms, which the original identifiers of a query match only through the key).

    Returns
    -------
    ``{"patient_id", "matched_on"}`` of the archive patient matched by the strongest identifier
    (series uid, then study uid, frame of reference uid, patient id); ``matched_on`` lists every
    identifier that matched it, strongest first. When the strongest identifier matches more than one
    archive patient (a PatientID shared by ``ID`` and ``ID.2``, the later series of one person),
    ``"others"`` lists the rest: they are the same person and are left out with it.
    """
    if not identity:
        return None
    found: dict[str, set[str]] = {}
    tries = [identity]
    if pseudonymise is not None:
        from ..ingest.pseudonymise import as_pseudonymiser  # start-up: pydicom only with a pseudonymisation key
        p = as_pseudonymiser(pseudonymise)
        tries.append({key: (None if not v else p.patient_id(v) if key == "patient_id" else p.uid(v))
                      for key, v in identity.items()})
    for ident in tries:
        for m in archive.identify(**ident):
            found.setdefault(m["patient_id"], set()).update(m["matched_on"])
    if not found:
        return None
    keys = list(archive.IDENTITY_KEYS)
    strength = {pid: sorted(keys.index(k) for k in on) for pid, on in found.items()}
    order = sorted(found, key=lambda pid: (strength[pid][0], -len(strength[pid]), pid))
    best = order[0]
    out = {"patient_id": best, "matched_on": [keys[j] for j in strength[best]]}
    others = [pid for pid in order[1:] if strength[pid][0] == strength[best][0]]
    if others:
        out["others"] = others
    return out


def own_patients(query, recognised: dict | None) -> list[str]:
    """The archive patients a query is: an archive query's own patient, else the recognised one (and its
    ``others``), else none."""
    if query.patient_id:
        return [query.patient_id]
    if recognised:
        return [recognised["patient_id"], *recognised.get("others", [])]
    return []


def patients_mask(index: Index, patient_ids: list[str]) -> np.ndarray | None:
    """(items,) bool: the items of these patients in ``index``, and those it holds that completed series
    superseded (:attr:`Index.superseded`, never returned); None when there are none."""
    if not patient_ids and not index.superseded.any():
        return None
    mask = index.superseded.copy()
    for pid in patient_ids:
        mask |= index.patient_mask(pid)
    return mask


def parse_query(archive, query: str | Path, *, dose: str | Path | None = None,
                slice_index: int | None = None, geometry: bool = False) -> Query:
    """Turn a query given as text or path into a :class:`Query`.

    ``PATIENT:SLICE`` names an archive slice; a ``.png`` / ``.npy`` file is an image (see
    :mod:`medhash.io.images`); anything else is DICOM: a CT slice file, or a series folder with
    ``slice_index``. ``dose`` is an RTDOSE (DICOM queries) or a dose image in Gy (image queries).
    ``geometry``: the query is for an index with a geometry block (:func:`needs_geometry`): a DICOM
    series folder is read with its RTSTRUCT and the slice's geometry image computed; a folder without
    RTSTRUCT, a single CT file and an image are an InputError (no contours).
    """
    text = str(query)
    m = _ARCHIVE_QUERY.match(text)
    if m and not Path(text).exists():
        if dose is not None:
            raise InputError("a dose file is for file queries; an archive slice brings its own dose", param="dose")
        return archive_query(archive, m.group("pid"), int(m.group("idx")))
    path = Path(text)
    if not path.exists():
        raise InputError(f"query {text!r} is neither PATIENT:SLICE nor an existing file or folder", param="query")
    # start-up: the readers (pydicom, scipy) only for file queries; an archive slice needs neither
    from ..io.dicom import read_query
    from ..io.images import is_image, read_image  # (as above)

    if is_image(path):
        if geometry:
            raise InputError(_NO_CONTOURS.format(what=f"{path} is a picture and has none",
                                                 fix="query an archive slice (PATIENT:SLICE) or a DICOM series "
                                                     "folder with its RTSTRUCT"), param="query")
        d = read_image(dose, kind="dose") if dose is not None else None
        return Query(kind="image", info={"type": "image", "file": str(path)}, ct=read_image(path, kind="ct"), dose=d)
    vol, k = read_query(path, slice_index=slice_index, dose_path=dose, structures=geometry)
    info = {"type": "dicom", "file": str(path), "slice_index": int(vol.slice_index[k]), "z_mm": round(float(vol.z_mm[k]), 3),
            "has_dose": vol.dose is not None}
    geo = _dicom_geometry(vol, k, path) if geometry else None
    return Query(kind="dicom", info=info, ct=vol.ct[k], dose=None if vol.dose is None else vol.dose[k], geometry=geo,
                 identity=dicom_identity(vol))


_NO_CONTOURS = ("a geometry index needs the contours (RTSTRUCT: targets and organs) of the query, and {what}; {fix}")


def _series_geometry(vol, where: Path, param: str, positions=None) -> np.ndarray:
    """Geometry images (n, 128, 128) of a DICOM volume's slices at ``positions`` (all by default), from
    its CT and rasterised RTSTRUCT; target levels from the RT plan's prescriptions, then the names.
    InputError (``param``) when the volume has no contours."""
    if not vol.masks:
        fix = ("give its series folder with the RTSTRUCT and the slice's index" if Path(where).is_file() else
               "put the series' RTSTRUCT in the folder")
        what = (f"{where} is a single CT file, read without contours" if Path(where).is_file() else
                f"{where} holds no RTSTRUCT for this CT series")
        raise InputError(_NO_CONTOURS.format(what=what, fix=fix), param=param)
    from ..geometry.slices import geometry_images  # start-up: scipy.ndimage only for geometry queries

    pos = np.arange(len(vol.ct)) if positions is None else np.asarray(positions)
    ct = np.rint(vol.ct[pos])    # HU rounded as the archive stores them, so the body outline is the archive's
    return geometry_images(ct, {name: m[pos] for name, m in vol.masks.items()}, vol.info.get("prescriptions") or None)


def _dicom_geometry(vol, k: int, path: Path) -> np.ndarray:
    """(128, 128) geometry image of slice ``k`` of a DICOM query volume (see :func:`_series_geometry`)."""
    return _series_geometry(vol, path, "query", [k])[0]


def archive_query(archive, patient_id: str, slice_index: int) -> Query:
    """The :class:`Query` of the archive slice (patient_id, slice_index) (its stored features are used)."""
    s = archive.get(patient_id, int(slice_index))
    return Query(kind="archive", info={"type": "archive", **s.to_dict()}, ct=s.ct, dose=s.dose, row=s.row,
                 patient_id=s.patient_id)


def patient_query(archive, patient: str | None = None, series: str | Path | None = None,
                  dose: str | Path | None = None, pseudonymise=None) -> PatientQuery:
    """An archive patient (``patient``) or a DICOM CT series folder (``series``, optional RTDOSE), the
    series recognised among the archive's patients (:func:`recognise`, with the archive's
    ``pseudonymise`` key when it was built with one)."""
    if (patient is None) == (series is None):
        raise InputError("give either an archive patient or a DICOM series folder", param="patient")
    if patient is not None:
        if patient not in set(archive.patients()):
            raise NotFoundError(f"no patient {patient!r} in {archive.path}", param="patient")
        table = archive.table()
        rows = np.flatnonzero(table["patient_id"] == patient)
        rows = rows[np.argsort(table["z_mm"][rows], kind="stable")]
        return PatientQuery("archive", patient, table["z_mm"][rows], table["slice_index"][rows], rows, None, None,
                            {"type": "archive", "patient_id": patient, "slices": int(len(rows))})
    from ..io.dicom import read_query  # start-up: pydicom only for DICOM queries
    vol, _ = read_query(series, slice_index=0, dose_path=dose, structures=True)
    vol = vol.body_only()
    if len(vol) == 0:
        raise InputError(f"{series}: no slice of this series shows a body", param="series")
    order = np.argsort(vol.z_mm, kind="stable")
    identity = dicom_identity(vol)
    return PatientQuery("dicom", None, vol.z_mm[order], vol.slice_index[order], None, vol.ct[order],
                        None if vol.dose is None else vol.dose[order],
                        {"type": "dicom", "folder": str(series), "slices": int(len(vol)),
                         "has_dose": vol.dose is not None}, volume=vol, identity=identity,
                        recognised=recognise(archive, identity, pseudonymise))


def encode_images(index: Index, ct: np.ndarray | None, dose: np.ndarray | None, what: str,
                  geometry: np.ndarray | None = None) -> np.ndarray:
    """(n, D) combined features of images for ``index``, by its models.

    Parameters
    ----------
    ct, dose : (n, 128, 128) float32 HU / Gy, or None; an index with a dose block needs ``dose``.
    what : the query, for the message when an image the index needs is missing (``"the query"``).
    geometry : (n, 128, 128) float32 geometry images, or None; an index with a geometry block needs them.
    """
    blocks = {}
    for ch in index.manifest["models"]:
        images = {"ct": ct, "dose": dose, "geometry": geometry}[ch]
        if images is None and ch == "geometry":
            raise InputError(f"index {index.name!r} searches {index.channel}: "
                             + _NO_CONTOURS.format(what=f"{what} brings none",
                                                   fix="query an archive slice or a DICOM series folder with its "
                                                       "RTSTRUCT"), param="query")
        if images is None:
            raise InputError(f"index {index.name!r} searches {index.channel}: {what} needs a dose too", param="dose")
        model, config = index.model(ch)
        blocks[ch] = features.encode_arrays(model, config, images)
    return combine(blocks, index.manifest["scales"], index.manifest["weights"])


def query_features(index: Index, query: Query) -> np.ndarray:
    """(1, D) combined features of a slice query for ``index`` (archive queries: the stored features)."""
    if query.row is None:
        return encode_images(index, None if query.ct is None else query.ct[None],
                             None if query.dose is None else query.dose[None],
                             f"the {query.kind} query" if query.kind == "image" else "the query",
                             None if query.geometry is None else query.geometry[None])
    f = index.features_of_rows([query.row])
    if not np.isfinite(f).all():
        raise InputError(f"slice ({query.patient_id}, {query.info.get('slice_index')}) has no dose, but index "
                         f"{index.name!r} is a {index.channel} index")
    return f


def query_slice_features(index: Index, q: PatientQuery) -> tuple[np.ndarray, np.ndarray]:
    """(m, D) combined features of a patient query's slices usable with ``index`` and the (m,)
    positions in ``q`` they belong to (archive slices without dose are left out of dose indexes)."""
    if q.rows is not None:
        f = index.features_of_rows(q.rows)
    else:
        geo = None
        if needs_geometry(index):
            order = np.argsort(q.volume.z_mm, kind="stable")   # the order of q.ct (patient_query)
            geo = _series_geometry(q.volume, Path(q.info["folder"]), "series", order)
        f = encode_images(index, q.ct, q.dose, "the query series", geo)
    ok = np.flatnonzero(np.isfinite(f).all(axis=1))
    if not len(ok):
        raise InputError(f"no slice of the query can be searched in index {index.name!r} ({index.channel})")
    return f[ok], ok
