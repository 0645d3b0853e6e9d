"""Crash harness: `kill -9` at seeded random moments of `medhash ingest`, `index`, `train` and `listen`,
then `medhash check`, then completion (the command run again; for the listener: restarted and the whole
folder sent again) compared with a clean run.

    .venv/bin/python benchmarks/crash.py                          # 3 kills per command, 3 demo patients
    .venv/bin/python benchmarks/crash.py --kills 20 --seed 7      # the issue's long run
    .venv/bin/python benchmarks/crash.py --commands listen --kills 5

Each command is first run cleanly (timed). Then, per kill:

* ingest, train, index: the command starts on the archive state a clean run starts from (empty for ingest;
  ingested for train; ingested and trained for index, an IVF index so that the engine file is exercised)
  and is killed (SIGKILL to the command's own process, as an operator's `kill -9`) after a seeded random
  fraction (5-90 %) of its clean wall time (start-up included); when the command finished before that
  moment (the machine got faster than during the clean run), it is started again from scratch and
  killed after half the delay, up to 4 times (``(finished first)`` when it still finished);
* listen: the listener receives the demo folder over one association (pynetdicom, CT first) and is
  killed right after a seeded random number of acknowledged files; it is restarted with a quiet period
  of 1 s or 600 s (drawn per kill: what the kill left is ingested before the resend and then completed
  by it, or it waits and is ingested with it) and the whole folder is sent again (what a PACS operator
  does; again, up to 4 times, when that association fails midway: ``resends acknowledged``), then it is
  stopped with SIGTERM (which ingests what is spooled).

Columns: ``orphans``, processes of the killed command still alive 0.5 s after the kill (workers that
outlive their parent; they are then killed); ``check after kill``, what `medhash check` says of the
archive as the kill left it (``clean``, or counts of damage / leftover findings); ``check after
completion`` the same after the completion; ``same as clean`` whether the completed archive equals the
clean run's: catalog (series, patients, live slices and positions), CT and dose arrays and structure
masks byte for byte for ingest and listen (with the number of slices superseded by completed series), the checkpoint's sha256 for train, codes, rows and engine file byte for byte for index; else the
first difference (for the listener, slices missing from the completed archive).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MEDHASH = [sys.executable, "-m", "medhash.cli"]
TRAIN = ["train", "--channel", "ct", "--epochs", "2", "--latent-dim", "32", "--seed", "0", "--no-progress"]
INDEX = ["index", "--name", "ivf", "--bits", "64", "--index-type", "ivf", "--nlist", "4", "--no-progress"]
COMMANDS = ("ingest", "train", "index", "listen")
RETRIES = 4
"""Times a kill is tried again, with half the delay, when the command finished before it."""


def medhash(*argv, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*MEDHASH, *map(str, argv)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"medhash {' '.join(map(str, argv))}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc


def command_argv(command: str, arch: Path, demo: Path) -> list[str]:
    if command == "ingest":
        return ["ingest", str(demo), "--archive", str(arch), "--no-progress"]
    return [*(TRAIN if command == "train" else INDEX), "--archive", str(arch)]


def check_summary(arch: Path) -> str:
    """What `medhash check --json` says: ``clean`` or ``2 damage, 1 leftover (where, ...)``."""
    proc = medhash("check", "--archive", arch, "--json", check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    if report["clean"]:
        return "clean"
    bad = [f for f in report["remaining"] if f["kind"] != "note"]
    counts = {k: sum(f["kind"] == k for f in bad) for k in ("damage", "incomplete", "leftover")}
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v) + " (" + \
        "; ".join(sorted({f["where"] for f in bad}))[:90] + ")"


def group_alive(pgid: int) -> int:
    """Processes of process group ``pgid`` still alive (zombies not counted)."""
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            n += 1
    return n


def kill_and_count(proc: subprocess.Popen) -> int:
    """SIGKILL the command's own process; the number of its group's processes alive 0.5 s later (then
    killed too)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    orphans = group_alive(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return orphans


# ---------------------------------------------------------------------- comparisons with the clean run
def same_archive(reference: Path, got: Path) -> str:
    """``"yes"`` when the two archives hold the same series and slices, CT and dose byte for byte; else the
    first difference."""
    from medhash import Archive

    with Archive(reference, read_only=True) as a, Archive(got, read_only=True) as b:
        na, nb = a.info()["slices"], b.info()["slices"]     # live slices: superseded ones are not the archive's
        if na != nb:
            return f"no: {na - nb} of {na} slices missing" if nb < na else f"no: {nb - na} extra slices"
        if a.series_uids() != b.series_uids() or a.patients() != b.patients():
            return "no: other series or patients"
        for pid in a.patients():
            for x, y in zip(a.slices(pid), b.slices(pid)):
                if (x.slice_index, x.z_mm) != (y.slice_index, y.z_mm) or x.ct.tobytes() != y.ct.tobytes():
                    return f"no: {pid}:{x.slice_index} differs"
                if (x.dose is None) != (y.dose is None) or (x.dose is not None and
                                                            x.dose.tobytes() != y.dose.tobytes()):
                    return f"no: dose of {pid}:{x.slice_index} differs"
                if sorted(x.masks) != sorted(y.masks) or any(x.masks[k].tobytes() != y.masks[k].tobytes()
                                                             for k in x.masks):
                    return f"no: structures of {pid}:{x.slice_index} differ"
        if a.info()["structures"] != b.info()["structures"]:
            return "no: other structures"
        healed = b.info()["superseded_slices"]
    return "yes" + (f" ({healed} slices superseded)" if healed else "")


def same_model(reference: Path, got: Path) -> str:
    ref = json.loads((reference / "models" / "ct-shallow" / "config.json").read_text())
    path = got / "models" / "ct-shallow" / "config.json"
    if not path.is_file():
        return "no: no model"
    return "yes" if json.loads(path.read_text())["sha256"] == ref["sha256"] else "no: other weights"


def same_index(reference: Path, got: Path) -> str:
    ra, rb = reference / "indexes" / "ivf", got / "indexes" / "ivf"
    if not (rb / "manifest.json").is_file():
        return "no: no manifest"
    for name in ("codes.u8", "rows.i64", "engine.faissbin"):
        if (ra / name).read_bytes() != (rb / name).read_bytes():
            return f"no: {name} differs"
    return "yes"


SAME = {"ingest": same_archive, "train": same_model, "index": same_index, "listen": same_archive}


# ---------------------------------------------------------------------- ingest, train, index
def prepare(command: str, start: dict[str, Path], dest: Path) -> None:
    """Put the archive a clean run of ``command`` starts from at ``dest``."""
    if command == "ingest":
        return
    shutil.copytree(start[command], dest)


def clean_runs(work: Path, demo: Path, commands: list[str]) -> tuple[dict, dict, dict]:
    """The clean runs of ingest, train and index, one after the other, as far as ``commands`` need them:
    (starting archives, finished archives, wall seconds) per command."""
    start, done, wall = {}, {}, {}
    chain = (("ingest", None), ("train", "ingest"), ("index", "train"))
    last = max(i for i, (c, _) in enumerate(chain) if c in commands or (c == "ingest"))
    for command, before in chain[:last + 1]:
        arch = work / f"clean-{command}"
        if before is not None:
            shutil.copytree(done[before], arch)
            start[command] = done[before]
        t0 = time.perf_counter()
        medhash(*command_argv(command, arch, demo))
        wall[command] = time.perf_counter() - t0
        done[command] = arch
    done["listen"] = done["ingest"]
    return start, done, wall


def one_kill(command: str, k: int, rng: random.Random, work: Path, demo: Path, start, done, wall) -> dict:
    """One kill of ``command``; when the command finished before its kill moment (the machine got faster
    than during the clean run), it starts again from scratch with half the delay, up to RETRIES times."""
    arch = work / f"{command}-{k}"
    frac = rng.uniform(0.05, 0.9)
    for attempt in range(RETRIES + 1):
        shutil.rmtree(arch, ignore_errors=True)
        prepare(command, start, arch)
        delay = wall[command] * frac * 0.5 ** attempt
        proc = subprocess.Popen([*MEDHASH, *command_argv(command, arch, demo)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            break
    orphans = 0 if finished else kill_and_count(proc)
    after_kill = "(finished first)" if finished else check_summary(arch)
    if command == "ingest" and not (arch / "catalog.sqlite").exists():
        after_kill += " (killed before the catalog existed)"
    medhash(*command_argv(command, arch, demo))
    return {"command": command, "kill": k, "at": f"{delay:.2f} s" + (f" (try {attempt + 1})" if attempt else ""), "orphans": orphans, "after_kill": after_kill,
            "after_completion": check_summary(arch), "same": SAME[command](done[command], arch)}


# ---------------------------------------------------------------------- listen
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listener(arch: Path, port: int, quiet_s: float = 1.0) -> subprocess.Popen:
    """``medhash -v listen`` on ``arch``; its log is appended to ``arch`` + ``.log`` (beside the archive)."""
    proc = subprocess.Popen([*MEDHASH, "-v", "listen", "--archive", str(arch), "--port", str(port), "--quiet",
                             str(quiet_s)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    log = open(arch.with_name(arch.name + ".log"), "a", encoding="utf-8")
    head = ""
    while "receiving DICOM" not in head:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"the listener did not start: {head}")
        head += line
    log.write(head)

    def drain() -> None:
        with log:
            for line in proc.stderr:
                log.write(line)
    threading.Thread(target=drain, daemon=True).start()
    return proc


def send(files: list[Path], port: int, on_ack=None) -> int:
    """C-STORE ``files`` over one association; ``on_ack(n)`` after each acknowledged file (it may kill the
    listener). Returns the number acknowledged."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title="CRASHTEST")
    for uid in sorted({str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}):
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDHASH")
    acked = 0
    if not assoc.is_established:
        print(f"association to the listener on port {port} failed", file=sys.stderr, flush=True)
    try:
        for f in files:
            t0 = time.monotonic()
            status = assoc.send_c_store(pydicom.dcmread(f)) if assoc.is_established else None
            if not status or status.Status != 0x0000:
                print(f"file {acked + 1} ({f.name}) not stored after {time.monotonic() - t0:.1f} s: "
                      f"{status or 'no response, association ended'}", file=sys.stderr, flush=True)
                break
            acked += 1
            if on_ack is not None and on_ack(acked):
                break
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return acked


def demo_files(demo: Path) -> list[Path]:
    return [f for pt in sorted(p for p in demo.iterdir() if p.is_dir())
            for f in sorted(pt.glob("*.dcm"), key=lambda f: (not f.name.startswith("CT_"), f.name))]


def stop_listener(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def one_listener_kill(k: int, rng: random.Random, work: Path, demo: Path, done) -> dict:
    files = demo_files(demo)
    arch, port = work / f"listen-{k}", free_port()
    proc = start_listener(arch, port)
    kill_at = rng.randint(1, len(files) - 1)
    killed = {}

    def on_ack(n: int) -> bool:
        if n == kill_at:
            killed["orphans"] = kill_and_count(proc)
            return True
        return False
    send(files, port, on_ack)
    if "orphans" not in killed:
        killed["orphans"] = kill_and_count(proc)
    after_kill = check_summary(arch)
    port = free_port()     # the killed listener's port may still be held by the kernel
    # restarted with a quiet period of 1 s (what the kill left may be ingested before the resend, then
    # completed by it) or 600 s (it waits, and is ingested with the resend), drawn per kill
    quiet = rng.choice((1.0, 600.0))
    proc = start_listener(arch, port, quiet)
    resends = []
    try:
        for _ in range(RETRIES):   # an association that failed midway (a timeout on a loaded machine): again
            resends.append(send(files, port))
            if resends[-1] == len(files):
                break
    finally:
        stop_listener(proc)
    cut = "" if resends == [len(files)] else f", resends acknowledged {'+'.join(map(str, resends))} files"
    return {"command": "listen", "kill": k, "at": f"file {kill_at}/{len(files)}, quiet {quiet:g} s{cut}",
            "orphans": killed["orphans"],
            "after_kill": after_kill, "after_completion": check_summary(arch), "same": same_archive(done["listen"], arch)}


# ---------------------------------------------------------------------- the table
def table(rows: list[dict], wall: dict) -> str:
    out = ["| command | kill | killed at | orphans | check after kill | check after completion | same as clean |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['command']} | {r['kill']} | {r['at']} | {r['orphans']} | {r['after_kill']} | "
                   f"{r['after_completion']} | {r['same']} |")
    out.append("")
    out.append("| command | kills | killed while running | orphans (total) | clean after completion | same as clean "
               "| clean run |")
    out.append("|---|---|---|---|---|---|---|")
    for command in dict.fromkeys(r["command"] for r in rows):
        mine = [r for r in rows if r["command"] == command]
        killed = sum(not r["after_kill"].startswith("(finished first)") for r in mine)
        out.append(f"| {command} | {len(mine)} | {killed} | {sum(r['orphans'] for r in mine)} | "
                   f"{sum(r['after_completion'] == 'clean' for r in mine)} / {len(mine)} | "
                   f"{sum(r['same'].startswith('yes') for r in mine)} / {len(mine)} | "
                   f"{f'{wall[command]:.1f} s' if command in wall else '-'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3, help="kills per command (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    ap.add_argument("--patients", type=int, default=3, help="demo patients (default 3)")
    ap.add_argument("--rows", type=int, default=96, help="demo CT matrix rows (default 96)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, of " + ", ".join(COMMANDS))
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    commands = [c for c in args.commands.split(",") if c]
    if set(commands) - set(COMMANDS):
        ap.error(f"--commands: of {', '.join(COMMANDS)}")
    from medhash.demo import write_demo_cohort

    work = args.keep or Path(tempfile.mkdtemp(prefix="medhash-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    try:
        write_demo_cohort(work / "demo", n_patients=args.patients, rows=args.rows)
        start, done, wall = clean_runs(work, work / "demo", commands)
        rows = []
        for command in commands:
            for k in range(args.kills):
                if command == "listen":
                    rows.append(one_listener_kill(k, rng, work, work / "demo", done))
                else:
                    rows.append(one_kill(command, k, rng, work, work / "demo", start, done, wall))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        print(table(rows, wall))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
