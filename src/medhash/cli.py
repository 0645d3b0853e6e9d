"""The ``medhash`` command line: a thin shell over the Python API (no logic of its own).

Exit codes (also in the README): 0 success; 1 some inputs could not be used (each reported, the
rest done); 2 bad command line; 3 archive problem (missing, locked, damaged); 4 no usable input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ArchiveError, MedhashError, NotFoundError
from .errors import EXIT_ARCHIVE, EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL
from .ingest.pipeline import FORMATS

MAX_LISTED = 20

EPILOG = """exit codes: 0 success · 1 some inputs could not be used (each reported) · 2 bad command line ·
3 archive missing, locked or damaged · 4 no usable input"""


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _print_problems(problems, stream=None) -> None:
    stream = stream or sys.stderr
    for level in ("error", "warning"):
        items = [p for p in problems if p.level == level]
        for p in items[:MAX_LISTED]:
            print(f"{level}: {p.path}: {p.message}", file=stream)
        if len(items) > MAX_LISTED:
            print(f"{level}: ... and {len(items) - MAX_LISTED} more {level}s (use --json for the full list)",
                  file=stream)


def cmd_ingest(args: argparse.Namespace) -> int:
    from .store.archive import Archive

    archive = Archive(args.archive, create=True)
    report = archive.ingest(args.sources, format=args.format, progress=not args.no_progress,
                            pseudonymise=args.pseudonymise)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_problems(report.problems)
        print(f"ingested {report.series_added} series ({report.slices_added} slices with body, "
              f"{report.slices_skipped_no_body} without body skipped) from {len(set(report.patients))} patient(s); "
              f"{report.series_existing} series already in the archive; "
              f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        print(f"archive: {archive.path} ({len(archive)} slices)")
    code = report.exit_code
    if code == EXIT_NO_INPUT and not args.json:
        print("nothing was ingested: no usable DICOM CT series or OpenKBP patient found", file=sys.stderr)
    return code


def cmd_keygen(args: argparse.Namespace) -> int:
    from .ingest.pseudonymise import make_key

    path = make_key(args.keyfile)
    print(f"wrote a new pseudonymisation key to {path} (mode 0600); keep it safe and private: the same key "
          "gives the same pseudonyms, and without it new data cannot be linked to what is archived")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .store.archive import Archive

    info = Archive(args.archive).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"archive            {info['archive']}")
    print(f"patients           {info['patients']}")
    print(f"series             {info['series']}  ({', '.join(f'{k}: {v}' for k, v in info['sources'].items()) or '-'})")
    print(f"slices             {info['slices']}")
    print(f"slices with dose   {info['slices_with_dose']}")
    print(f"skipped slices     {info['skipped']['no_body']} without body (< 1 % of the grid above -500 HU)")
    if info["possible_dose_mask_slices"]:
        print(f"possible-dose mask {info['possible_dose_mask_slices']} slices")
    print(f"size on disk       {_human_bytes(info['size_bytes'])}")
    g = info["grid"]
    print(f"model grid         {g.get('size')} x {g.get('size')} pixels of {g.get('spacing_mm')} mm")
    if info["structures"]:
        print("structures         (slices showing each)")
        width = max(len(k) for k in info["structures"])
        for name, count in info["structures"].items():
            print(f"  {name:<{width}}  {count}")
    else:
        print("structures         none")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_cohort

    folders = write_demo_cohort(args.out, n_patients=args.patients, seed=args.seed)
    print(f"wrote {len(folders)} synthetic patients as DICOM (CT, RTDOSE, RTSTRUCT) to {args.out}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .features import train_model

    archive = Archive(args.archive)
    res = train_model(archive, args.channel, args.arch, epochs=args.epochs, batch_size=args.batch_size,
                      latent_dim=args.latent_dim, seed=args.seed, name=args.name, progress=not args.no_progress)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return EXIT_OK
    print(f"model {res['name']}: {res['channel']} {res['arch']}, latent {res['latent_dim']}, "
          f"{res['epochs_run']} epochs (best {res['best_epoch']}{', stopped early' if res.get('stopped_early') else ''}), "
          f"{res['n_train_slices']} training / {res['n_val_slices']} held-out slices "
          f"({len(res['val_patients'])} held-out patient(s))")
    print(f"held-out reconstruction: MSE {res['held_out_mse']:.5f}, PSNR {res['held_out_psnr']:.2f} dB "
          f"({res['validation']}); {res['seconds']:.0f} s, {res['seconds_per_epoch']:.1f} s an epoch")
    print(f"saved in {res['path']}")
    return EXIT_OK


def cmd_index(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .retrieval.index import build_index

    archive = Archive(args.archive)
    gamma = args.gamma if args.gamma == "auto" else _positive_float(args.gamma, "--gamma")
    weights = {}
    if args.ct_weight is not None:
        weights["ct"] = args.ct_weight
    if args.dose_weight is not None:
        weights["dose"] = args.dose_weight
    models = {k: v for k, v in (("ct", args.ct_model), ("dose", args.dose_model)) if v}
    params = {"nlist": args.nlist, "nprobe": args.nprobe, "M": args.M, "ef_search": args.ef_search,
              "ef_construction": args.ef_construction}
    if args.nlist not in (None, "auto"):
        try:
            params["nlist"] = int(args.nlist)
        except ValueError:
            raise MedhashError(f"--nlist must be 'auto' or a whole number, not {args.nlist!r}") from None
    hasher_params = {"epochs": args.epochs} if args.epochs is not None else None
    if hasher_params and args.hasher != "trained":
        raise MedhashError("--epochs applies to --hasher trained")
    man = build_index(archive, args.name, args.channel, args.bits, gamma, args.seed, models=models or None,
                      hasher=args.hasher, hasher_params=hasher_params,
                      weights=weights or None, rebuild=args.rebuild, progress=not args.no_progress,
                      index_type=args.index_type,
                      index_params={k: v for k, v in params.items() if v is not None} or None,
                      backend={"type": args.backend, "uri": args.uri, "collection": args.collection})
    if args.json:
        print(json.dumps(man, indent=2))
        return EXIT_OK
    models_txt = ", ".join(f"{ch}: {m['name']}" for ch, m in man["models"].items())
    hasher = (man.get("hasher") or {}).get("name", "kernel-lsh")
    gamma_txt = (f", gamma {man['gamma_']:.4g} ({'auto' if man['gamma'] == 'auto' else 'given'})"
                 if man.get("gamma_") is not None else "")
    print(f"index {man['name']}: {man['channel']}, {man['n_bits']} bits, hasher {hasher}{gamma_txt}, "
          f"seed {man['seed']}, models {models_txt}")
    eng = man.get("engine") or {}
    be = man.get("backend") or {}
    if be.get("type") == "milvus":
        print(f"backend Milvus: {be['uri']}, collection {be['collection']}, {be['index']} / {be['metric']}")
    if man.get("index_type", "flat") != "flat":
        print(f"engine {man['index_type']}: " + ", ".join(f"{k} {v}" for k, v in eng.items() if k != "index_type"))
    print(f"{man['added']} slices added, {man['items']} in the index "
          f"({man['code_bytes']} bytes a slice, {man['feature_dim'] * 4} bytes as float features)")
    return EXIT_OK


def _positive_float(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MedhashError(f"{flag} must be 'auto' or a positive number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise MedhashError(f"{flag} must be 'auto' or a positive number, not {text!r}")
    return value


def cmd_search(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .retrieval.search import parse_query, search

    archive = Archive(args.archive)
    if (args.query is None) == (args.patient is None):
        raise MedhashError("give a QUERY (one slice) or --patient PID|FOLDER (patient-level search), not both")
    if args.patient is not None:
        return _patient_search(archive, args)
    query = parse_query(archive, args.query, dose=args.dose, slice_index=args.slice)
    res = search(archive, query, index=args.index, k=args.k, rerank=args.rerank, same_patient=args.same_patient)
    if args.png:
        from .render import render_search
        render_search(archive, res, query, args.png)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    q = res["query"]
    label = f"{q['patient_id']}:{q['slice_index']}" if q["type"] == "archive" else q["file"]
    print(f"query {label}  index {res['index']} ({res['channel']}, {res['n_bits']} bits)  k {res['k']}"
          + (f"  re-ranked from {res['rerank']}" if res["rerank"] else "")
          + ("" if res["same_patient"] else "  other patients only"))
    rer = res["rerank"] > 0
    print(f"{'rank':>4}  {'patient':<14} {'slice':>5} {'z_mm':>8} {'hamming':>7}" + ("  euclidean" if rer else ""))
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['patient_id']:<14} {r['slice_index']:>5} {r['z_mm']:>8.1f} {r['hamming']:>7}"
              + (f"  {r['euclidean']:>9.4f}" if rer else ""))
    t = res["timing_ms"]
    print(f"time: encode {t['encode']:.1f} ms, search {t['search']:.1f} ms")
    if args.png:
        print(f"picture: {args.png}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .web import TOKEN_ENV, create_app

    import uvicorn

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.max_upload_mb <= 0:
        raise MedhashError(f"--max-upload-mb must be positive, not {args.max_upload_mb}")
    app = create_app(args.archive, token=token, max_upload=int(args.max_upload_mb * 2 ** 20))
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach this port can search the "
              f"archive; use --token or ${TOKEN_ENV}", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"medhash: serving {args.archive} at http://{host}:{args.port}/ (API schema: /api/openapi.json"
          f"{', token required' if token else ''}); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if not args.verbose else "info")
    return EXIT_OK


def _patient_search(archive, args: argparse.Namespace) -> int:
    from .retrieval.patients import patient_search

    folder = Path(args.patient)
    is_series = folder.is_dir()
    res = patient_search(archive, patient=None if is_series else args.patient, series=folder if is_series else None,
                         dose=args.dose, index=args.index, k=args.k, per_slice=args.per_slice, rerank=args.rerank,
                         tolerance_mm=args.tolerance_mm)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    q = res["query"]
    label = q["patient_id"] if q["type"] == "archive" else q["folder"]
    print(f"patient query {label} ({res['query_slices_searched']} slices searched)  index {res['index']} "
          f"({res['channel']}, {res['n_bits']} bits)  {res['per_slice']} neighbours a slice, z tolerance "
          f"{res['tolerance_mm']:g} mm")
    print(f"{'rank':>4}  {'patient':<14} {'score':>6} {'matched':>7} {'z offset mm':>11}")
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['patient_id']:<14} {r['patient_score']:>6.3f} {r['matched_slices']:>7} "
              f"{r['z_offset_mm']:>11.1f}")
    for r in res["results"][:3]:
        pairs = r["pairs"][::max(1, len(r["pairs"]) // 6)][:6]
        txt = ", ".join(f"{p['query_slice_index']}->{p['slice_index']} (H {p['hamming']})" for p in pairs)
        print(f"  {r['patient_id']}: query slice -> matched slice, e.g. {txt}")
    return EXIT_OK


def cmd_listen(args: argparse.Namespace) -> int:
    from .net import Listener

    if args.quiet < 0:
        raise MedhashError(f"--quiet must be 0 or more seconds, not {args.quiet}")
    net_log = logging.getLogger("medhash.net")
    if not args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        net_log.addHandler(handler)
        net_log.propagate = False
    net_log.setLevel(logging.INFO)
    listener = Listener(args.archive, ae_title=args.ae_title, host=args.host, port=args.port,
                        allow_ae=args.allow_ae, pseudonymise=args.pseudonymise, quiet_s=args.quiet)
    listener.start()
    print(f"medhash: receiving DICOM as {listener.ae_title} on {args.host}:{listener.port} into {args.archive} "
          f"(CT, RTDOSE, RTSTRUCT, RTPLAN; ingest {args.quiet:g} s after a transfer ends); Ctrl-C stops",
          file=sys.stderr, flush=True)
    listener.serve_forever()
    s = listener.stats
    print(f"stopped: {s['associations']} association(s), {s['files']} file(s) received, {s['series_ingested']} "
          f"series ingested ({s['slices_ingested']} slices), {s['errors']} error(s)", file=sys.stderr)
    return EXIT_PARTIAL if s["errors"] else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .retrieval.index import export_index

    files = export_index(Archive(args.archive), args.index, args.out)
    for kind, path in files.items():
        print(f"{kind:<9} {path}")
    return EXIT_OK


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, e.g. 1,10,100; got {text!r}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .evaluate import evaluate

    if args.index and args.channel:
        raise MedhashError("give --index or --channel, not both (an index fixes its channel)")
    archive = Archive(args.archive)
    gamma = args.gamma if args.gamma == "auto" else _positive_float(args.gamma, "--gamma")
    m = evaluate(archive, args.out, index=args.index, channel=args.channel, queries=args.queries, bits=args.bits,
                 ks=args.k, seed=args.seed, gamma=gamma, rerank=args.rerank, quick=args.quick,
                 progress=not args.no_progress, command="medhash " + " ".join(sys.argv[1:]),
                 dose_prediction=args.dose_prediction, dose_k=args.dose_k, compare_hashers=args.compare_hashers)
    s = m["overlap"]["summary"]
    kr = m["parameters"]["k_reference"]
    print(f"report: {Path(args.out) / 'report.html'}  (metrics.json and {len(list(Path(args.out).glob('*.png')))} "
          f"PNGs beside it; {m['elapsed_s']['total_s']:.0f} s)")
    print(f"features {m['features']['channel']} ({m['features']['dim']} floats), {m['parameters']['queries']} "
          f"queries, gamma {m['gamma']['fitted']:.4g}")
    for b in m["parameters"]["bits"]:
        inc, exc = s["included"]["dice"][str(b)][str(kr)], s["excluded"]["dice"][str(b)][str(kr)]
        print(f"  Dice@{kr} {b:>6} bits: {inc['mean']:.3f} (same patient included), {exc['mean']:.3f} (excluded)")
    rel = m["relevance"]
    k10 = "10" if "10" in rel["organ"]["methods"]["euclidean"]["jaccard"] else str(m["parameters"]["ks"][-1])
    oj = rel["organ"]["methods"]
    if oj["euclidean"]["jaccard"][k10] is not None:
        print(f"  organ-set Jaccard@{k10}, other patients: Euclidean {oj['euclidean']['jaccard'][k10]:.3f}, "
              f"Hamming {oj['hamming']['jaccard'][k10]:.3f}, re-ranked {oj['rerank']['jaccard'][k10]:.3f}, "
              f"random {oj['random']['jaccard'][k10]:.3f}")
    dz = rel["dose"]
    if dz["zero"] is not None:
        print(f"  dose MAE of the top-{k10} mean: Euclidean {dz['mae']['euclidean'][k10]:.2f} Gy, Hamming "
              f"{dz['mae']['hamming'][k10]:.2f} Gy, re-ranked {dz['mae']['rerank'][k10]:.2f} Gy; predicting 0 Gy "
              f"{dz['zero']:.2f} Gy")
    L = m.get("dose_prediction")
    if L:
        print(f"  dose from the {L['k']} most similar patients, leave-one-patient-out over {len(L['patients'])} "
              f"patients (OpenKBP dose / DVH score, Gy):")
        for name, v in L["methods"].items():
            print(f"    {name:<40} {v['dose_score']:.2f} / {v['dvh_score']:.2f}")
    return EXIT_OK


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MedhashError(f"--pacs must be HOST:PORT (e.g. pacs.example.org:4242), not {text!r}")
    return host.strip("[]"), int(port)


def _dicomweb_auth(args: argparse.Namespace) -> dict:
    """The Authorization header of `medhash pull --dicomweb` from --dicomweb-user / --dicomweb-token-file
    or the environment; credentials are never taken from the command line itself."""
    from .net.pull import dicomweb_headers

    token = None
    if args.dicomweb_token_file is not None:
        try:
            token = args.dicomweb_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MedhashError(f"cannot read the DICOMweb token file {args.dicomweb_token_file}: "
                               f"{exc.strerror or exc}") from None
    elif os.environ.get("MEDHASH_DICOMWEB_TOKEN") and args.dicomweb_user is None:
        token = os.environ["MEDHASH_DICOMWEB_TOKEN"]
    password = None
    if args.dicomweb_user is not None:
        password = os.environ.get("MEDHASH_DICOMWEB_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise MedhashError(f"no password for DICOMweb user {args.dicomweb_user!r}: set "
                                   "$MEDHASH_DICOMWEB_PASSWORD (there is no terminal to ask on)")
            import getpass
            password = getpass.getpass(f"DICOMweb password for {args.dicomweb_user}: ")
    return dicomweb_headers(args.dicomweb_user, password, token)


def cmd_pull(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .net.pull import pull_dicomweb, pull_dimse

    if not args.verbose:  # pynetdicom logs every refused connection as ERROR; our message says it once
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    if (args.pacs is None) == (args.dicomweb is None):
        raise MedhashError("give --pacs HOST:PORT (DIMSE) or --dicomweb URL, one of them")
    if (args.patient is None) == (args.study is None):
        raise MedhashError("give --patient ID or --study UID, one of them")
    # an existing archive is checked before the network is asked; a new one is created only when data arrived
    archive = Archive(args.archive, create=True) if args.archive.exists() else args.archive
    if args.pacs is not None:
        if args.dicomweb_user is not None or args.dicomweb_token_file is not None:
            raise MedhashError("--dicomweb-user and --dicomweb-token-file apply to --dicomweb, not to --pacs")
        if not args.aec:
            raise MedhashError("--pacs needs --aec, the PACS's AE title (e.g. ORTHANC)")
        host, port = _host_port(args.pacs)
        report = pull_dimse(archive, host, port, args.aec, args.aet, patient=args.patient, study=args.study,
                            move_port=args.move_port, progress=not args.no_progress, pseudonymise=args.pseudonymise,
                            method="get" if args.get else ("move" if args.no_get_fallback else "auto"),
                            timeout=args.timeout)
    else:
        if args.aec or args.get:
            raise MedhashError("--aec and --get apply to --pacs, not to --dicomweb")
        report = pull_dicomweb(archive, args.dicomweb, patient=args.patient, study=args.study,
                               progress=not args.no_progress, pseudonymise=args.pseudonymise, timeout=args.timeout,
                               headers=_dicomweb_auth(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return report.exit_code
    what = f"patient {args.patient}" if args.patient is not None else f"study {args.study}"
    if not report.studies:
        print(f"nothing found on {report.source} for {what}: nothing was ingested", file=sys.stderr)
        return report.exit_code
    for f in report.failed[:MAX_LISTED]:
        print(f"error: {f['what']}: {f['reason']}", file=sys.stderr)
    if len(report.failed) > MAX_LISTED:
        print(f"error: ... and {len(report.failed) - MAX_LISTED} more (use --json for the full list)", file=sys.stderr)
    print(f"pulled {what} from {report.source} by {report.method}: {len(report.studies)} study(ies) found, "
          f"{report.files_received} file(s) received, {len(report.failed)} failed")
    rep = report.ingest
    if rep is None:
        print("nothing arrived: nothing was ingested", file=sys.stderr)
        return report.exit_code
    _print_problems(rep.problems)
    archive = archive if isinstance(archive, Archive) else Archive(args.archive)
    print(f"ingested {rep.series_added} series ({rep.slices_added} slices with body, "
          f"{rep.slices_skipped_no_body} without body skipped); {rep.series_existing} series already in the archive; "
          f"{len(rep.errors)} error(s), {len(rep.warnings)} warning(s)")
    print(f"archive: {archive.path} ({len(archive)} slices)")
    if report.exit_code == EXIT_NO_INPUT:
        print("nothing was ingested: no usable DICOM CT series arrived", file=sys.stderr)
    return report.exit_code


def cmd_predict_dose(args: argparse.Namespace) -> int:
    from .store.archive import Archive
    from .dose.prediction import predict_dose, write_prediction

    archive = Archive(args.archive)
    folder = Path(args.patient)
    is_series = folder.is_dir()
    pred = predict_dose(archive, patient=None if is_series else args.patient, series=folder if is_series else None,
                        dose=args.dose, index=args.index, k=args.k, per_slice=args.per_slice, rerank=args.rerank,
                        tolerance_mm=args.tolerance_mm, weighting=args.weighting, match=args.match,
                        pool=args.pool or None)
    files = write_prediction(pred, args.out)
    q = pred.query
    print(f"predicted dose for {q.get('patient_id') or q.get('folder')}: {len(pred.z_mm)} slices, max "
          f"{float(pred.dose.max()):.1f} Gy; slices covered by at least one patient: "
          f"{int((pred.coverage > 0).sum())} of {len(pred.coverage)}")
    for p in pred.patients:
        print(f"  from {p['patient_id']:<14} score {p['patient_score']:.3f}  z offset {p['z_offset_mm']:+.1f} mm  "
              f"{p['slices_used']} slices")
    if not is_series:
        from .evaluate.doseloo import own_dose_score
        sc = own_dose_score(archive, pred, args.patient)
        if sc is not None:
            where = "possible-dose mask" if sc["possible_dose_mask"] else "body"
            print(f"  against its own dose: OpenKBP dose score {sc['dose_score']:.2f} Gy ({where}; predicting 0 Gy: "
                  f"{sc['zero']:.2f} Gy)")
    for kind, path in files.items():
        print(f"{kind:<7} {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medhash",
        description="Content-based image retrieval for radiotherapy: find earlier patients' CT slices "
                    "(and their dose) that look like a new one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medhash {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, examples: str, **kwargs) -> argparse.ArgumentParser:
        """A subcommand whose --help ends with its examples and the exit codes."""
        return sub.add_parser(name, epilog=examples.rstrip("\n") + "\n" + EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    p = command("ingest", help="add DICOM RT or OpenKBP data to an archive",
                description="Read CT series with their RTDOSE and RTSTRUCT (DICOM, matched by frame of "
                            "reference) or OpenKBP patient folders, resample each axial slice onto the "
                            "128 x 128 model grid and add it to the archive. Series already in the archive "
                            "are not read again. Problems are reported with their file and the rest goes on.",
                examples="example: medhash ingest /data/export --archive ./archive\n")
    p.add_argument("sources", nargs="+", metavar="SOURCE", type=Path,
                   help="files or folders (searched recursively)")
    p.add_argument("--archive", required=True, type=Path, help="archive directory (created if missing)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="input format; auto: OpenKBP where pt_*/ct.csv folders are found, else DICOM")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--pseudonymise", metavar="KEYFILE", type=Path, default=None,
                   help="pseudonymise on the way in with this key (see `medhash keygen`): PatientID -> keyed "
                        "pseudonym, UIDs remapped consistently, dates shifted per patient, identifying free "
                        "text and private elements removed (README: Pseudonymisation)")
    p.set_defaults(func=cmd_ingest)

    p = command("keygen", help="create a pseudonymisation key file",
                description="Write 32 random bytes to KEYFILE (mode 0600) for `medhash ingest --pseudonymise "
                            "KEYFILE`. An existing file is never overwritten. Keep the key safe: the same key "
                            "gives the same pseudonyms on every run.",
                examples="example: medhash keygen ./medhash.key && "
                         "medhash ingest demo-data --archive ./archive --pseudonymise ./medhash.key\n")
    p.add_argument("keyfile", metavar="KEYFILE", type=Path, help="key file to create")
    p.set_defaults(func=cmd_keygen)

    p = command("info", help="summarise an archive",
                description="Patients, series, slices, slices with dose, structures, skipped slices and "
                            "size on disk of an archive.",
                examples="example: medhash info --archive ./archive --json\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--json", action="store_true",
                   help="print JSON (keys: patients, series, slices, slices_with_dose, structures, ...)")
    p.set_defaults(func=cmd_info)

    p = command("demo", help="write the synthetic demo cohort as DICOM",
                description="Write deterministic synthetic head-and-neck phantoms (CT series, RTDOSE, "
                            "RTSTRUCT) as real DICOM files, to try medhash without patient data.",
                examples="example: medhash demo --out demo-data && "
                         "medhash ingest demo-data --archive demo-archive\n")
    p.add_argument("--out", required=True, type=Path, help="folder to write (one sub-folder per patient)")
    p.add_argument("--patients", type=int, default=6, help="number of patients (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)

    p = command("train", help="train an auto-encoder for CT or dose slices",
                description="Train a convolutional auto-encoder on the archive's slices (validation split by "
                            "patient, early stopping) and store it in ARCHIVE/models/NAME. Its encoder gives "
                            "the feature vector of a slice.",
                examples="example: medhash train --archive ./archive --channel ct --arch shallow --epochs 10\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--channel", choices=("ct", "dose"), default="ct", help="what the model sees (default ct)")
    p.add_argument("--arch", choices=("shallow", "deep"), default="shallow", help="architecture (default shallow)")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs (early stopping may end sooner; default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--latent-dim", type=int, default=128, help="feature length (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batches")
    p.add_argument("--name", help="model name (default CHANNEL-ARCH, e.g. ct-shallow)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = command("index", help="hash the slices' features into a named Hamming index",
                description="Encode the archive's slices with the trained model(s), hash the features with "
                            "kernel LSH and store the codes as index NAME. Run it again after an ingest: only "
                            "the new slices are encoded and added.",
                examples="examples:\n  medhash index --archive ./archive --name ct256 --channel ct --bits 256\n"
                         "  medhash index --archive ./archive --name joint --channel ct+dose --bits 1024\n"
                         "  medhash index --archive ./archive --name big --bits 256 --index-type ivf --nprobe 64\n"
                         "  medhash index --archive ./archive --name mv --bits 256 --backend milvus --uri ./milvus.db\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--name", required=True, help="index name (a folder under ARCHIVE/indexes)")
    p.add_argument("--channel", choices=("ct", "dose", "ct+dose"), default="ct",
                   help="features hashed: CT, dose, or both concatenated (default ct)")
    p.add_argument("--bits", type=int, default=256, help="code length, 1 to 16384 (default 256)")
    p.add_argument("--gamma", default="auto", help="kernel parameter, or auto = 4 / median squared distance of "
                                                   "random pairs (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash draws (default 0)")
    p.add_argument("--ct-model", help="CT model name (default: the newest CT model)")
    p.add_argument("--dose-model", help="dose model name (default: the newest dose model)")
    p.add_argument("--ct-weight", type=float, help="weight of the CT block in ct+dose (default 1)")
    p.add_argument("--dose-weight", type=float, help="weight of the dose block in ct+dose (default 1)")
    p.add_argument("--hasher", choices=("kernel-lsh", "itq", "pca-sign", "trained"), default="kernel-lsh",
                   help="how features become bits: kernel-lsh (default, Raginsky & Lazebnik), itq or pca-sign "
                        "(bits <= feature length), trained (kernel LSH whose w, b are learned; see README)")
    p.add_argument("--epochs", type=int, help="trained hasher: training epochs (default 10)")
    p.add_argument("--index-type", choices=("flat", "ivf", "hnsw"), default="flat",
                   help="search engine: flat = exact scan (default; up to a few million slices), ivf or hnsw = "
                        "approximate, for 10^7 and more")
    p.add_argument("--nlist", help="ivf: inverted lists (default auto: the power of two nearest 4 sqrt(n))")
    p.add_argument("--nprobe", type=int, help="ivf: lists scanned per query (default 32)")
    p.add_argument("--M", type=int, help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidates kept while searching (default 128)")
    p.add_argument("--ef-construction", type=int, help="hnsw: candidates kept while building (default 80)")
    p.add_argument("--backend", choices=("local", "milvus"), default="local",
                   help="where searches run: local faiss engine (default) or a Milvus collection")
    p.add_argument("--uri", help="milvus: a Milvus Lite file (./milvus.db) or a server (http://HOST:19530)")
    p.add_argument("--collection", help="milvus: collection name (default medhash_NAME)")
    p.add_argument("--rebuild", action="store_true", help="build again from scratch (after retraining a model)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_index)

    p = command("search", help="find the archive slices most similar to a query",
                description="QUERY is PATIENT:SLICE (an archive slice), a DICOM CT slice file, a DICOM series "
                            "folder (with --slice), or a PNG/NPY image (PNG grey 0..255 = -1000..1000 HU; NPY "
                            "in HU). Archive queries leave out the query's own patient unless "
                            "--include-same-patient.",
                examples="examples:\n  medhash search --archive ./archive pt_1:60 --k 10 --png results.png\n"
                         "  medhash search --archive ./archive CT_0042.dcm --dose RD.dcm --index joint --json\n"
                         "  medhash search --archive ./archive --patient pt_7 --k 5          # similar patients\n"
                         "  medhash search --archive ./archive --patient /data/new/CT --index ct256\n")
    p.add_argument("query", metavar="QUERY", nargs="?")
    p.add_argument("--patient", metavar="PID|FOLDER",
                   help="patient-level search: rank the other patients like an archive patient or a DICOM CT "
                        "series folder (with --dose for dose indexes); --k patients")
    p.add_argument("--per-slice", type=int, default=20,
                   help="patient-level: slice neighbours per query slice (default 20)")
    p.add_argument("--tolerance-mm", type=float, default=10.0,
                   help="patient-level: z alignment tolerance of matched slices (default 10 mm)")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--index", help="index name (default: the archive's only index)")
    p.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--rerank", type=int, default=0, metavar="N",
                   help="re-rank the Hamming top-N by exact Euclidean distance of the features (default 0: off)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--exclude-same-patient", dest="same_patient", action="store_false", default=None,
                   help="leave out the query's own patient (the default for archive queries)")
    g.add_argument("--include-same-patient", dest="same_patient", action="store_true",
                   help="also return slices of the query's own patient")
    p.add_argument("--dose", type=Path, help="RTDOSE (DICOM query) or dose image in Gy (NPY) for ct+dose / dose indexes")
    p.add_argument("--slice", type=int, help="slice of a series folder query (0-based, position order)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--png", type=Path, help="write a picture: the query and the results with isodose lines")
    p.set_defaults(func=cmd_search)

    p = command("evaluate", help="measure retrieval quality and write an HTML report",
                description="Reproduce the talk's analysis for this archive and go beyond it: overlap of "
                            "Hamming and Euclidean neighbours (Dice, Jaccard; violins and curves against k), "
                            "Hamming against Euclidean distance with the closed form and a gamma sweep, "
                            "reconstructions (also 3D), retrieval grids, cross-patient organ relevance, dose "
                            "from neighbours and timings. Writes OUT/report.html, OUT/metrics.json (schema: "
                            "docs/metrics-schema.md) and the PNGs. Needs trained model(s).",
                examples="examples:\n  medhash evaluate --archive ./archive --channel ct --out report\n"
                         "  medhash evaluate --archive ./archive --index joint256 --quick --out quick-report\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--index", help="evaluate the features of this index (its models, scales, weights)")
    p.add_argument("--channel", choices=("ct", "dose", "ct+dose"),
                   help="evaluate the newest model(s) of this channel (default ct when no --index)")
    p.add_argument("--queries", type=int, help="query slices drawn with --seed (default 400; --quick 40)")
    p.add_argument("--bits", type=_int_list, help="code lengths, comma-separated (default 1,10,100,1000,10000)")
    p.add_argument("--k", type=_int_list, help="numbers retrieved, comma-separated (default 1,5,10,20,50,100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the queries, hashers and baselines (default 0)")
    p.add_argument("--gamma", default="auto", help="kernel width, or auto (default)")
    p.add_argument("--rerank", type=int, default=500, metavar="N",
                   help="depth of the Hamming shortlist re-ranked by Euclidean distance (default 500)")
    p.add_argument("--quick", action="store_true", help="a small fast run (about a minute on a small archive)")
    p.add_argument("--dose-prediction", action="store_true",
                   help="also score dose from similar patients leave-one-patient-out (OpenKBP dose and DVH scores)")
    p.add_argument("--compare-hashers", action="store_true",
                   help="also compare kernel-lsh, pca-sign, itq and trained hashers (Dice@k against bits)")
    p.add_argument("--dose-k", type=int, default=10,
                   help="similar patients considered for --dose-prediction (default 10; the 5 nearest per slice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = command("pull", help="fetch a patient or study from a PACS (DIMSE or DICOMweb) and ingest it",
                description="Query a PACS for a patient's studies (or one study) and retrieve them into a temporary "
                            "folder that is then ingested (as `medhash ingest`). DIMSE (--pacs): C-FIND, then "
                            "C-MOVE to a storage SCP that medhash runs during the pull with AE title --aet on "
                            "--move-port (the PACS must know that AE title with this host and port), falling back "
                            "to C-GET when the PACS refuses the C-MOVE; --get uses C-GET only (nothing to "
                            "configure on the PACS). DICOMweb (--dicomweb): QIDO-RS, then WADO-RS per series. "
                            "What failed is listed; what arrived is ingested. Details: docs/pacs-pull.md.",
                examples="examples:\n"
                         "  medhash pull --archive ./archive --pacs 127.0.0.1:4242 --aec ORTHANC --aet MEDHASH "
                         "--patient DEMO001\n"
                         "  medhash pull --archive ./archive --pacs pacs.example.org:104 --aec PACS --get "
                         "--study 1.2.840.113619.2.55.3\n"
                         "  medhash pull --archive ./archive --dicomweb http://127.0.0.1:8042/dicom-web "
                         "--patient DEMO001 --pseudonymise ./medhash.key\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory (created if missing)")
    p.add_argument("--pacs", metavar="HOST:PORT", help="DIMSE: the PACS's host and DICOM port")
    p.add_argument("--aec", metavar="AE", help="DIMSE: the PACS's AE title (called AE)")
    p.add_argument("--aet", metavar="AE", default="MEDHASH",
                   help="DIMSE: medhash's AE title, calling AE and C-MOVE destination (default MEDHASH)")
    p.add_argument("--move-port", type=int, default=None, metavar="PORT",
                   help="DIMSE: port of medhash's temporary storage SCP for C-MOVE (default 11113); the PACS "
                        "must know --aet at this host and port")
    p.add_argument("--get", action="store_true", help="DIMSE: retrieve by C-GET only (no PACS configuration needed)")
    p.add_argument("--no-get-fallback", action="store_true",
                   help="DIMSE: C-MOVE only; do not retry a refused C-MOVE by C-GET")
    p.add_argument("--dicomweb", metavar="URL", help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    p.add_argument("--dicomweb-user", metavar="USER",
                   help="DICOMweb: HTTP basic authentication as USER; the password is read from "
                        "$MEDHASH_DICOMWEB_PASSWORD, else asked for on the terminal (never on the command line)")
    p.add_argument("--dicomweb-token-file", metavar="FILE", type=Path,
                   help="DICOMweb: send 'Authorization: Bearer TOKEN' with the token read from FILE (default: "
                        "$MEDHASH_DICOMWEB_TOKEN when set)")
    p.add_argument("--patient", metavar="ID", help="PatientID to pull (all its studies)")
    p.add_argument("--study", metavar="UID", help="StudyInstanceUID to pull")
    p.add_argument("--timeout", type=float, default=60, metavar="S",
                   help="network timeout in seconds (default 60)")
    p.add_argument("--pseudonymise", metavar="KEYFILE", type=Path, default=None,
                   help="pseudonymise on the way in with this key, as `medhash ingest --pseudonymise`")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pull)

    p = command("predict-dose", help="estimate a patient's dose from the most similar other patients",
                description="Rank the other patients (as search --patient), take the k most similar, and average "
                            "their doses on the slices matched along z, aligned by the body outline. Writes "
                            "OUT.npy ((slices, 128, 128) float32 Gy on the model grid), OUT.json and, for a "
                            "DICOM series, OUT.dcm: an RTDOSE in the CT's frame of reference on its slices.",
                examples="examples:\n  medhash predict-dose --archive ./archive --patient pt_7 --k 5 --out pred/pt_7\n"
                         "  medhash predict-dose --archive ./archive --patient /data/new/CT --out pred/new\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--patient", required=True, metavar="PID|FOLDER", help="archive patient or DICOM CT series folder")
    p.add_argument("--out", required=True, type=Path, help="output path without suffix")
    p.add_argument("--dose", type=Path, help="RTDOSE of the series (only for a dose / ct+dose index)")
    p.add_argument("--index", help="index name (default: the archive's only index)")
    p.add_argument("--k", type=int, default=10, help="similar patients considered (default 10)")
    p.add_argument("--per-slice", type=int, default=20, help="slice neighbours per query slice (default 20)")
    p.add_argument("--rerank", type=int, default=0, metavar="N", help="re-rank each slice's Hamming top-N")
    p.add_argument("--tolerance-mm", type=float, default=10.0, help="z alignment tolerance (default 10 mm)")
    p.add_argument("--weighting", choices=("mean", "score"), default="mean",
                   help="plain mean of the patients' doses, or weighted by patient score (default mean)")
    p.add_argument("--match", choices=("feature", "z"), default="feature",
                   help="which slice of a patient's aligned window: nearest in features (default) or in z")
    p.add_argument("--pool", type=int, default=5,
                   help="per query slice, average the POOL patients' slices nearest in features (default 5; "
                        "0: all k)")
    p.set_defaults(func=cmd_predict_dose)

    p = command("listen", help="receive DICOM from a planning system or PACS (storage SCP) into an archive",
                description="A DICOM storage SCP for CT Image, RT Dose, RT Structure Set and RT Plan storage "
                            "(other SOP classes are refused; C-ECHO answered). Each file is written to "
                            "ARCHIVE/spool before it is acknowledged; once the association has ended and nothing "
                            "new arrived for --quiet seconds, the spool is ingested like `medhash ingest` (RT "
                            "Plans are accepted but not stored). A killed listener loses nothing acknowledged: "
                            "the spool is ingested at the next start. One log line per association.",
                examples="examples:\n  medhash listen --archive ./archive --port 11112\n"
                         "  TCP_NODELAY=1 storescu -aet PLANNING -aec MEDHASH 127.0.0.1 11112 +sd +r /data/export\n"
                         "  medhash listen --archive ./archive --host 0.0.0.0 --allow-ae PLANNING PACS "
                         "--pseudonymise ./medhash.key\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory (created if missing or empty)")
    p.add_argument("--ae-title", default="MEDHASH", help="this listener's AE title (default MEDHASH)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    p.add_argument("--allow-ae", nargs="+", metavar="AE", default=None,
                   help="accept associations only from these calling AE titles (default: any)")
    p.add_argument("--pseudonymise", metavar="KEYFILE", type=Path, default=None,
                   help="pseudonymise every received file before it is spooled (see `medhash keygen`)")
    p.add_argument("--quiet", type=float, default=5.0, metavar="SECONDS",
                   help="a study is ingested as soon as the sender has moved on to other studies (16 files); "
                        "studies still open when an association ends are ingested once no file arrived for this "
                        "long (default 5)")
    p.set_defaults(func=cmd_listen)

    p = command("export", help="export an index's features, codes and slice list",
                description="Write features.npy (float32), codes.npy (packed uint8 codes) and slices.csv "
                            "(patient_id, slice_index, z_mm; rows in index order) to OUT.",
                examples="example: medhash export --archive ./archive --index ct256 --out ./export\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--index", required=True, help="index name")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=cmd_export)

    p = command("serve", help="run the web app and REST API for an archive",
                description="Serve the search page and the REST API (GET /api/health, /api/indexes, /api/patients, "
                            "/api/slices/PATIENT/SLICE.png; POST /api/search) for one archive, opened read-only. "
                            "Bound to 127.0.0.1 unless --host says otherwise; give a token for use beyond "
                            "localhost.",
                examples="examples:\n  medhash serve --archive demo-archive            # then open http://127.0.0.1:8000/\n"
                         "  MEDHASH_TOKEN=s3cret medhash serve --archive ./archive --host 0.0.0.0 --port 8080\n")
    p.add_argument("--archive", required=True, type=Path, help="archive directory (never modified)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the API (default: $MEDHASH_TOKEN; "
                                   "none: no token)")
    p.add_argument("--max-upload-mb", type=float, default=64, metavar="MIB",
                   help="largest request body accepted, MiB (default 64); larger uploads get 413")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ARCHIVE
    except NotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except (MedhashError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except BrokenPipeError:  # `medhash info --json | head`: the reader left, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted: the archive keeps every series completed so far", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
