"""The REST API's bounds (issue 17 point 6) and its words (issue 16 point 4): out-of-range integers and
over-deep or oversized JSON are 422 / 413, never a 500; a seeded fuzz of malformed bodies never gets a
500; no error names a command-line flag, and several indexes with none named is the CLI's error with
the field ``index``."""
from __future__ import annotations

import json
import random
import warnings

import pytest

from medhash.cli import main
from medhash.web import create_app
from medhash.web.app import web_words
from medhash.web.middleware import MAX_JSON_BYTES, MAX_JSON_DEPTH, json_depth
from medhash.web.models import MAX_SLICE_INDEX

with warnings.catch_warnings():  # starlette's note that it prefers httpx2 over httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from webarchive import client, demo_arch  # noqa: F401  (fixtures)

HUGE = 10 ** 30


def _detail(r) -> str:
    assert r.headers["content-type"] == "application/json", r.text
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail)


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth(b"") == 0 and json_depth(b"12") == 0 and json_depth(b'"[[["') == 0
    assert json_depth(b'{"a": [1, {"b": [2]}]}') == 4
    assert json_depth(b'{"a": "[[[[", "b": [[1]]}') == 3            # brackets inside a string do not count
    assert json_depth(b'["\\"[[[", [1]]') == 2                        # nor after an escaped quote
    assert json_depth(b"[" * 5000) == 5000                            # unbalanced: measured as written
    assert json_depth(b"[]" * 1000) == 1


@pytest.mark.parametrize("body, where", [
    ({"patient_id": "DEMO001", "slice_index": HUGE, "index": "ct64"}, "slice_index"),
    ({"patient_id": "DEMO001", "slice_index": -1, "index": "ct64"}, "slice_index"),
    ({"patient_id": "DEMO001", "slice_index": MAX_SLICE_INDEX + 1, "index": "ct64"}, "slice_index"),
    ({"patient_id": "DEMO001", "slice_index": 3, "index": "ct64", "k": HUGE}, "k"),
    ({"patient_id": "DEMO001", "slice_index": 3, "index": "ct64", "rerank": HUGE}, "rerank"),
    ({"patient_id": "D" * 201, "slice_index": 3, "index": "ct64"}, "patient_id"),
])
def test_out_of_range_integers_are_422(client, body, where):
    """Issue 17: slice_index 10**30 was an OverflowError in SQLite (500)."""
    r = client.post("/api/search", json=body)
    assert r.status_code == 422, r.text
    assert _detail(r).startswith(f"bad search settings: {where}: ")
    r = client.post("/api/search/batch", json={"slices": [{"patient_id": body["patient_id"],
                                                           "slice_index": body["slice_index"]}],
                                               **{k: v for k, v in body.items() if k in ("k", "rerank", "index")}})
    assert r.status_code == 422, r.text


def test_out_of_range_path_and_query_integers_are_422(client):
    for path in (f"/api/slices/DEMO001/{HUGE}.png", f"/api/slices/DEMO001/{HUGE}", "/api/slices/DEMO001/-1",
                 f"/api/slices/DEMO001/{MAX_SLICE_INDEX + 1}.png"):
        r = client.get(path)
        assert r.status_code == 422, (path, r.text)
        assert "less than or equal to 100000" in _detail(r) or "greater than or equal to 0" in _detail(r)
    assert client.get(f"/api/slices/DEMO001/{MAX_SLICE_INDEX}").status_code == 404   # in range, not there
    for params in ({"k": HUGE}, {"per_slice": HUGE}, {"rerank": HUGE}):
        r = client.get("/api/patients/DEMO001/similar", params={"index": "ct64", **params})
        assert r.status_code == 422, (params, r.text)
    r = client.get("/api/patients/DEMO001/planned-dose", params={"k": HUGE})
    assert r.status_code == 422
    r = client.get("/api/slices/DEMO001/3.png", params={"size": HUGE})
    assert r.status_code == 422
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 40                          # the form fields are checked first
    r = client.post("/api/search", files={"file": ("q.png", png)}, data={"index": "ct64", "k": str(HUGE)})
    assert r.status_code == 422 and _detail(r).startswith("bad search settings: k: Input should be less than or equal to 1000")


