"""Is a CT series complete? The instances it should have, from the evidence its own files give.

A series read from disk or received over the network may lack slices: a transfer cut by a crash, a
file lost on the way, a slice that could not be decoded. DICOM has no "number of slices in this series"
element every scanner fills in, so the expected count is the largest that the evidence supports:

* **gaps along z**: positions missing between two slices at the regular spacing (one gap of twice the
  spacing is one slice);
* **InstanceNumber holes**: numbers missing between the smallest and the largest of the slices kept
  (when every slice has a distinct number);
* **the structure set's references**: the CT instances of this series that its RTSTRUCT lists
  (``RTReferencedSeriesSequence`` > ``ContourImageSequence``) and that were not read, less the slices
  read that it does not list (a slice whose SOPInstanceUID was lost or damaged is still there).

A cut that leaves a contiguous run of slices, numbered without holes and with no structure set to
reference the rest, gives no evidence: such a series is recorded as complete, and is still completed
when the missing instances arrive later (the archive completes a series whenever a later ingest holds
every instance it stored and more: :func:`medhash.store.series.completes`).
"""
from __future__ import annotations

import numpy as np

GAP_FACTOR = 1.5
"""A step along z larger than this many times the median spacing is a gap (as in the spacing warnings)."""


def gap_slices(z_mm: np.ndarray) -> int:
    """Slice positions missing in the gaps of sorted positions ``z_mm`` ((n,) mm): sum over the steps
    larger than :data:`GAP_FACTOR` x the median step of round(step / median) - 1; 0 for fewer than 3."""
    if len(z_mm) < 3:
        return 0
    dz = np.diff(np.asarray(z_mm, dtype=np.float64))
    step = float(np.median(dz))
    if not step > 0:
        return 0
    big = dz[dz > GAP_FACTOR * step]
    return int(sum(int(round(d / step)) - 1 for d in big))


def instance_number_holes(numbers: list[int | None]) -> tuple[int, list[int]]:
    """(count of the numbers between min and max that no slice has, up to 10 of them) when every slice
    has a distinct InstanceNumber; (0, []) otherwise (no evidence)."""
    if not numbers or any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
        return 0, []
    lo, hi = min(numbers), max(numbers)
    if hi - lo > 100_000:   # not a slice numbering
        return 0, []
    have = set(numbers)
    holes = [k for k in range(lo, hi + 1) if k not in have]
    return len(holes), holes[:10]


def referenced_instances(struct_ds, series_uid: str) -> set[str]:
    """SOPInstanceUIDs of the CT images of series ``series_uid`` that a structure set data set lists in
    ``ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence >
    ContourImageSequence`` (empty when it lists none, or the sequences cannot be read)."""
    out: set[str] = set()
    if struct_ds is None:
        return out
    try:
        for frame in struct_ds.get("ReferencedFrameOfReferenceSequence", []) or []:
            for study in frame.get("RTReferencedStudySequence", []) or []:
                for series in study.get("RTReferencedSeriesSequence", []) or []:
                    if str(series.get("SeriesInstanceUID", "") or "") != series_uid:
                        continue
                    for image in series.get("ContourImageSequence", []) or []:
                        uid = str(image.get("ReferencedSOPInstanceUID", "") or "")
                        if uid:
                            out.add(uid)
    except Exception:  # damaged sequences: no evidence (the structure set is reported by its reader)
        return set()
    return out


def instance_evidence(series_uid: str, sop_uids: list[str], z_mm: np.ndarray, instance_numbers: list[int | None],
                      struct_ds=None) -> dict:
    """What the catalog records of a series' instances (``series.info["instances"]``).

    Parameters
    ----------
    series_uid : SeriesInstanceUID.
    sop_uids : SOPInstanceUIDs of the slices read, (n,) in position order.
    z_mm : (n,) float, mm, their positions along the slice normal (sorted).
    instance_numbers : (n,) their InstanceNumbers (None where absent).
    struct_ds : the RTSTRUCT data set ingested with the series, or None.

    Returns
    -------
    dict with ``present`` (int, slices read), ``expected`` (int, >= present: the largest count the
    evidence supports), ``complete`` (bool, expected == present), ``missing`` (list of str: each piece
    of evidence, in words) and ``sop_uids`` (sorted list of the SOPInstanceUIDs read, what a later
    ingest must hold to complete the series).
    """
    present = len(sop_uids)
    expected, missing = present, []
    gaps = gap_slices(z_mm)
    if gaps:
        missing.append(f"{gaps} slice position(s) missing in gaps along z")
        expected = max(expected, present + gaps)
    holes, some = instance_number_holes(instance_numbers)
    if holes:
        listed = ", ".join(map(str, some)) + (", ..." if holes > len(some) else "")
        missing.append(f"{holes} InstanceNumber(s) missing ({listed})")
        expected = max(expected, present + holes)
    refs = referenced_instances(struct_ds, series_uid)
    # a listed instance not read is explained by a slice read that the list does not name (its UID lost
    # or damaged), if there is one: only the rest counts as missing
    unlisted = sum(1 for u in sop_uids if u not in refs)
    unread = len(refs - set(sop_uids)) - unlisted if refs else 0
    if unread > 0:
        missing.append(f"{unread} CT instance(s) listed by the structure set not received or not readable")
        expected = max(expected, present + unread)
    return {"present": present, "expected": expected, "complete": expected == present, "missing": missing,
            "sop_uids": sorted(set(sop_uids))}
