"""The ingest fuzz harness: damaged patients ingested next to an intact one, each outcome classified.

Test helper (not a test file), imported by ``tests/fuzz/test_fuzz.py`` (in-process, batched) and
``benchmarks/fuzz.py`` (one child process per case, with a timeout: forked from the benchmark's
process by :func:`start_forked_ingest` with :mod:`fuzz_fork`, or a fresh interpreter,
:func:`ingest_subprocess`; :func:`classify` judges either from its exit status, stdout and stderr).

Set-up (:func:`write_templates`): small demo phantoms (32 x 32 CT pixels, the 8 middle slices of each,
their RTDOSE and RTSTRUCT): ``DEMO001`` is the intact patient, ``DEMO002`` ... are the templates the
damaged patients are copied from, and each is ingested alone once for its clean fingerprint.

A case (:class:`Case`) is a kind of :mod:`fuzz_mutate`, a number and a seed: it copies template
``number % N_TEMPLATES`` and damages one of its files. Its outcome (:class:`Outcome`) says

* ``status``: ``ok`` (the run ended with its report), ``traceback`` (an exception that is not a
  medhash error reached the user), ``abort`` (the run ended with ``error: ...`` and no report: the
  whole ingest lost), ``hang`` (child process only: past the timeout), ``signal`` (child process
  only: killed by a signal);
* ``intact_ok``: the intact patient's slices equal its clean ingest, byte for byte;
* ``out_of_range``: values stored outside :data:`HU_RANGE`, dose not finite or outside
  [0, :data:`DOSE_MAX_GY`] Gy, positions not finite;
* ``named``: ``file`` when a problem names the damaged file, ``folder`` when only its folder,
  ``no`` otherwise;
* ``changed``: the damaged patient's stored slices differ from its clean ingest (or are missing);
  ``silent``: changed and not named.

:attr:`Outcome.failures` lists the invariants of issue 17 the case broke: no traceback, hang, signal or
abort; the intact patient fully ingested; nothing out of range stored; and, for kinds whose damage
is always detectable, no silent change (the kind's :attr:`fuzz_mutate.Kind.rule`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import fuzz_fork
from fuzz_mutate import KINDS, Mutation, mutate

ROWS = 32                  # CT matrix of the small phantoms
SLICES = 8                 # middle slices kept of each phantom
N_TEMPLATES = 8            # damaged-patient templates DEMO002 ... DEMO009
INTACT = "DEMO001"
HU_RANGE = (-1024.0, 4000.0)
DOSE_MAX_GY = 200.0
KIND_NAMES = tuple(KINDS)


# ------------------------------------------------------------------------------------- the cohort
def small_phantom(index: int, seed: int = 0):
    """:func:`medhash.demo.make_phantom` (32 x 32) cut to its :data:`SLICES` middle slices (contours
    of the other slices dropped; the dose grid kept whole)."""
    from medhash.demo import make_phantom
    p = make_phantom(index, seed, rows=ROWS)
    a = len(p.slice_positions_mm) // 2 - SLICES // 2
    keep = slice(a, a + SLICES)
    z = p.slice_positions_mm[keep]
    contours = {name: [c for c in polys if z[0] - 1e-3 <= c[0, 2] <= z[-1] + 1e-3]
                for name, polys in p.contours.items()}
    return dataclasses.replace(p, hu=p.hu[keep], slice_positions_mm=z, contours=contours,
                               masks={k: m[keep] for k, m in p.masks.items()})


@dataclass
class Templates:
    """The written cohort: the intact patient's folder, the damaged templates, and clean fingerprints
    (patient folder name -> :func:`fingerprint` of it ingested alone)."""

    root: Path
    intact: Path
    damaged: list[Path]
    clean: dict[str, dict] = field(default_factory=dict)


def write_templates(root: Path, n_templates: int = N_TEMPLATES) -> Templates:
    """Write the intact patient and ``n_templates`` damaged-patient templates under ``root`` and
    ingest each alone once (``root/clean/<id>``) for its clean fingerprint."""
    from medhash.demo import write_phantom
    root = Path(root)
    folders = []
    for i in range(n_templates + 1):
        p = small_phantom(i)
        write_phantom(p, root / "templates" / p.patient_id)
        folders.append(root / "templates" / p.patient_id)
    t = Templates(root, folders[0], folders[1:])
    for folder in folders:
        run = ingest_inprocess([folder], root / "clean" / folder.name)
        assert run.status == "ok" and run.exit_code == 0 and not run.problems, (folder, run)
        t.clean[folder.name] = fingerprint(root / "clean" / folder.name)
    return t


# ---------------------------------------------------------------------------------- the archive
def _sha(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def fingerprint(archive_path: Path) -> dict:
    """``{series_uid: {"patient": id, "slices": [(slice_index, z_mm, ct sha, dose sha, masks sha)]},
    "_out_of_range": [text, ...]}`` of an archive (opened read-only)."""
    from medhash import Archive
    out: dict = {"_out_of_range": []}
    bad = out["_out_of_range"]
    with Archive(archive_path, read_only=True) as arch:
        for pid in arch.patients():
            for s in arch.slices(pid):
                ser = out.setdefault(s.series_uid, {"patient": pid, "slices": []})
                masks = _sha(*[np.packbits(s.masks[k]) for k in sorted(s.masks)]) + ",".join(sorted(s.masks))
                ser["slices"].append((s.slice_index, s.z_mm, _sha(s.ct),
                                      None if s.dose is None else _sha(s.dose), masks))
                bad += _out_of_range(pid, s)
    return out


def _out_of_range(pid: str, s) -> list[str]:
    where = f"{pid}:{s.slice_index}"
    bad = []
    lo, hi = HU_RANGE
    if not np.isfinite(s.ct).all() or s.ct.min() < lo or s.ct.max() > hi:
        bad.append(f"{where} HU in [{s.ct.min():g}, {s.ct.max():g}]")
    if s.dose is not None and (not np.isfinite(s.dose).all() or s.dose.min() < 0 or s.dose.max() > DOSE_MAX_GY):
        bad.append(f"{where} dose in [{np.min(s.dose):g}, {np.max(s.dose):g}] Gy")
    if not (np.isfinite(s.z_mm) and np.isfinite(s.origin_mm).all()):
        bad.append(f"{where} position z={s.z_mm} origin={list(s.origin_mm)}")
    return bad


# ------------------------------------------------------------------------------------- running
@dataclass
class Run:
    """One ingest run: ``status`` (ok, traceback, abort, hang, signal), its exit code, problems as
    ``(level, path, message)`` and, when it did not end with a report, the symptom (last line)."""

    status: str
    exit_code: int | None = None
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    symptom: str = ""


def ingest_inprocess(sources: list[Path], archive_path: Path) -> Run:
    """``medhash ingest`` in this process: a medhash error or ValueError is what the CLI prints as
    ``error: ...`` with no report (abort); any other exception is a traceback."""
    from medhash import Archive
    from medhash.errors import MedhashError
    from medhash.ingest import ingest
    quiet = logging.getLogger("pydicom")
    level, quiet.level = quiet.level, logging.CRITICAL   # pydicom logs every damaged value it meets
    try:
        with Archive(archive_path, create=True) as arch:
            rep = ingest(arch, sources, progress=False)
    except (MedhashError, ValueError) as exc:
        return Run("abort", 1, symptom=f"error: {type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001  (what the harness is for)
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        return Run("traceback", 1, symptom=f"{type(exc).__name__}: {exc}"[:300] + at)
    finally:
        quiet.setLevel(level)
    return Run("ok", rep.exit_code, [(p.level, p.path, p.message) for p in rep.problems])


_CHILD = "import sys; from medhash.cli import main; sys.exit(main())"


def cli_argv(sources: list[Path], archive_path: Path) -> list[str]:
    """The arguments of ``medhash`` for one ingest run: ``ingest SOURCES --archive A --json --no-progress``."""
    return ["ingest", *map(str, sources), "--archive", str(archive_path), "--json", "--no-progress"]


def classify(returncode: int | None, out: str, err: str, timeout_s: float) -> Run:
    """The :class:`Run` of a ``medhash ingest --json`` child from its exit status (``-N``: killed by
    signal N; None: killed at ``timeout_s``), stdout and stderr."""
    if returncode is None:
        return Run("hang", None, symptom=f"no exit after {timeout_s:g} s")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if returncode < 0:
        return Run("signal", returncode, symptom=f"killed by signal {-returncode}; {last}")
    if "Traceback (most recent call last)" in err:
        return Run("traceback", returncode, symptom=last[:300])
    try:
        report = json.loads(out)
    except ValueError:
        return Run("abort", returncode, symptom=last[:300])
    problems = [(level[:-1], p["path"], p["message"]) for level in ("errors", "warnings") for p in report[level]]
    return Run("ok", returncode, problems)


def ingest_subprocess(sources: list[Path], archive_path: Path, timeout_s: float) -> Run:
    """``medhash ingest SOURCES --archive A --json --no-progress`` in a fresh interpreter (its own
    session, killed with its workers past ``timeout_s``)."""
    cmd = [sys.executable, "-c", _CHILD, *cli_argv(sources, archive_path)]
    import medhash
    src = str(Path(medhash.__file__).resolve().parents[1])   # the child imports the medhash this process uses
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return classify(None, "", "", timeout_s)
    return classify(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), timeout_s)


def _cli_in_child(argv: list[str]):
    """The target of a forked child: ``medhash ARGV`` as a fresh ``medhash`` process runs it (warnings
    ignored as ``PYTHONWARNINGS=ignore`` does, the root logger without handlers as at start-up)."""
    def target() -> int:
        import warnings
        from medhash.cli import main
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.WARNING)
        return main(argv)
    return target


def preload() -> None:
    """Import in this process what a forked ``medhash ingest`` child needs, so that no child imports it
    again: the CLI, the ingest of DICOM and OpenKBP, pydicom with its pixel handlers."""
    from medhash.cli import main  # noqa: F401
    import medhash.ingest  # noqa: F401
    import pydicom.pixel_data_handlers.numpy_handler  # noqa: F401
    logging.getLogger("pydicom")


def start_forked_ingest(sources: list[Path], archive_path: Path, timeout_s: float) -> fuzz_fork.Child:
    """``medhash ingest SOURCES --archive A --json --no-progress`` in a child forked from this process
    (:func:`fuzz_fork.start`); :func:`fuzz_fork.finished` waits for it, :func:`classify` judges it."""
    return fuzz_fork.start(_cli_in_child(cli_argv(sources, archive_path)), timeout_s)


def ingest_forked(sources: list[Path], archive_path: Path, timeout_s: float) -> Run:
    """:func:`start_forked_ingest` and wait for it: the same :class:`Run` as :func:`ingest_subprocess`."""
    end = fuzz_fork.finished([start_forked_ingest(sources, archive_path, timeout_s)])[0][1]
    return classify(end.returncode, end.out, end.err, timeout_s)


# ------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """Case ``number`` of ``kind`` under ``seed``: template ``number % N_TEMPLATES``, choices drawn
    from ``np.random.default_rng([seed, kind index, number])``."""

    kind: str
    number: int
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.number}"

    def prepare(self, templates: Templates, dest: Path) -> tuple[Path, Mutation]:
        """Copy the template into ``dest/<case name>/<patient id>`` and damage it."""
        src = templates.damaged[self.number % len(templates.damaged)]
        folder = Path(dest) / self.name / src.name
        shutil.copytree(src, folder)
        rng = np.random.default_rng([self.seed, KIND_NAMES.index(self.kind), self.number])
        return folder, mutate(folder, self.kind, rng)


@dataclass
class Outcome:
    """What one case did (see the module docstring)."""

    case: Case
    mutation: Mutation
    run: Run
    folder: Path | None = None
    intact_ok: bool = False
    out_of_range: list[str] = field(default_factory=list)
    named: str = "no"
    changed: bool = False
    change: str = ""
    """For a failing case: what differs from the clean ingest (:func:`describe_change`)."""

    @property
    def silent(self) -> bool:
        return self.changed and self.named == "no"

    @property
    def failures(self) -> list[str]:
        f = [] if self.run.status == "ok" else [self.run.status]
        if not self.intact_ok:
            f.append("intact patient lost")
        if self.out_of_range:
            f.append("out-of-range values stored")
        rule = KINDS[self.case.kind].rule
        if rule == "report" and self.silent:
            f.append("silently changed")
        elif rule == "name" and self.named != "file":
            f.append("duplicate not reported by name")
        elif rule == "same" and self.changed:
            f.append("identical duplicate changed the archive")
        return f

    def own_problems(self) -> list[tuple[str, str, str]]:
        """The run's problems about this case's folder (a batch run reports every case's)."""
        if self.folder is None:
            return list(self.run.problems)
        return [p for p in self.run.problems if str(self.folder) in p[1] or str(self.folder) in p[2]]

    def line(self) -> str:
        """One line for a log or the failure catalog."""
        m = self.mutation
        what = [f"{self.case.name} [{m.target} {m.path.name}: {m.detail}]", f"status {self.run.status}",
                f"exit {self.run.exit_code}"]
        if self.run.symptom:
            what.append(self.run.symptom)
        if not self.intact_ok:
            what.append("intact patient not fully ingested")
        if self.out_of_range:
            what.append("stored: " + "; ".join(self.out_of_range[:3]) + (" ..." if len(self.out_of_range) > 3 else ""))
        what.append(f"named: {self.named}")
        if self.changed:
            what.append("damaged patient stored differently from its clean ingest" + (" (silently)" if self.silent else "")
                        + (f": {self.change}" if self.change else ""))
        return " | ".join(what)


def _named(problems, folder: Path, path: Path) -> str:
    texts = [f"{p} {m}" for _, p, m in problems]
    if any(str(path) in t or (path.name in t and str(folder) in t) for t in texts):
        return "file"
    if any(str(folder) in t for t in texts):
        return "folder"
    return "no"


def judge(case: Case, folder: Path, mutation: Mutation, run: Run, archive_path: Path, templates: Templates,
          fp: dict | None) -> Outcome:
    """The outcome of ``case`` from its run and the archive's fingerprint (None: no archive)."""
    o = Outcome(case, mutation, run, folder, named=_named(run.problems, folder, mutation.path))
    fp = fp if fp is not None else {"_out_of_range": []}
    clean_intact = templates.clean[templates.intact.name]
    o.intact_ok = all(fp.get(uid) == ser for uid, ser in clean_intact.items() if uid != "_out_of_range")
    mine = templates.clean[folder.name]
    o.changed = any(fp.get(uid) != ser for uid, ser in mine.items() if uid != "_out_of_range")
    o.out_of_range = list(fp["_out_of_range"])
    if o.changed and o.failures and fp.get("_out_of_range") is not None:
        o.change = describe_change(templates.root / "clean" / folder.name, archive_path, folder.name)
    return o


def describe_change(clean: Path, got: Path, patient_id: str) -> str:
    """How a patient's slices in archive ``got`` differ from those in ``clean`` (one short line)."""
    from medhash import Archive
    try:
        with Archive(clean, read_only=True) as a, Archive(got, read_only=True) as b:
            before = {s.slice_index: s for s in a.slices(patient_id)}
            after = {s.slice_index: s for s in b.slices(patient_id)} if patient_id in b.patients() else {}
    except Exception as exc:  # noqa: BLE001  (a description only)
        return f"(not compared: {type(exc).__name__})"
    if not after:
        return f"patient {patient_id} not stored"
    out, ct, dose, lost, new = [], [], [], set(), set()
    if sorted(before) != sorted(after):
        out.append(f"slices {sorted(before)} -> {sorted(after)}")
    for i in sorted(set(before) & set(after)):
        x, y = before[i], after[i]
        if not np.array_equal(x.ct, y.ct):
            ct.append(float(np.abs(x.ct - y.ct).max()))
        if (x.dose is None) != (y.dose is None):
            out.append(f"slice {i} dose {'kept' if y.dose is not None else 'lost'}")
        elif x.dose is not None and not np.array_equal(x.dose, y.dose):
            dose.append(float(np.abs(x.dose - y.dose).max()))
        lost |= set(x.masks) - set(y.masks)
        new |= set(y.masks) - set(x.masks)
    if ct:
        out.append(f"CT differs on {len(ct)} slice(s), up to {max(ct):g} HU")
    if dose:
        out.append(f"dose differs on {len(dose)} slice(s), up to {max(dose):.3g} Gy")
    if lost or new:
        out.append(f"structures lost {sorted(lost)}, new {[ascii(n)[1:-1][:60] for n in sorted(new)]}")
    moved = sorted({m for i in set(before) & set(after) for m in set(before[i].masks) & set(after[i].masks)
                    if not np.array_equal(before[i].masks[m], after[i].masks[m])})
    if moved:
        out.append(f"masks differ: {moved}")
    return "; ".join(out) or "catalog rows differ (z or series)"


def _fingerprint_or_none(archive_path: Path) -> dict | None:
    try:
        return fingerprint(archive_path)
    except Exception:  # noqa: BLE001  (no archive, or one that cannot be read: judged as empty)
        return None


def run_batch(cases: list[Case], templates: Templates, work: Path) -> list[Outcome]:
    """The cases (each on a different template) ingested together with the intact patient in this
    process; when the batch breaks an invariant that cannot be told apart by patient (a traceback, an
    abort, the intact patient lost, values out of range), each case is run again alone."""
    assert len({c.number % len(templates.damaged) for c in cases}) == len(cases), "one template per case"
    work = Path(work)
    tag = "+".join(c.name for c in cases) if len(cases) == 1 else f"batch-{cases[0].name}-{len(cases)}"
    prepared = [c.prepare(templates, work / tag) for c in cases]
    arch = work / tag / "archive"
    run = ingest_inprocess([templates.intact, *[f for f, _ in prepared]], arch)
    fp = _fingerprint_or_none(arch)
    outcomes = [judge(c, f, m, run, arch, templates, fp) for c, (f, m) in zip(cases, prepared)]
    shared = run.status != "ok" or not outcomes[0].intact_ok or (fp and fp["_out_of_range"])
    if shared and len(cases) > 1:
        return [o for c in cases for o in run_batch([c], templates, work)]
    return outcomes


def run_subprocess_case(case: Case, templates: Templates, work: Path, timeout_s: float, *,
                        spawn: bool = False) -> Outcome:
    """One case as a user meets it: ``medhash ingest`` of the intact and the damaged patient in a child
    (forked from this process, or with ``spawn`` a fresh interpreter)."""
    folder, m = case.prepare(templates, work)
    arch = Path(work) / case.name / "archive"
    ingest_child = ingest_subprocess if spawn else ingest_forked
    run = ingest_child([templates.intact, folder], arch, timeout_s)
    return judge(case, folder, m, run, arch, templates, _fingerprint_or_none(arch))


@dataclass
class Started:
    """A case whose forked ``medhash ingest`` child is running (:func:`start_forked_case`)."""

    case: Case
    folder: Path
    mutation: Mutation
    archive: Path
    child: fuzz_fork.Child


def start_forked_case(case: Case, templates: Templates, work: Path, timeout_s: float) -> Started:
    """Prepare ``case`` and fork its ``medhash ingest`` child; returns at once."""
    folder, m = case.prepare(templates, work)
    arch = Path(work) / case.name / "archive"
    return Started(case, folder, m, arch, start_forked_ingest([templates.intact, folder], arch, timeout_s))


def finish_forked_case(started: Started, end: fuzz_fork.Exit, templates: Templates) -> Outcome:
    """The outcome of a started case from how its child ended (:func:`fuzz_fork.finished`)."""
    run = classify(end.returncode, end.out, end.err, started.child.timeout_s)
    return judge(started.case, started.folder, started.mutation, run, started.archive, templates,
                 _fingerprint_or_none(started.archive))


# ------------------------------------------------------------------------------------- the table
COLUMNS = ("cases", "ok", "traceback", "abort", "hang", "signal", "exit 0", "exit 1", "exit 4", "intact lost",
           "out of range", "named file", "named folder", "changed", "silent", "FAILED")


def tally(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """kind -> column -> count (plus a ``total`` row)."""
    rows: dict[str, dict[str, int]] = {}
    for o in outcomes:
        for key in (o.case.kind, "total"):
            r = rows.setdefault(key, dict.fromkeys(COLUMNS, 0))
            r["cases"] += 1
            r[o.run.status] += 1
            if o.run.exit_code in (0, 1, 4) and o.run.status == "ok":
                r[f"exit {o.run.exit_code}"] += 1
            r["intact lost"] += not o.intact_ok
            r["out of range"] += bool(o.out_of_range)
            r["named file"] += o.named == "file"
            r["named folder"] += o.named == "folder"
            r["changed"] += o.changed
            r["silent"] += o.silent
            r["FAILED"] += bool(o.failures)
    return {k: rows[k] for k in [*[k for k in KIND_NAMES if k in rows], "total"] if k in rows}


def table(outcomes: list[Outcome]) -> str:
    """The counts per kind and outcome as a Markdown table."""
    rows = tally(outcomes)
    head = "| kind | " + " | ".join(COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    body = [f"| {k} | " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for k, r in rows.items()]
    return "\n".join([head, sep, *body])
