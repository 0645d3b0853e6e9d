"""What the ``medhash`` sub-commands share: the option groups declared once (``--archive``, ``--json``,
``--no-progress``, ``--index`` ...), the sub-command factory with its examples and exit-code epilog,
argument types, the report printer, and the one mapping from a Python API parameter to its option
(:func:`option_of`), with which :mod:`.main` names the option an error is about.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MedhashError

MAX_LISTED = 20
"""Problems listed per level before '... and N more' (the rest are in the ``--json`` report)."""

EPILOG = """exit codes: 0 success · 1 some inputs could not be used (each reported) · 2 bad command line ·
3 archive missing, locked or damaged · 4 no usable input · 5 address in use (serve, listen)"""

IRREGULAR_OPTIONS = {
    "query": "QUERY",
    "sources": "SOURCE",
    "keyfile": "KEYFILE",
    "archive_dir": "--archive",
    "series": "--patient",
    "slice_index": "--slice",
    "n_bits": "--bits",
    "ks": "--k",
    "models": "--ct-model / --dose-model",
    "weights": "--ct-weight / --dose-weight",
    "hasher_params": "--epochs",
    "index_params": "--nlist / --nprobe / --M / --ef-search / --ef-construction",
    "same_patient": "--include-same-patient",
    "max_upload": "--max-upload-mb",
    "quiet_s": "--quiet",
    "M": "--M",
    "headers": "--dicomweb-user / --dicomweb-token-file",
}
"""Python API parameters whose option is not ``--`` + the name with dashes for underscores."""


def option_of(param: str) -> str:
    """The command-line option (or positional argument) of the Python API parameter ``param``.

    ``"index"`` -> ``"--index"``, ``"tolerance_mm"`` -> ``"--tolerance-mm"``; the irregular ones
    are listed in :data:`IRREGULAR_OPTIONS` (``"query"`` -> ``"QUERY"``, ``"n_bits"`` -> ``"--bits"``).
    """
    return IRREGULAR_OPTIONS.get(param) or "--" + param.replace("_", "-")


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for the terminal, with the option it is about when it names one:
    ``"re-ranking needs ... (option --rerank)"``."""
    param = getattr(exc, "param", None)
    if not param:
        return str(exc)
    option = option_of(param)
    return f"{exc} ({'option ' if option.startswith('--') else ''}{option})"


# ---------------------------------------------------------------------- sub-commands and option groups
def add_command(sub, name: str, run, doc: str) -> argparse.ArgumentParser:
    """The sub-command ``name``, run by ``run(args) -> int``, described by its module's docstring ``doc``.

    ``doc`` has three paragraphs: ````medhash NAME``: HELP.`` (the command's line in ``medhash
    --help``), the description that heads its own ``--help``, and the examples that end it (before
    the exit codes).
    """
    head, description, examples = doc.strip("\n").split("\n\n", 2)
    help_line = head.split(": ", 1)[1].rstrip(".")
    p = sub.add_parser(name, help=help_line, description=description,
                       epilog=examples.rstrip("\n") + "\n" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)
    return p


def add_archive(p: argparse.ArgumentParser, help: str = "archive directory") -> None:
    """``--archive DIR`` (required): the archive the command works on."""
    p.add_argument("--archive", required=True, type=Path, help=help)


def add_json(p: argparse.ArgumentParser, help: str = "print the result as JSON") -> None:
    """``--json``: machine-readable output instead of the text summary."""
    p.add_argument("--json", action="store_true", help=help)


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (logs, CI)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_index(p: argparse.ArgumentParser, help: str = "index name (default: the archive's only index)",
              required: bool = False) -> None:
    """``--index NAME``: the index searched (by default the archive's only one)."""
    p.add_argument("--index", required=required, help=help)


def add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", metavar="NAME=GY,...",
                   help="target structures and their prescription levels in Gy when the names carry none "
                        "(e.g. PTV_high=70,PTV_low=56); PTV70, PTV_7000, PTV70Gy are read without it")


def add_pseudonymise(p: argparse.ArgumentParser, help: str) -> None:
    """``--pseudonymise KEYFILE``: pseudonymise what comes in with this key."""
    p.add_argument("--pseudonymise", metavar="KEYFILE", type=Path, default=None, help=help)


