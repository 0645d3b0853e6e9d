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


def test_errors_name_their_option_and_exit_code(monkeypatch, tmp_path, capsys):
    from medhash.cli import info, options
    from medhash.errors import ArchiveError, InputError, MilvusError, NotFoundError

    assert options.option_of("rerank") == "--rerank" and options.option_of("tolerance_mm") == "--tolerance-mm"
    assert options.option_of("query") == "QUERY" and options.option_of("n_bits") == "--bits"
    assert options.error_text(InputError("give a number >= k", param="rerank")) == "give a number >= k (option --rerank)"
    assert options.error_text(InputError("not a CT", param="query")) == "not a CT (QUERY)"
    assert options.error_text(InputError("plain")) == "plain"
    for exc, code in ((InputError("bad value", param="index"), 1), (NotFoundError("no such index"), 1),
                      (ArchiveError("locked"), 3), (MilvusError("down"), 1), (ValueError("odd"), 1)):
        def fail(args, exc=exc):
            raise exc
        monkeypatch.setattr(info, "run", fail)
        assert main(["info", "--archive", str(tmp_path)]) == code
        assert capsys.readouterr().err == f"error: {options.error_text(exc)}\n"
    with pytest.raises(InputError):  # --verbose: the traceback of a caller's error
        monkeypatch.setattr(info, "run", lambda args: (_ for _ in ()).throw(InputError("x")))
        main(["-v", "info", "--archive", str(tmp_path)])


def test_index_help_gives_the_nlist_rule(capsys):
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the power of two nearest sqrt(n) / 4, at least 16 and at most n / 39" in out
