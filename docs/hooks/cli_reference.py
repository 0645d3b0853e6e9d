"""MkDocs hook: the command-line reference, generated from ``medhash.cli.build_parser()``.

``docs/reference/cli.md`` holds the line :data:`PLACEHOLDER`; at build time :func:`on_page_markdown`
replaces it with one section per sub-command: usage, description, examples and a table of every
argument with its help and default. Nothing here imports MkDocs, so ``tests/test_docs.py`` can call
:func:`cli_reference_markdown` and :func:`missing_options` without the docs extra installed.
"""
from __future__ import annotations

import argparse
import re

PLACEHOLDER = "<!-- medhash-cli-reference -->"
"""The line of ``docs/reference/cli.md`` that the generated reference replaces."""

_CODE_SPAN = re.compile(r"(`[^`]*`)")


def _escape(text: str) -> str:
    """Markdown-safe table cell text: code spans kept as they are; ``\\``, ``|``, ``*``, ``<`` and ``_``
    escaped elsewhere."""
    parts = _CODE_SPAN.split(" ".join(text.split()))
    for i, part in enumerate(parts):
        if not part.startswith("`"):  # Python-Markdown's tables leave pipes inside code spans alone
            parts[i] = (part.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
                        .replace("<", "&lt;").replace("_", "\\_"))
    return "".join(parts)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of ``parser`` by command name, in the order they were added."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of ``parser`` except ``-h/--help`` and sub-parser groups."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _names(action: argparse.Action) -> str:
    """``--name METAVAR`` forms of an argument, as code spans."""
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices is not None else None
        metavar = action.metavar or choices or action.dest.upper()
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        if action.nargs in ("+", "*"):
            metavar += " ..."
        metavar = " " + metavar
    return ", ".join(f"`{opt}{metavar}`" for opt in action.option_strings)


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with ``%(default)s``-style fields expanded, and the choices."""
    text = action.help or ""
    if "%" in text:
        try:
            text = text % {**vars(action), "prog": prog}
        except (KeyError, TypeError, ValueError):
            pass
    cell = _escape(text)
    if cell and not cell.endswith((".", ")", ":")):
        cell += "."
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        cell += (" " if cell else "") + "Choices: " + ", ".join(f"`{c}`" for c in action.choices) + "."
    if action.required and action.option_strings:
        cell = "**Required.** " + cell
    return cell or "–"


def _default(action: argparse.Action) -> str:
    """The default as a code span, or a dash when there is none worth showing."""
    d = action.default
    if d is None or d is argparse.SUPPRESS or d is False or action.nargs == 0:
        return "–"
    if isinstance(d, (list, tuple)):
        d = " ".join(str(x) for x in d)
    return f"`{d}`"


def options_table(parser: argparse.ArgumentParser) -> str:
    """A Markdown table of every argument of ``parser`` (``-h/--help`` left out)."""
    rows = ["| argument | help | default |", "|---|---|---|"]
    for action in _documented(parser):
        rows.append(f"| {_names(action)} | {_help(action, parser.prog)} | {_default(action)} |")
    return "\n".join(rows)


def usage(parser: argparse.ArgumentParser) -> str:
    """argparse's usage lines without the ``usage:`` prefix (continuation lines shifted to match)."""
    prefix = "usage: "
    lines = parser.format_usage().rstrip().splitlines()
    lines[0] = lines[0].removeprefix(prefix)
    return "\n".join([lines[0]] + [line[len(prefix):] if line.startswith(" " * len(prefix)) else line
                                    for line in lines[1:]])


def command_section(name: str, sub: argparse.ArgumentParser, common_epilog: str = "") -> str:
    """The reference section of one sub-command: heading, usage, description, examples, arguments."""
    out = [f"## medhash {name}", "", "```text", usage(sub), "```", ""]
    if sub.description:
        out += [_escape(sub.description), ""]
    epilog = (sub.epilog or "").rstrip()
    if common_epilog and epilog.endswith(common_epilog.rstrip()):
        epilog = epilog[: -len(common_epilog.rstrip())].rstrip()
    if epilog:
        out += ["```text", epilog, "```", ""]
    out += [options_table(sub), ""]
    return "\n".join(out)


def cli_reference_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole generated reference: global options, then one section per sub-command.

    Parameters
    ----------
    parser : argparse.ArgumentParser, optional
        The parser to document; ``medhash.cli.build_parser()`` when not given.
    """
    if parser is None:
        from medhash.cli import build_parser  # the docs build imports the package it documents

        parser = build_parser()
    commands = subcommands(parser)
    out = ["```text", usage(parser), "```", ""]
    if parser.description:
        out += [_escape(parser.description), ""]
    out += ["Global options (before the command):", "", options_table(parser), "",
            "Every command also takes `-h` / `--help`, which prints its options and examples.", "",
            "Commands: " + ", ".join(f"[`{n}`](#medhash-{n})" for n in commands) + ".", ""]
    for name, sub in commands.items():
        out.append(command_section(name, sub, parser.epilog or ""))
    return "\n".join(out)


def missing_options(parser: argparse.ArgumentParser, markdown: str) -> list[str]:
    """``"COMMAND OPTION"`` for every option or argument of ``parser``'s sub-commands (and its own
    global options) that the section of that command in ``markdown`` does not show as a code span."""
    sections = re.split(r"^## medhash ", markdown, flags=re.M)
    head, by_name = sections[0], {}
    for section in sections[1:]:
        name, _, body = section.partition("\n")
        by_name[name.strip()] = body
    missing = []
    targets = [("", parser, head)] + [(n, s, by_name.get(n)) for n, s in subcommands(parser).items()]
    for name, sub, body in targets:
        if body is None:
            missing.append(f"{name} (no section)")
            continue
        for action in _documented(sub):
            names = action.option_strings or [action.metavar or action.dest]
            for opt in names:
                if not re.search(r"`" + re.escape(opt) + r"[ `]", body):
                    missing.append(f"{name} {opt}".strip())
    return missing


def on_page_markdown(markdown: str, page=None, config=None, files=None, **kwargs) -> str:
    """MkDocs event: put the generated reference in place of :data:`PLACEHOLDER`."""
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, cli_reference_markdown())
    return markdown