def add_identity(p: argparse.ArgumentParser, exclude: bool = False) -> None:
    """``--include-same-patient`` (and ``--exclude-same-patient``, the default, when ``exclude``), and
    ``--pseudonymise KEYFILE`` to recognise a DICOM query among a pseudonymised archive's patients."""
    g = p.add_mutually_exclusive_group()
    if exclude:
        g.add_argument("--exclude-same-patient", dest="same_patient", action="store_false", default=None,
                       help="leave out the query's own patient: an archive query's, or the archive patient a DICOM "
                            "query is recognised as (same series, study, frame of reference or PatientID); the "
                            "default")
    g.add_argument("--include-same-patient", dest="same_patient", action="store_true",
                   default=None if exclude else False,
                   help="keep the query's own patient (an archive query's, or the archive patient a DICOM query "
                        "is recognised as) among the results")
    add_pseudonymise(p, "the key the archive was pseudonymised with, so that a DICOM query is recognised as an "
                        "archive patient by its original PatientID and UIDs (mapped with the key)")


MATCHED = {"series_uid": "same series", "study_uid": "same study", "frame_of_reference_uid": "same frame of reference",
           "patient_id": "same PatientID"}
"""How :func:`identity_note` names the strongest identifier a query was recognised by."""


def identity_note(kind: str, recognised: dict | None, excluded: str | None) -> str:
    """What a search or prediction did with the query's own patient, for its header line:
    ``"query recognised as archive patient pt_3 (same series): left out"``, ``"other patients only"``
    (an archive query), ``"query not recognised as an archive patient"`` (a DICOM query), or ``""``."""
    if recognised:
        others = recognised.get("others") or []
        who = recognised["patient_id"] + (f" (and {', '.join(others)})" if others else "")
        return (f"query recognised as archive patient {who} ({MATCHED[recognised['matched_on'][0]]}): "
                + ("left out" if excluded else "included"))
    if excluded:
        return "other patients only"
    if kind == "archive":
        return "own patient included"
    return "query not recognised as an archive patient" if kind == "dicom" else ""


def add_rerank(p: argparse.ArgumentParser, help: str, default: int = 0) -> None:
    """``--rerank N``: re-rank a Hamming shortlist of N by Euclidean distance."""
    p.add_argument("--rerank", type=int, default=default, metavar="N", help=help)


def add_listen_address(p: argparse.ArgumentParser, port: int) -> None:
    """``--host`` (default this machine only) and ``--port`` of a server command."""
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")


# ---------------------------------------------------------------------- argument types
def positive_float(text: str, flag: str) -> float:
    """``text`` as a positive finite number; MedhashError naming ``flag`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise MedhashError(f"{flag} must be 'auto' or a positive number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise MedhashError(f"{flag} must be 'auto' or a positive number, not {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """An argparse type: ``"1,10,100"`` -> ``[1, 10, 100]``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, e.g. 1,10,100; got {text!r}")


# ---------------------------------------------------------------------- output
def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_problems(problems, stream=None) -> None:
    """Errors, then warnings, of an ingest report: the first :data:`MAX_LISTED` of each, one a line."""
    stream = stream or sys.stderr
    for level in ("error", "warning"):
        items = [p for p in problems if p.level == level]
        for p in items[:MAX_LISTED]:
            print(f"{level}: {p.path}: {p.message}", file=stream)
        if len(items) > MAX_LISTED:
            print(f"{level}: ... and {len(items) - MAX_LISTED} more {level}s (use --json for the full list)",
                  file=stream)


def print_ingested(report, archive, what: str = "") -> None:
    """The summary lines of an ingest report (``medhash ingest``, ``medhash pull``)."""
    completed = f", {report.series_completed} of them completing an incomplete series" \
        if report.series_completed else ""
    print(f"ingested {report.series_added} series ({report.slices_added} slices with body, "
          f"{report.slices_skipped_no_body} without body skipped){what}{completed}; "
          f"{report.series_existing} series already in the archive; "
          f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    print(f"archive: {archive.path} ({archive.info()['slices']} slices)")
