"""Fuzzed ingest: thousands of single-file corruptions of DICOM RT files, each ingested next to an
intact patient by ``medhash ingest`` in a child process; a table of outcomes per kind of damage.

    .venv/bin/python benchmarks/fuzz.py --cases 5000 --seed 0 --out fuzz-out
    .venv/bin/python benchmarks/fuzz.py --cases 300 --spawn    # each child a fresh interpreter (slow)
    .venv/bin/python benchmarks/fuzz.py --cases 300 --in-process       # batched in this process, fast
    .venv/bin/python benchmarks/fuzz.py --case wrong_vr-7 --out /tmp/one --keep   # one case again

Case ``c`` is kind ``c mod 15`` of ``tests/fuzz/fuzz_mutate.py`` (byte flips, truncation, deleted tags,
NaN/inf, absurd values, huge lengths, wrong VRs, swapped transfer syntax, three kinds of duplicate
SOPInstanceUID, missing frame of reference, missing DoseGridScaling, damaged ContourData, missing
ROINumber), number ``c div 15``: one file of a copy of a small demo patient is damaged with choices
drawn from ``--seed``, and the copy is ingested together with an intact patient (``--json``, with a
``--timeout``; children run ``--jobs`` at a time). The outcome of each case is classified by
``tests/fuzz/fuzz_harness.py``: traceback, abort (``error:`` and no report), hang, signal, exit
code, intact patient stored byte for byte as when ingested alone, values stored out of range (NaN,
inf, HU outside [-1024, 4000], dose outside [0, 200] Gy), damaged file named, damaged patient changed
silently.

Child processes. By default each case's child is forked from this process, which has imported
medhash, pydicom and numpy once (``tests/fuzz/fuzz_fork.py``): the child runs the CLI entry point
``medhash.cli.main`` with the argv of ``medhash ingest ... --json --no-progress``, its stdout and
stderr in files, in its own process group, and leaves with the CLI's exit code (a traceback printed
as the interpreter prints one, exit 1); this process waits with the timeout (then kills the group:
``hang``), sees a death by signal (``signal``), and classifies stdout, stderr and exit code as for a
fresh process. This process runs no other thread, so the fork is safe; a case costs a fraction of a
second instead of the seconds of a fresh interpreter's imports. ``--spawn`` runs each child as a
fresh ``python -c 'from medhash.cli import main ...'`` instead (the first way, to compare with: the
same cases give the same outcomes either way). ``--in-process`` runs batches in this process, as the
tests do (no hang or signal check).

Written under ``--out``: ``outcomes.jsonl`` (one line per case), ``failures.md`` (each failing case:
what was damaged and the symptom) and ``table.md``; the cases' folders are deleted unless ``--keep``
(failing ones are kept). Exit status 1 when any case broke an invariant of issue 17 (no traceback,
hang, signal or abort; the intact patient fully ingested; nothing out of range stored; no silent
change where the damage is detectable), else 0.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
import fuzz_harness as H  # noqa: E402  (tests/fuzz/fuzz_harness.py: the harness the tests use too)


def cases_of(args) -> list[H.Case]:
    """The cases asked for: ``--case KIND-N``, or ``--cases N`` spread over the kinds in turn."""
    if args.case:
        return [H.Case(k, int(n), args.seed) for k, n in (c.rsplit("-", 1) for c in args.case)]
    n_kinds = len(H.KIND_NAMES)
    return [H.Case(H.KIND_NAMES[c % n_kinds], c // n_kinds, args.seed) for c in range(args.first, args.first + args.cases)]


def record(o: H.Outcome) -> dict:
    """One line of ``outcomes.jsonl``."""
    return {"case": o.case.name, "seed": o.case.seed, "kind": o.case.kind, "target": o.mutation.target,
            "file": o.mutation.path.name, "detail": o.mutation.detail, "status": o.run.status,
            "exit_code": o.run.exit_code, "symptom": o.run.symptom, "intact_ok": o.intact_ok,
            "out_of_range": o.out_of_range, "named": o.named, "changed": o.changed, "silent": o.silent,
            "failures": o.failures, "problems": [list(p) for p in o.own_problems()]}


def run_in_process(cases: list[H.Case], templates: H.Templates, work: Path, keep: bool) -> list[H.Outcome]:
    """The cases in batches (one per template) in this process, as ``tests/fuzz/test_fuzz.py`` runs them."""
    outcomes = []
    by_kind: dict[str, list[H.Case]] = {}
    for c in cases:
        by_kind.setdefault(c.kind, []).append(c)
    for group in by_kind.values():
        batch: list[H.Case] = []
        for c in group + [None]:
            if c is None or len(batch) == H.N_TEMPLATES or any(
                    b.number % H.N_TEMPLATES == c.number % H.N_TEMPLATES for b in batch):
                if batch:
                    got = H.run_batch(batch, templates, work)
                    outcomes += got
                    _progress(outcomes, len(cases))
                    if not keep and not any(o.failures for o in got):
                        shutil.rmtree(work / _batch_dir(batch), ignore_errors=True)
                batch = []
            if c is not None:
                batch.append(c)
    return outcomes


def _batch_dir(batch: list[H.Case]) -> str:
    return batch[0].name if len(batch) == 1 else f"batch-{batch[0].name}-{len(batch)}"


def run_spawned(cases: list[H.Case], templates: H.Templates, work: Path, jobs: int, timeout_s: float,
                keep: bool) -> list[H.Outcome]:
    """Each case in its own fresh ``python -c 'from medhash.cli import main ...'`` child, ``jobs`` at a time."""
    outcomes: list[H.Outcome] = []

    def one(case: H.Case) -> H.Outcome:
        o = H.run_subprocess_case(case, templates, work, timeout_s, spawn=True)
        if not keep and not o.failures:
            shutil.rmtree(work / case.name, ignore_errors=True)
        return o
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for o in pool.map(one, cases):
            outcomes.append(o)
            _progress(outcomes, len(cases))
    return outcomes


def run_forked(cases: list[H.Case], templates: H.Templates, work: Path, jobs: int, timeout_s: float,
               keep: bool) -> list[H.Outcome]:
    """Each case in its own ``medhash ingest`` child forked from this process (which has imported
    medhash already), ``jobs`` at a time; this process prepares and judges the cases between forks
    and has no other thread, so forking is safe."""
    H.preload()
    todo = list(enumerate(cases))[::-1]
    running: dict[int, tuple[int, H.Started]] = {}
    done: dict[int, H.Outcome] = {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                i, case = todo.pop()
                s = H.start_forked_case(case, templates, work, timeout_s)
                running[s.child.pid] = (i, s)
            for child, end in H.fuzz_fork.finished([s.child for _, s in running.values()]):
                i, s = running.pop(child.pid)
                o = done[i] = H.finish_forked_case(s, end, templates)
                if not keep and not o.failures:
                    shutil.rmtree(work / s.case.name, ignore_errors=True)
                _progress(list(done.values()), len(cases))
    finally:   # interrupted (Ctrl-C: the children have their own process groups): none left running
        for _, s in running.values():
            H.fuzz_fork.kill(s.child)
    return [done[i] for i in range(len(cases))]


def _progress(outcomes: list[H.Outcome], total: int) -> None:
    if len(outcomes) % 50 == 0 or len(outcomes) == total:
        failed = sum(bool(o.failures) for o in outcomes)
        print(f"{len(outcomes)}/{total} cases, {failed} failed", file=sys.stderr, flush=True)


def write_results(out: Path, outcomes: list[H.Outcome], header: str) -> str:
    """``outcomes.jsonl``, ``table.md`` and ``failures.md`` under ``out``; returns the table."""
    with open(out / "outcomes.jsonl", "w") as f:
        for o in outcomes:
            f.write(json.dumps(record(o)) + "\n")
    table = H.table(outcomes)
    (out / "table.md").write_text(f"{header}\n\n{table}\n")
    lines = [f"# Failing cases ({header})", ""]
    for kind in H.KIND_NAMES:
        bad = [o for o in outcomes if o.case.kind == kind and o.failures]
        if bad:
            lines += [f"## {kind} ({len(bad)} failing)", ""]
            lines += [f"- {', '.join(o.failures)}: {o.line()}" for o in bad]
            lines.append("")
    (out / "failures.md").write_text("\n".join(lines))
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=300, help="number of cases (default 300)")
    ap.add_argument("--first", type=int, default=0, help="number of the first case (default 0)")
    ap.add_argument("--case", action="append", metavar="KIND-N", help="run only this case (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every choice of the mutator (default 0)")
    ap.add_argument("--out", type=Path, help="results folder (default: a temporary one, deleted)")
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time (default 2)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds after which a child counts as hung and is killed (default 300)")
    ap.add_argument("--in-process", action="store_true",
                    help="batched in this process like the tests (fast; no hang or signal check)")
    ap.add_argument("--spawn", action="store_true",
                    help="each child a fresh interpreter (python -c 'from medhash.cli import main ...'), "
                         "not a fork of this process (about 4 s a case more)")
    ap.add_argument("--keep", action="store_true", help="keep every case's folder and archive")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="medhash-fuzz-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        warnings.simplefilter("ignore")   # pydicom and numpy warn about what the cases damaged
        t0 = time.perf_counter()
        templates = H.write_templates(out / "cohort")
        cases = cases_of(args)
        work = out / "cases"
        if args.in_process:
            outcomes = run_in_process(cases, templates, work, args.keep)
        else:
            run_children = run_spawned if args.spawn else run_forked
            outcomes = run_children(cases, templates, work, args.jobs, args.timeout, args.keep)
        seconds = time.perf_counter() - t0
        mode = ("in process, batched" if args.in_process else
                f"one {'fresh interpreter' if args.spawn else 'forked child'} per case, {args.jobs} at a time")
        header = (f"{len(outcomes)} cases, seed {args.seed}, {mode}, timeout {args.timeout:g} s: "
                  f"{seconds:.0f} s")
        table = write_results(out, outcomes, header)
        print(header)
        print(table)
        failed = [o for o in outcomes if o.failures]
        if failed:
            print(f"\n{len(failed)} case(s) broke an invariant; see {out / 'failures.md'}"
                  + (" (a temporary folder: use --out to keep it)" if args.out is None else ""))
            for o in failed[:20]:
                print(f"  {', '.join(o.failures)}: {o.line()}"[:400])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
