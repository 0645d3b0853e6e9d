"""DICOM writers: a CT series, an RTDOSE and an RTSTRUCT from arrays in patient millimetres.

The demo phantoms (:mod:`medhash.demo`), the tests and medhash's own outputs (the RTDOSE of a
predicted dose, :mod:`medhash.dose.prediction`) all write DICOM through these three functions:
:func:`write_ct_series`, :func:`write_rtdose` and :func:`write_rtstruct`.

Who made a file and when is not the writers' choice: every writer takes a :class:`Provenance`
(Manufacturer, StudyDescription, the dates and times, how missing UIDs are made, the default
series descriptions). :func:`medhash_provenance` is the one for real outputs: Manufacturer
"medhash", the local date and time of writing and fresh random UIDs. The deterministic provenance
of the synthetic phantoms is :data:`medhash.demo.DEMO_PROVENANCE`.

Conventions
-----------
* Patient coordinates are DICOM's (LPS): x towards the patient's left, y towards posterior,
  z towards the head, all in millimetres.
* Volumes are ``(n_slices, rows, cols)`` in *position order* (increasing position along the slice
  normal). With the default axial orientation ``(1, 0, 0, 0, 1, 0)`` the centre of pixel
  ``(k, r, c)`` lies at ``x = origin_x + c * col_spacing``, ``y = origin_y + r * row_spacing``,
  ``z = slice_positions_mm[k]``.
* ``pixel_spacing`` is always ``(row spacing, column spacing)`` in mm, the order of DICOM
  PixelSpacing (row spacing = distance between adjacent rows, i.e. along y for axial images).
* UIDs the caller does not give come from ``provenance.uid(*parts)``, with parts that name the
  object (modality, study, series, file name), so a deterministic provenance gives the same UIDs
  for the same call and a random one fresh UIDs every time.
* No patient names: PatientName is always empty.

Modules: :mod:`.common` (the provenance and the modules every file shares), :mod:`.ct`,
:mod:`.rtdose`, :mod:`.rtstruct` (one writer each).
"""
from .common import Provenance, medhash_provenance
from .ct import write_ct_series
from .rtdose import write_rtdose
from .rtstruct import write_rtstruct

__all__ = [
    "Provenance",
    "medhash_provenance",
    "write_ct_series",
    "write_rtdose",
    "write_rtstruct",
]
