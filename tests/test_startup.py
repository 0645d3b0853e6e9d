"""Start-up: commands that need no model never import torch, the DICOM readers, scipy, the web or network stacks.

Checked by the modules a fresh interpreter has loaded after the command, not by timing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medhash.retrieval import build_index

HEAVY = ("torch", "fastapi", "pynetdicom", "matplotlib.pyplot", "pydicom", "scipy.ndimage", "scipy.special")


def loaded_after(argv: list[str]) -> tuple[int, set[str], str]:
    """(exit code, heavy modules loaded, stdout) after ``medhash ARGV`` in a fresh interpreter."""
    code = ("import io, json, sys, contextlib\n"
            "import medhash.cli\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    rc = medhash.cli.main({argv!r})\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy, 'out': out.getvalue()}))\n")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res["rc"], set(res["heavy"]), res["out"]


@pytest.fixture(scope="module")
def indexed(trained):
    root, arch = trained
    build_index(arch, "ct64", "ct", 64, seed=0)
    return root / "arch"


def test_info_imports_no_model_stack(indexed):
    rc, heavy, out = loaded_after(["info", "--archive", str(indexed)])
    assert rc == 0 and out.split("\n")[1].split() == ["patients", "3"]
    assert heavy == set()


def test_archive_slice_search_imports_no_torch(indexed):
    rc, heavy, out = loaded_after(["search", "--archive", str(indexed), "DEMO001:10", "--index", "ct64",
                                   "--k", "3", "--json"])
    assert rc == 0
    res = json.loads(out)
    assert len(res["results"]) == 3
    assert heavy == set()
