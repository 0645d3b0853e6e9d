"""The documentation stays true to the code: the generated CLI reference lists every option, the README
is a short front page whose commands parse, and the site's pages, API references and benchmark
markers exist. Needs no MkDocs: the hook's generator is plain Python."""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from medhash.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


hook = load(DOCS / "hooks" / "cli_reference.py", "cli_reference_hook")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


# --- the generated command-line reference ----------------------------------------------------------

def test_reference_lists_every_option_of_every_command():
    parser = build_parser()
    md = hook.cli_reference_markdown(parser)
    assert hook.missing_options(parser, md) == []
    for name, sub in subparsers(parser).items():
        section = md.split(f"## medhash {name}\n", 1)[1].split("\n## medhash ", 1)[0]
        for action in sub._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}" in section, (name, opt)
        assert sub.description is None or sub.description.split()[0] in section


def test_reference_is_what_the_hook_puts_in_the_page():
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert hook.PLACEHOLDER in page
    built = hook.on_page_markdown(page)
    assert hook.PLACEHOLDER not in built
    assert hook.missing_options(build_parser(), built) == []
    assert hook.on_page_markdown("# other page\n") == "# other page\n"


def test_reference_shows_defaults_and_choices():
    md = hook.cli_reference_markdown(build_parser())
    index = md.split("## medhash index\n", 1)[1].split("\n## medhash ", 1)[0]
    row = next(line for line in index.splitlines() if line.startswith("| `--bits"))
    assert row.endswith("| `256` |")
    row = next(line for line in index.splitlines() if line.startswith("| `--hasher"))
    assert "`kernel-lsh`" in row and "`itq`" in row
    row = next(line for line in index.splitlines() if line.startswith("| `--archive"))
    assert "**Required.**" in row


def test_check_fails_when_an_option_is_missing_from_the_reference():
    parser = build_parser()
    md = hook.cli_reference_markdown(parser)
    subparsers(parser)["search"].add_argument("--undocumented-option", help="added after the reference")
    subparsers(parser)["index"].add_argument("extra_positional", nargs="?")
    assert sorted(hook.missing_options(parser, md)) == ["index extra_positional", "search --undocumented-option"]
    # and a row taken out of the page is noticed
    parser = build_parser()
    md = hook.cli_reference_markdown(parser)
    without = "\n".join(line for line in md.splitlines() if not line.startswith("| `--rerank N`"))
    missing = hook.missing_options(parser, without)
    assert "search --rerank" in missing and "evaluate --rerank" in missing


def test_check_fails_when_a_command_has_no_section():
    parser = build_parser()
    md = hook.cli_reference_markdown(parser)
    sub = subparsers(parser)
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub_action.add_parser("newcmd").add_argument("--flag")
    assert "newcmd (no section)" in hook.missing_options(parser, md)
    assert len(sub) == len(subparsers(parser))


def test_table_cells_escape_markdown():
    assert hook._escape("a | b * c <x> `p|q`") == "a \\| b \\* c &lt;x> `p|q`"


# --- the README: a short front page whose commands are real ---------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")
SHELL_BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)


def shell_commands(markdown: str) -> list[list[str]]:
    """Every `medhash ...` command line of the shell blocks, as argv lists after `medhash`."""
    found = []
    for block in SHELL_BLOCK.findall(markdown):
        pending = ""
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            lexer = shlex.shlex(pending + line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                tokens = list(lexer)
            except ValueError:  # a quoted string goes on on the next line
                pending += line + "\n"
                continue
            pending, words = "", []
            for token in [*tokens, ";"]:
                if token and set(token) <= set("();<>|&"):
                    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                        words = words[1:]  # VAR=value prefixes
                    if words and Path(words[0]).name == "medhash":
                        found.append(words[1:])
                    words = []
                else:
                    words.append(token)
    return found


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250
    assert "make demo" in README and "make test" in README
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / picture).is_file(), picture
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).exists(), link


