"""End-to-end: the console script and `medhash.cli.main` on the demo cohort."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medhash.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--patients", "2"]) == 0
    return out


def test_demo_ingest_info_json(demo_dir, tmp_path, capsys):
    arch = tmp_path / "arch"
    assert main(["ingest", str(demo_dir), "--archive", str(arch), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 2 series" in out and "0 error(s)" in out
    assert main(["info", "--archive", str(arch), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["patients"] == 2 and info["slices"] > 50
    assert info["slices_with_dose"] == info["slices"]
    assert {"PTV70", "SpinalCord", "BODY"} <= set(info["structures"])
    for key in ("patients", "slices", "slices_with_dose"):
        assert isinstance(info[key], int)
    assert main(["info", "--archive", str(arch)]) == 0
    text = capsys.readouterr().out
    assert "slices with dose" in text and "PTV70" in text
    # again: nothing new, exit 0
    assert main(["ingest", str(demo_dir), "--archive", str(arch), "--no-progress", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["series_added"] == 0 and rep["series_existing"] == 2


def test_exit_codes(tmp_path, capsys):
    assert main(["info", "--archive", str(tmp_path / "none")]) == 3
    assert "not a medhash archive" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "missing"), "--archive", str(tmp_path / "a"), "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert "missing: no such file or folder" in err and "nothing was ingested" in err
    with pytest.raises(SystemExit) as exc:
        main(["ingest", "--archive", str(tmp_path / "a")])  # no SOURCE
    assert exc.value.code == 2


def test_console_script_help():
    exe = Path(sys.executable).parent / "medhash"
    cmd = [str(exe)] if exe.exists() else [shutil.which("medhash")]
    res = subprocess.run(cmd + ["ingest", "--help"], capture_output=True, text=True, check=True)
    assert "--archive" in res.stdout and "exit codes" in res.stdout and "example:" in res.stdout
