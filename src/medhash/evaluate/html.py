"""report.html from metrics.json: the numbers in tables, the figures beside them (PNG files in the
same folder), what each shows in a sentence. No scripts, no external resources."""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

from ..dose import LEADERBOARD

# mission.md, raw pixels on the 60 OpenKBP patients: the reference to beat
REFERENCE = [("Dice@50, 256 bits (same patient included)", "0.687"), ("Dice@50, 1024 bits", "0.829"),
             ("Dice@50, 256 bits, top-500 re-ranked", "0.993"),
             ("organ-set Jaccard@10, other patients, Euclidean / Hamming 256 / random", "0.511 / 0.491 / 0.251"),
             ("dose MAE of the Euclidean top-10 mean (possible-dose mask), Gy", "10.65 (predict 0 Gy: 27.33)")]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right} th:first-child,td:first-child{text-align:left} th{background:#f3f3f3}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0} .note{color:#555;font-size:.9em}
code{background:#f4f4f4;padding:0 .25em} .warn{background:#fff4e0;border-left:4px solid #f29e2e;padding:.4em .8em}
"""


def _f(v, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _factor(f: float) -> str:
    """2^e for powers of two (the sweep's steps), else the number."""
    e = math.log2(f)
    return f"2<sup>{int(e)}</sup>" if e == int(e) and abs(e) > 1 else f"{f:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(name: str | None, alt: str) -> str:
    return f'<img src="{escape(name)}" alt="{escape(alt)}">' if name else ""


def _head(m: dict) -> list[str]:
    """Title, what was evaluated, and the warnings."""
    P, F = m["parameters"], m["features"]
    models = ", ".join(f"{ch}: {escape(v['name'])} ({escape(str(v.get('arch')))}, {v.get('latent_dim')} floats)"
                       for ch, v in F["models"].items())
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>medhash evaluation</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>medhash evaluation report</h1>",
             f"<p>Archive <code>{escape(m['archive']['path'])}</code>: {m['archive']['patients']} patients, "
             f"{m['archive']['slices']:,} slices. Features: <b>{escape(F['channel'])}</b> "
             f"({F['dim']} floats; {models})"
             + (f", from index <code>{escape(F['index'])}</code>" if F.get("index") else "")
             + f". {P['queries']} queries from {m['queries']['patients']} patients, seed {P['seed']}; "
             f"gamma {escape(str(P['gamma']))} = {m['gamma']['fitted']:.4g}. "
             f"Made {escape(m['created'])} in {m['elapsed_s']['total_s']:.0f} s"
             + (f" by <code>{escape(m['command'])}</code>" if m.get("command") else "") + ".</p>"]
    if P["quick"]:
        parts.append('<p class="warn">Quick run: few queries and code lengths; the numbers are rough.</p>')
    if P["ks_dropped"]:
        parts.append(f'<p class="warn">k = {", ".join(map(str, P["ks_dropped"]))} left out: some query has fewer '
                     "candidate slices of other patients.</p>")
    return parts


def _overlap(m: dict) -> list[str]:
    """Section 1: Dice and Jaccard of the Hamming against the Euclidean neighbours."""
    P, fig, S = m["parameters"], m["figures"], m["overlap"]["summary"]
    bits, ks, kr = P["bits"], P["ks"], P["k_reference"]
    parts = ["<h2>1. Do Hamming codes keep the Euclidean neighbours?</h2>"]
    parts.append("<p>For each query the k slices nearest by Hamming distance of the codes are compared with the k "
                 "nearest by Euclidean distance of the float features (the query itself excluded). Dice = overlap / k; "
                 "Jaccard = Dice / (2 − Dice); slices tied at the k-th Hamming distance count as the expected overlap "
                 "under random tie-breaking, so 1-bit codes get a meaningful score. Mean with 95 % confidence "
                 "interval of the mean:</p>")
    for metric in ("dice", "jaccard"):
        rows = []
        for b in bits:
            row = [f"{b:,} bits"]
            for mode in ("included", "excluded"):
                s = S[mode][metric][str(b)][str(kr)]
                row.append(f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
            rows.append(row)
        parts.append(_table([f"{metric.capitalize()}@{kr}", "same patient included", "same patient excluded"], rows))
    parts.append(_img(fig.get("violins"), "violin plots"))
    rows = [[f"{b:,} bits"] + [f"{S['included']['dice'][str(b)][str(k)]['mean']:.3f}" for k in ks] for b in bits]
    parts.append(_table(["mean Dice@k, same patient included"] + [f"k={k}" for k in ks], rows))
    parts.append(_img(fig.get("overlap_vs_k"), "overlap against k"))
    parts += _index_overlap(m)
    return parts


def _index_overlap(m: dict) -> list[str]:
    """Section 1, with an index: the Dice of the index's own codes (its fitted hasher)."""
    ix, ks = m["overlap"].get("index"), m["parameters"]["ks"]
    if not ix:
        return []
    b = str(ix["bits"])
    rows = [[title] + [f"{ix['summary'][mode]['dice'][b][str(k)]['mean']:.3f}" for k in ks]
            for mode, title in (("included", "same patient included"), ("excluded", "same patient excluded"))]
    return [f"<p>The codes of index <code>{escape(ix['name'])}</code> itself: its fitted "
            f"{escape(ix['hasher']['class'])} hasher ({ix['bits']:,} bits). Mean Dice@k:</p>",
            _table([f"index {ix['name']}, mean Dice@k"] + [f"k={k}" for k in ks], rows)]


def _distances(m: dict) -> list[str]:
    """Section 2: Hamming against Euclidean distance, and the gamma sweep."""
    fig = m["figures"]
    parts = []
    D = m["distances"]
    parts.append("<h2>2. Hamming against Euclidean distance, and the kernel width</h2>")
    parts.append("<p>Normalised Hamming distance of random pairs beside the Euclidean distance of their features; the red "
                 "line is the closed form of Raginsky &amp; Lazebnik (Lemma 2.3) for the fitted gamma. Its spread "
                 "around the line shrinks like 1/√n with the code length n.</p>")
    parts.append(_table(["code length", "RMS deviation from closed form", "Spearman ρ", "mean hamming / n"],
                        [[f"{int(b):,}", f"{d['rms_deviation']:.4f}", f"{d['spearman']:.3f}",
                          f"{d['mean_fraction']:.3f}"] for b, d in D["per_bits"].items()]))
    parts.append(_img(fig.get("scatter"), "Hamming against Euclidean distance"))
    G = D["gamma_sweep"]
    parts.append(f"<p>gamma sweep at {G['n_bits']} bits, Dice@{G['k']} (same patient included). gamma too large: "
                 "every pair saturates near 4/π² (flat); too small: codes agree and ties swamp the ranking. "
                 f"gamma auto = {G['gamma_auto']:.4g} (4 / median squared distance of random pairs).</p>")
    parts.append(_table(["gamma / auto", "gamma", f"Dice@{G['k']}", "Spearman ρ", "mean hamming / n",
                         "tied at k-th", "regime"],
                        [[_factor(p["factor"]), f"{p['gamma']:.4g}", f"{p['dice']:.3f}", f"{p['spearman']:.3f}",
                          f"{p['mean_fraction']:.3f}", f"{p['tied_fraction']:.3f}", escape(p["regime"])]
                         for p in G["points"]]))
    parts.append(_img(fig.get("gamma"), "gamma sweep"))
    return parts


def _reconstructions(m: dict) -> list[str]:
    """Section 3: reconstructions."""
    fig = m["figures"]
    parts = ["<h2>3. Reconstructions</h2>"]
    R = m["reconstruction"]
    parts.append(_table(["channel", "model", "held-out PSNR (dB)", "MAE of the examples", "MAE of the 3D patient"],
                        [[escape(ch), escape(r["model"]), _f(r["held_out_psnr_db"], ".1f"),
                          f"{r['examples_mae']:.2f} {r['unit']}",
                          f"{r['volume']['mae']:.2f} {r['unit']}" if "volume" in r else "–"] for ch, r in R.items()]))
    for ch in R:
        parts.append(_img(fig.get(f"reconstruction_{ch}"), f"{ch} reconstructions"))
    parts.append(_img(fig.get("reconstruction_3d"), "3D view"))
    return parts


def _examples(m: dict) -> list[str]:
    """Section 4: retrieval examples."""
    fig = m["figures"]
    parts = ["<h2>4. Retrieval examples</h2>"]
    parts.append("<p>Top 5 by Hamming distance among other patients' slices; isodose lines where the slice has "
                 "dose. CT-only features find similar anatomy; joint CT + dose features also match the dose.</p>")
    for e in fig.get("examples", []):
        parts.append(_img(e["file"], f"retrieval {e['channel']} {e['query']}"))
    return parts


def _relevance(m: dict) -> list[str]:
    """Section 5: cross-patient relevance and dose from neighbours."""
    fig, ks = m["figures"], m["parameters"]["ks"]
    parts = []
    Rel = m["relevance"]
    O, Dz = Rel["organ"], Rel["dose"]
    parts.append("<h2>5. Is it useful? Cross-patient relevance and dose from neighbours</h2>")
    parts.append(f"<p>Results from other patients only. Organ set of a slice = its structures (not the external "
                 f"contour). Precision@k: share of results with organ-set Jaccard ≥ {O['relevant_jaccard']:g}. Hamming "
                 f"at {Rel['bits']} bits; re-ranked: the Hamming top-{Rel['rerank']} ordered by Euclidean distance. "
                 f"Dose from neighbours: the mean dose of the top-k predicts the query's dose; MAE in Gy over the "
                 f"possible-dose mask ({Dz['possible_dose_mask_queries']} of {Dz['n_queries']} queries) else the "
                 "body (the OpenKBP dose score).</p>")
    if Dz.get("dose_in_features"):
        parts.append('<p class="warn">These features include the query\'s own dose, so the dose prediction is not a '
                     "fair forecast: use a CT-only evaluation for that figure.</p>")
    names = {"euclidean": "Euclidean", "hamming": "Hamming", "rerank": "Hamming re-ranked", "random": "random"}
    hdr = ["method"] + [f"k={k}" for k in ks]
    for key, title in (("jaccard", f"organ-set Jaccard@k ({O['n_queries']} queries)"), ("precision", "precision@k")):
        parts.append(_table([title] + hdr[1:], [[names[mt]] + [_f(v[key][str(k)]) for k in ks]
                                               for mt, v in O["methods"].items()]))
    rows = [[names[mt]] + [_f(v[str(k)], ".2f") for k in ks] for mt, v in Dz["mae"].items()]
    rows.append(["predict 0 Gy"] + [_f(Dz["zero"], ".2f")] * len(ks))
    parts.append(_table([f"dose MAE (Gy), {Dz['n_queries']} queries"] + hdr[1:], rows))
    if Dz.get("zero_pdm") is not None:
        rows = [[names[mt]] + [_f(v[str(k)], ".2f") for k in ks] for mt, v in Dz["mae_pdm"].items()]
        rows.append(["predict 0 Gy"] + [_f(Dz["zero_pdm"], ".2f")] * len(ks))
        parts.append(_table([f"dose MAE (Gy), the {Dz['possible_dose_mask_queries']} queries with a "
                             "possible-dose mask"] + hdr[1:], rows))
    parts.append(_img(fig.get("relevance"), "relevance"))
    return parts


def _dose_prediction(L: dict) -> list[str]:
    """Section 6 (``dose_prediction`` of the metrics): dose from similar patients, leave-one-patient-out."""
    parts = ["<h2>6. Dose from similar patients, leave-one-patient-out (OpenKBP scores)</h2>"]
    parts.append(f"<p>Each of the {len(L['patients'])} patients with dose is in turn the query; of the "
                 f"{L['k']} most similar other patients (index <code>{escape(L['index'])}</code>, z-aligned slice "
                 f"votes), the {L.get('pool') or L['k']} whose aligned slices are nearest in features give the mean "
                 "of their doses, per slice, aligned by z and the body outline. "
                 "Dose score = MAE in Gy inside the possible-dose mask (else the body); DVH score = mean "
                 "absolute difference of D99 / D95 / D1 of the PTVs and mean / D0.1cc of the organs.</p>")
    rows = [[escape(name), _f(v["dose_score"], ".2f"), _f(v["dvh_score"], ".2f")] for name, v in L["methods"].items()]
    if L.get("slice_level_euclidean_top10_pdm") is not None:
        rows.append(["slice level: mean of the Euclidean top-10 slices (section 5, possible-dose mask)",
                     _f(L["slice_level_euclidean_top10_pdm"], ".2f"), "–"])
    rows.append(["slice level, raw pixels (mission.md reference)", "10.65", "–"])
    rows += [[f"OpenKBP leaderboard: {escape(k)}", _f(v[0], ".2f"), _f(v[1], ".2f")] for k, v in LEADERBOARD.items()]
    parts.append(_table(["method", "dose score (Gy)", "DVH score (Gy)"], rows))
    parts.append("<p class=note>The leaderboard's models predict whole 3-D doses from the structures, trained on "
                 "200 patients; retrieval uses no dose model at all and is scored here on the archive's own "
                 "patients at the model grid's resolution, so the comparison is indicative.</p>")
    return parts


def _planned(P: dict) -> list[str]:
    """Planning-time dose from CT and contours only (``dose_prediction.planned`` of the metrics)."""
    parts = ["<h3>Planning-time dose: CT and contours only, never the patient's own dose</h3>",
             f"<p>Each of the {len(P['patients'])} patients in turn, leave-one-patient-out; the dose model is "
             f"trained {P['folds']} times (folds by patient, seed {P['seed']}), each time without the query's fold. "
             f"Neighbours: the {P['k']} most similar other patients by target-organ geometry (overlap-volume "
             "histograms, target volumes and levels), by CT (patient search in the index) or both; their doses "
             "are transferred by anatomy (dose by distance to the targets, in 3-D and on the same slice).</p>"]
    rows = [[escape(name), _f(v["dose_score"], ".2f"), _f(v["dvh_score"], ".2f"), _f(v["seconds_per_patient"], ".2f")]
            for name, v in P["methods"].items()]
    rows += [[f"OpenKBP leaderboard: {escape(k)}", _f(v[0], ".2f"), _f(v[1], ".2f"), "–"] for k, v in LEADERBOARD.items()]
    parts.append(_table(["method", "dose score (Gy)", "DVH score (Gy)", "s / patient"], rows))
    scored = {n: v for n, v in P["methods"].items() if v["dose_score"] is not None and v["dvh_errors"]}
    if scored:
        best = min(scored, key=lambda n: scored[n]["dose_score"])
        errs = sorted(scored[best]["dvh_errors"].items(), key=lambda kv: -kv[1])
        parts.append(f"<p>DVH metric errors of the best method ({escape(best)}), mean absolute error over the "
                     "patients that have the structure, largest first:</p>")
        parts.append(_table(["metric", "mean |error| (Gy)"], [[escape(n), _f(e, ".2f")] for n, e in errs]))
        bands = scored[best].get("error_by_dose_gy") or {}
        if bands:
            parts.append(f"<p>Where the error sits in dose ({escape(best)}): mean absolute error of the voxels whose "
                         "real dose lies in each band, and the share of the scored voxels in it.</p>")
            parts.append(_table(["real dose (Gy)", "MAE (Gy)", "share of voxels"],
                                [[escape(b), _f(v["mae"], ".2f"), _f(v["share"], ".3f")] for b, v in bands.items()]))
    for name, png in P.get("figures", {}).items():
        kind, _, label = name.partition(" ")
        what = ("Predicted DVHs, the band of the neighbours' plans and the real plan" if kind == "dvh" else
                "Real and predicted doses with isodose lines")
        parts.append(f"<p>{what}: the {escape(label)} patient of the model.</p>" + _img(png, name))
    return parts


def _slice_level(S: dict) -> list[str]:
    """Slice-level dose from the k nearest slices of other patients (``dose_prediction.slice_level``)."""
    rows = [["mean of their doses, pixel by pixel", _f(S["pixels_mae"], ".2f")],
            ["transfer by anatomy (their dose by distance to their targets, read on the query's)",
             _f(S["anatomy_mae"], ".2f")], ["predict 0 Gy", _f(S["zero_mae"], ".2f")]]
    return [f"<h3>Slice level: dose from the {S['k']} nearest slices of other patients</h3>",
            f"<p>{S['queries']} archive slices with dose (seed {S['seed']}) searched in index "
            f"<code>{escape(S['index'])}</code>; MAE in Gy inside each slice's possible-dose mask (else its body).</p>",
            _table(["rule", "MAE (Gy)"], rows)]


def write_dose_report(m: dict, path: str | Path) -> Path:
    """The report of ``medhash evaluate --dose-only``: the dose-prediction section alone."""
    L = m["dose_prediction"]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>medhash dose evaluation</title>"
             f"<style>{CSS}</style></head><body>", "<h1>medhash dose-prediction report</h1>",
             f"<p>Archive <code>{escape(m['archive']['path'])}</code>: {m['archive']['patients']} patients. "
             f"Made {escape(m['created'])} in {m['elapsed_s']['total_s']:.0f} s"
             + (f" by <code>{escape(m['command'])}</code>" if m.get("command") else "") + ".</p>"]
    parts += _dose_prediction(L) if L.get("methods") else []
    parts += _planned(L["planned"]) if L.get("planned") else []
    parts += _slice_level(L["slice_level"]) if L.get("slice_level") else []
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _hashers(H: dict) -> list[str]:
    """Section 7 (``hashers`` of the metrics): hashers compared on the same features."""
    hb = H["bits"]
    parts = ["<h2>7. Hashers compared on the same features</h2>",
             f"<p>Dice@{H['k']} of the Hamming against the Euclidean neighbours (same patient included) for "
             "kernel LSH (the talk's random codes), PCA-sign, ITQ (PCA + learned rotation; at most one bit "
             "per feature) and the trained kernel hash (w, b learned), with the fit time in seconds.</p>"]
    rows = []
    for name, r in H["hashers"].items():
        best = [r["dice"][str(b)] is not None and r["dice"][str(b)] >= max(
            v["dice"][str(b)] for v in H["hashers"].values() if v["dice"][str(b)] is not None) for b in hb]
        rows.append([escape(name)] + [("<b>" + _f(r["dice"][str(b)]) + "</b>") if best[i] else _f(r["dice"][str(b)])
                                      for i, b in enumerate(hb)]
                    + [", ".join(_f(r["fit_s"][str(b)], ".2f") for b in hb if r["fit_s"][str(b)] is not None)])
    parts.append(_table(["hasher"] + [f"{b} bits" for b in hb] + ["fit s"], rows))
    uk = H.get("usefulness_k")
    if uk and any(r.get("usefulness") for r in H["hashers"].values()):
        parts.append(f"<p>Usefulness of each hasher's results, as in section 5 (other patients' slices only, "
                     f"top {uk}): organ-set Jaccard@{uk} (higher is better) and the MAE of the mean dose of the "
                     f"top {uk} as the query's dose (Gy, possible-dose mask where there is one, else the body; "
                     "lower is better).</p>")
        rows = []
        for name, r in H["hashers"].items():
            cells = []
            for b in hb:
                u = (r.get("usefulness") or {}).get(str(b))
                cells.append("–" if not u else f"{_f(u['organ_jaccard'])} / {_f(u['dose_mae'], '.2f')} Gy")
            rows.append([escape(name)] + cells)
        parts.append(_table(["hasher"] + [f"{b} bits: J@{uk} / dose MAE@{uk}" for b in hb], rows))
    return parts


def _timing(m: dict) -> list[str]:
    """Speed and size, the reference figures and the footer."""
    parts = []
    T = m["timing"]
    parts.append("<h2>Speed and size</h2>")
    rows = [[f"encode one {escape(ch)} slice", f"{v:.2f} ms"] for ch, v in T["encode_ms"].items()]
    rows += [[f"search {escape(k)} over {T['items']:,} slices", f"{v:.3f} ms"] for k, v in T["search_ms"].items()]
    rows += [[f"bytes per slice, {T['code_bits']}-bit code", str(T["bytes_per_slice"]["codes"])],
             ["bytes per slice, float32 features", str(T["bytes_per_slice"]["features"])]]
    parts.append(_table(["measure", "value"], rows) + f"<p class=note>{escape(T['note'])}</p>")

    parts.append("<h2>Reference: raw pixels on the 60 OpenKBP patients (mission.md)</h2>")
    parts.append(_table(["measure", "value"], [[escape(a), escape(b)] for a, b in REFERENCE]))
    parts.append(f"<p class=note>All numbers: <a href=metrics.json>metrics.json</a> (schema {escape(m['schema'])}, "
                 "documented in docs/metrics-schema.md). Step times (s): "
                 + ", ".join(f"{escape(k)} {v}" for k, v in m["elapsed_s"].items()) + ".</p>")
    return parts


def write_report(m: dict, path: str | Path) -> Path:
    """Write the HTML report of metrics ``m`` (the metrics.json dict) to ``path``."""
    parts = []
    for section in (_head, _overlap, _distances, _reconstructions, _examples, _relevance):
        parts += section(m)
    if m.get("dose_prediction"):
        parts += _dose_prediction(m["dose_prediction"])
        if m["dose_prediction"].get("planned"):
            parts += _planned(m["dose_prediction"]["planned"])
    if m.get("hashers"):
        parts += _hashers(m["hashers"])
    parts += _timing(m)
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