def test_every_command_the_readme_shows_exists():
    commands = set(subparsers(build_parser()))
    spans = re.findall(r"`(?:\.venv/bin/)?medhash ([a-z][\w-]*)", README)
    assert spans, "the README shows no command"
    assert len(shell_commands(README)) >= 5, "the README's shell blocks show no medhash command"
    for name in spans:
        assert name in commands, f"`medhash {name}` in README.md is not a command"


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_shown_command_lines_parse(path):
    parser = build_parser()
    for argv in shell_commands(path.read_text(encoding="utf-8")):
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: `medhash {' '.join(argv)}` does not parse")


def test_shell_commands_finds_commands_and_skips_the_rest():
    md = ("```sh\nmedhash info --archive A   # note\nMEDHASH_TOKEN=x .venv/bin/medhash serve --archive A\n"
          "medhash demo --out d && medhash ingest d --archive A\ncurl http://x/\n# medhash nothing\n"
          "medhash search --archive A \\\n    pt_1:3 --k 2\n```\n")
    assert shell_commands(md) == [["info", "--archive", "A"], ["serve", "--archive", "A"],
                                  ["demo", "--out", "d"], ["ingest", "d", "--archive", "A"],
                                  ["search", "--archive", "A", "pt_1:3", "--k", "2"]]


# --- the site: pages, API references, benchmark markers --------------------------------------------

MKDOCS = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", MKDOCS, flags=re.M)
    assert "index.md" in nav and "reference/cli.md" in nav and "metrics-schema.md" in nav
    for page in nav:
        assert (DOCS / page).is_file(), page
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == set(nav)
    assert "docs/hooks/cli_reference.py" in MKDOCS


def test_api_reference_names_modules_that_exist():
    modules = []
    for page in (DOCS / "reference" / "api").glob("*.md"):
        modules += re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), flags=re.M)
    assert {"medhash", "medhash.errors", "medhash.retrieval", "medhash.hashing"} <= set(modules)
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_every_benchmark_has_its_block_in_the_figures_page():
    report = load(ROOT / "benchmarks" / "report.py", "bench_report")
    page = report.PAGE.read_text(encoding="utf-8")
    for bench in report.BENCHES:
        assert (ROOT / "benchmarks" / bench.script).is_file(), bench.script
        replaced = report.replace_block(page, bench.name, "NEW TABLE")
        assert replaced.count("NEW TABLE") == 1
        assert replaced.count(f"<!-- bench:{bench.name}:start -->") == 1
    with pytest.raises(ValueError):
        report.replace_block(page, "no-such-benchmark", "x")


def test_bench_report_writes_the_printed_table_between_the_markers(tmp_path, monkeypatch):
    report = load(ROOT / "benchmarks" / "report.py", "bench_report_run")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "good.py").write_text("print('| a | b |')\nprint('| 1 | 2 |')\n")
    (tmp_path / "benchmarks" / "bad.py").write_text("import sys\nprint('half a table')\nsys.exit(3)\n")
    page = tmp_path / "docs" / "benchmarks.md"
    page.write_text("# Figures\n\n<!-- bench:good:start -->\n\nold good\n\n<!-- bench:good:end -->\n\n"
                    "<!-- bench:bad:start -->\n\nold bad\n\n<!-- bench:bad:end -->\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "PAGE", page)
    monkeypatch.setattr(report, "BENCHES", (report.Bench("good", "good.py"), report.Bench("bad", "bad.py")))
    assert report.main(["--only", "good,bad"]) == 1          # bad failed: reported, its block kept
    text = page.read_text()
    assert "old good" not in text and "| a | b |\n| 1 | 2 |" in text
    assert "Generated by `python benchmarks/good.py`" in text
    assert "old bad" in text and "half a table" not in text
    assert text.startswith("# Figures\n\n<!-- bench:good:start -->\n\nGenerated by")
    before = page.read_text()
    assert report.main(["--only", "good", "--dry-run"]) == 0
    assert page.read_text() == before
