"""Tests of medhash.io.writers: the provenance every written file carries.

The writers' geometry, pixel data and references are tested through the demo in test_demo.py and
test_dicom.py; here only what the provenance changes, read back with pydicom directly.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pydicom
import pytest

from medhash.io.writers import Provenance, medhash_provenance, write_ct_series, write_rtdose

DOSE = np.linspace(0.0, 60.0, 2 * 3 * 4).reshape(2, 3, 4)
GEOMETRY = dict(origin_mm=(-10.0, -20.0, 5.0), pixel_spacing=(4.0, 4.0), frame_offsets_mm=(0.0, 3.0),
                frame_of_reference_uid="1.2.3.4", patient_id="P1", study_uid="1.2.3.5")


def test_medhash_provenance_stamps_medhash_the_time_and_random_uids(tmp_path):
    now = datetime(2031, 7, 8, 9, 10, 11)
    prov = medhash_provenance(now)
    assert (prov.manufacturer, prov.date, prov.time) == ("medhash", "20310708", "091011")
    assert prov.uid("RTDOSE", "x") != prov.uid("RTDOSE", "x")      # fresh, whatever the parts
    a = pydicom.dcmread(write_rtdose(tmp_path / "a.dcm", DOSE, provenance=prov, **GEOMETRY))
    b = pydicom.dcmread(write_rtdose(tmp_path / "b.dcm", DOSE, provenance=prov, series_description="mine",
                                     **GEOMETRY))
    assert a.Manufacturer == "medhash" and a.StudyDescription == "" and a.PatientName == ""
    assert (a.StudyDate, a.ContentDate, a.ContentTime) == ("20310708", "20310708", "091011")
    assert (a.SeriesDescription, b.SeriesDescription) == ("medhash dose", "mine")
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # UIDs the caller gives are written as given
    c = pydicom.dcmread(write_rtdose(tmp_path / "c.dcm", DOSE, provenance=prov, series_uid="1.2.3.6",
                                     sop_instance_uid="1.2.3.7", **GEOMETRY))
    assert (c.SeriesInstanceUID, c.SOPInstanceUID) == ("1.2.3.6", "1.2.3.7")


def test_default_medhash_provenance_is_today():
    before = datetime.now().strftime("%Y%m%d")
    prov = medhash_provenance()
    assert prov.date in (before, datetime.now().strftime("%Y%m%d"))


def test_writers_need_a_provenance(tmp_path):
    with pytest.raises(TypeError, match="provenance"):
        write_rtdose(tmp_path / "rd.dcm", DOSE, **GEOMETRY)
    with pytest.raises(TypeError, match="provenance"):
        write_ct_series(tmp_path, np.zeros((1, 2, 2)), pixel_spacing=(1.0, 1.0), slice_positions_mm=[0.0],
                        patient_id="P1", study_uid="1.2", series_uid="1.3", frame_of_reference_uid="1.4")


def test_provenance_and_descriptions_are_checked(tmp_path):
    with pytest.raises(ValueError, match="YYYYMMDD"):
        Provenance("medhash", "", "2031-07-08", "091011", str, "medhash", "MEDHASH")
    with pytest.raises(ValueError, match="HHMMSS"):
        Provenance("medhash", "", "20310708", "9:10", str, "medhash", "MEDHASH")
    with pytest.raises(ValueError, match="at most 64 characters"):
        write_rtdose(tmp_path / "rd.dcm", DOSE, provenance=medhash_provenance(), series_description="x" * 65,
                     **GEOMETRY)