def test_deep_json_is_422_and_big_json_413(client):
    """Issue 17: a body of 5,000 nested '[' was a RecursionError (500)."""
    for path in ("/api/search", "/api/search/batch"):
        r = client.post(path, content=b"[" * 5000, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert _detail(r) == (f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects "
                              "(this server's limit); the API's requests need 3")
        just = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH       # at the limit: parsed, then refused as settings
        r = client.post(path, content=just, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested deeper" not in _detail(r)
    big = json.dumps({"patient_id": "DEMO001", "slice_index": 3, "index": "ct64", "pad": "x" * MAX_JSON_BYTES})
    r = client.post("/api/search", content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and _detail(r) == "JSON body too large: over this server's limit of 1024 KiB for JSON requests"
    r = client.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 3, "index": "ct64", "k": 2})
    assert r.status_code == 200 and len(r.json()["results"]) == 2      # ordinary bodies pass the middleware


def _malformed(rng: random.Random, valid: dict) -> bytes:
    """One malformed variant of ``valid``: a field of another type or out of range, truncated, nested, garbage."""
    kind = rng.randrange(8)
    body = dict(valid)
    odd = [HUGE, -HUGE, -1, 1e308, float("nan"), "", "x" * 300, None, [], {}, [[[]]], True, "10**30", "∞", 2 ** 63]
    if kind == 0:                                   # one field of a wrong type or out of range
        body[rng.choice(list(body))] = rng.choice(odd)
    elif kind == 1:                                 # an unknown field, a missing one
        body.pop(rng.choice(list(body)))
        body["extra"] = rng.choice(odd)
    elif kind == 2:                                 # truncated text
        text = json.dumps(body).encode()
        return text[: rng.randrange(1, len(text))]
    elif kind == 3:                                 # nested deep, inside a field
        depth = rng.choice([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 200, 3000])
        return json.dumps(body)[:-1].encode() + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == 4:                                 # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
    elif kind == 5:                                 # another top-level type
        return json.dumps(rng.choice([[body], "text", 3, None, [], True])).encode()
    elif kind == 6:                                 # strings where numbers belong, numbers as text
        body = {k: str(v) for k, v in body.items()}
    else:                                           # bytes flipped in the text
        text = bytearray(json.dumps(body).encode())
        for _ in range(rng.randrange(1, 4)):
            text[rng.randrange(len(text))] = rng.randrange(256)
        return bytes(text)
    return json.dumps(body).encode()                # json.dumps writes NaN and huge ints as Python does


def test_fuzzed_json_bodies_never_get_a_500(client):
    rng = random.Random(17)
    valid = {"/api/search": {"patient_id": "DEMO001", "slice_index": 3, "index": "ct64", "k": 2, "rerank": 0},
             "/api/search/batch": {"slices": [{"patient_id": "DEMO002", "slice_index": 4}], "index": "ct64", "k": 2}}
    statuses = {}
    for path, body in valid.items():
        for case in range(40):
            data = _malformed(rng, body)
            r = client.post(path, content=data, headers={"content-type": "application/json"})
            assert r.status_code < 500, (path, case, data[:200], r.text)
            assert r.status_code == 200 or "--" not in _detail(r), r.text
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert set(statuses) - {200} and statuses.get(422, 0) > 20       # the cases were mostly refused


def test_several_indexes_none_named_is_the_clis_error_with_the_field(client, demo_arch, capsys):
    r = client.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 5})
    assert r.status_code == 422
    assert r.json() == {"detail": "archive arch has several indexes (ct64, joint64); name one of them", "field": "index"}
    assert main(["search", "--archive", str(demo_arch[1]), "DEMO001:5"]) == 1
    cli = capsys.readouterr().err.strip()
    assert cli == f"error: archive {demo_arch[1]} has several indexes (ct64, joint64); name one of them (option --index)"
    r = client.get("/api/patients/DEMO001/similar")
    assert r.status_code == 422 and r.json()["field"] == "index" and "several indexes" in r.json()["detail"]


def test_no_error_names_a_command_line_flag(demo_arch):
    """Errors speak web: the field's name, never ``--index`` or ``--max-upload-mb``."""
    assert web_words("give the series folder and the slice (--slice)") == "give the series folder and the slice ('slice_index')"
    assert web_words("use --index or --include-same-patient; keep a--b") == "use 'index' or 'same_patient'; keep a--b"
    with TestClient(create_app(demo_arch[1], token="s3cret", max_upload=4096)) as c:
        auth = {"Authorization": "Bearer s3cret"}
        answers = [c.get("/api/patients"),                                              # 401
                   c.post("/api/search", files={"file": ("big.npy", b"\x93NUMPY" + b"\0" * 5000)}, headers=auth),
                   c.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 5}, headers=auth),
                   c.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 5, "index": "nope"}, headers=auth),
                   c.post("/api/search", files={"file": ("q.txt", b"text")}, headers=auth),
                   c.post("/api/search", json={"patient_id": "DEMO001", "slice_index": 5, "index": "ct64", "k": 999},
                          headers=auth),
                   c.get("/api/patients/DEMO001/planned-dose", params={"neighbours_by": "ct"}, headers=auth),
                   c.get("/api/slices/NOPE/3.png", headers=auth)]
    assert [r.status_code for r in answers] == [401, 413, 422, 404, 415, 422, 422, 404]
    for r in answers:
        assert "--" not in _detail(r), r.text
    assert "option" not in _detail(answers[2]) and answers[2].json()["field"] == "index"
