"""The web API recognises an uploaded DICOM slice of an archive patient (issue 16 point 1): that patient
is left out by default and named in the answer, as on the command line."""
from __future__ import annotations

import json

import pytest

from medhash import Archive, search
from webarchive import client, demo_arch  # noqa: F401  (fixtures)


ALL = ["series_uid", "study_uid", "frame_of_reference_uid", "patient_id"]


def _upload(client, data: bytes, **form):
    r = client.post("/api/search", files={"file": ("CT_0012.dcm", data, "application/dicom")},
                    data={"index": "ct64", "k": "4", **form})
    assert r.status_code == 200, r.text
    return r.json()


def test_uploaded_slice_of_an_archive_patient_is_left_out_and_named(client, demo_arch):
    demo, archive_dir = demo_arch
    data = (demo / "DEMO002" / "CT_0012.dcm").read_bytes()
    res = _upload(client, data)
    assert res["recognised"] == {"patient_id": "DEMO002", "matched_on": ALL}
    assert res["excluded_patient"] == "DEMO002" and res["same_patient"] is False
    assert len(res["results"]) == 4 and all(r["patient_id"] != "DEMO002" for r in res["results"])
    # the same answer as the Python API on the file itself (the upload goes through the same search)
    with Archive(archive_dir) as arch:
        want = search(arch, demo / "DEMO002" / "CT_0012.dcm", index="ct64", k=4)
    assert res["results"] == json.loads(json.dumps(want["results"]))
    # same_patient: the slice itself comes back, read exactly as at ingest
    kept = _upload(client, data, same_patient="true")
    assert kept["recognised"]["patient_id"] == "DEMO002" and kept["excluded_patient"] is None
    assert ("DEMO002", 12, 0) in [(r["patient_id"], r["slice_index"], r["hamming"]) for r in kept["results"]]


def test_an_archive_slice_query_is_its_own_patient(client):
    r = client.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 20, "index": "ct64", "k": 3})
    res = r.json()
    assert r.status_code == 200 and res["recognised"] is None and res["excluded_patient"] == "DEMO001"
