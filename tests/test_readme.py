"""The README's examples (and the five-minute tour's) run as written on the demo archive (issue 16 point 5).

Every ``medhash ...`` line of the README's shell blocks that works on the demo cohort (it names
``demo-archive`` or ``demo-data``) is run, word for word, through :func:`medhash.cli.main` in a folder
where ``demo-archive`` and ``demo-data`` are a small demo archive built like ``make demo`` builds its
own (3 patients, 1-epoch auto-encoders, the ``ct256`` and ``joint256`` indexes, a small dose model),
and must exit 0. ``medhash serve`` (it serves until stopped) is only parsed. The README's Python
block runs too. The lines on "your own data" (``/data/...``) are checked to parse by
tests/test_docs.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from medhash.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TOUR = (ROOT / "docs" / "tour.md").read_text(encoding="utf-8")
SHELL_BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
DEMO_WORDS = ("demo-archive", "demo-data")
LONG_RUNNING = {"serve", "listen"}
"""Commands that run until stopped: parsed, not run."""


def demo_commands(markdown: str) -> list[list[str]]:
    """The ``medhash`` command lines of the shell blocks that name the demo archive or its data, as
    argv lists after ``medhash`` (``# comments`` dropped, ``\\`` continuations joined)."""
    found = []
    for block in SHELL_BLOCK.findall(markdown):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "medhash" and any(w in line for w in DEMO_WORDS):
                found.append(words[1:])
    return found


def test_the_extractor_finds_the_tour():
    commands = demo_commands(README)
    assert len(commands) >= 6 and len(demo_commands(TOUR)) >= 3
    names = [c[0] for c in commands]
    assert {"search", "predict-dose", "patients"} <= set(names)
    assert demo_commands("```sh\nmedhash info --archive demo-archive   # x\nmedhash info --archive a\n```\n") \
        == [["info", "--archive", "demo-archive"]]


@pytest.fixture(scope="module")
def demo_folder(trained, tmp_path_factory):
    """A folder holding ``demo-archive`` (indexed, with a dose model) and ``demo-data``, like ``make demo``."""
    from medhash.dose import fit_dose_model
    from medhash.retrieval import build_index
    root, arch = trained
    build_index(arch, "ct256", "ct", 256, seed=0)
    build_index(arch, "joint256", "ct+dose", 256, seed=0)
    fit_dose_model(arch, k=2, trees=20, voxels=2000, seed=0, progress=False)
    folder = tmp_path_factory.mktemp("readme")
    (folder / "demo-archive").symlink_to(root / "arch", target_is_directory=True)
    (folder / "demo-data").symlink_to(root / "demo", target_is_directory=True)
    (folder / "demo-output").mkdir()
    return folder


CASES = [("README.md", a) for a in demo_commands(README)] + [("tour.md", a) for a in demo_commands(TOUR)]


@pytest.mark.parametrize("page, argv", CASES, ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_readme_command_runs_on_the_demo_archive(page, argv, demo_folder, monkeypatch, capsys):
    monkeypatch.chdir(demo_folder)
    if argv[0] in LONG_RUNNING:
        assert build_parser().parse_args(argv).func
        return
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, f"{page}: medhash {shlex.join(argv)}: {err}"
    if "--json" in argv:
        assert json.loads(out)
    for word in argv:
        if word.startswith("demo-output/") and "--png" in argv:
            assert (demo_folder / word).is_file()


def test_readme_python_block_runs(demo_folder, monkeypatch):
    monkeypatch.chdir(demo_folder)
    blocks = PYTHON_BLOCK.findall(README)
    assert blocks
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        assert out.getvalue().strip()
