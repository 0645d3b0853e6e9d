"""The picture of a slice search (``medhash search --png``): its result dict drawn as a grid.

Captions: ``#rank patient:slice``, then ``H`` (the Hamming distance) and, where the result carries
them, ``pctl`` (the percentile of the distance among random pairs of slices of different archive
patients: small = closer than almost all random pairs), ``E`` (the Euclidean distance of the
features after re-ranking) and ``exp. H`` (the closed-form expected Hamming distance, kernel LSH).
The calibration's verdict, when the result has one, is the picture's headline.
"""
from __future__ import annotations

from pathlib import Path

from .grid import render_results


def result_caption(r: dict) -> str:
    """A result's caption (two or three lines) from its entry of ``result["results"]``."""
    lines = [f"#{r['rank']} {r['patient_id']}:{r['slice_index']}"]
    first = [f"H {r['hamming']}"] + ([f"pctl {float(r['percentile']):.2f}"] if r.get("percentile") is not None else [])
    lines.append(" · ".join(first))
    more = ([f"E {float(r['euclidean']):.3g}"] if r.get("euclidean") is not None else []) + \
        ([f"exp. H {float(r['expected_hamming']):.1f}"] if r.get("expected_hamming") is not None else [])
    if more:
        lines.append(" · ".join(more))
    return "\n".join(lines)


def query_caption(result: dict) -> str:
    """The query's caption: the archive slice and its position, or the file (and the slice of a
    series folder); the archive patient it was recognised as, if any."""
    q = result["query"]
    if q.get("type") == "archive":
        text = f"query {q['patient_id']}:{q['slice_index']}\nz {q['z_mm']:.1f} mm"
    else:
        text = f"query {Path(str(q.get('file', 'image'))).name}"
        if q.get("slice_index") is not None and q.get("z_mm") is not None:
            text += f"\nslice {q['slice_index']}, z {float(q['z_mm']):.1f} mm"
    rec = result.get("recognised")
    if rec and rec.get("patient_id"):
        text += f"\nrecognised: {rec['patient_id']}"
    return text


def search_title(result: dict) -> str:
    """The title line of a search picture: index, k, re-ranking, whose slices were left out."""
    title = (f"index {result['index']} ({result['channel']}, {result['n_bits']} bits), top {result['k']}"
             + (f", re-ranked from {result['rerank']}" if result.get("rerank") else ""))
    if result.get("excluded_patient"):
        title += f", patient {result['excluded_patient']} left out"
    elif not result.get("same_patient", True):
        title += ", other patients only"
    if any(r.get("percentile") is not None for r in result["results"]):
        title += "; H: Hamming distance, pctl: its percentile among random pairs of slices"
    return title


def prescription_gy(info: dict) -> float | None:
    """The query's prescription in Gy, when its info carries one (``prescription_gy``, or the highest of
    ``prescriptions``: target name -> Gy), else None."""
    if info.get("prescription_gy"):
        return float(info["prescription_gy"])
    levels = [float(v) for v in (info.get("prescriptions") or {}).values() if v]
    return max(levels) if levels else None


def render_search(archive, result: dict, query, out: str | Path, *, isodose=None) -> Path:
    """The PNG grid of a :func:`medhash.search` result (query + top-k).

    Parameters
    ----------
    archive : the open archive the results name.
    result : what :func:`medhash.search` returned (old results without ``percentile`` or
        ``calibration`` are drawn without them).
    query : the :class:`~medhash.retrieval.query.Query` searched with (its ``ct`` HU and ``dose`` Gy).
    out : PNG path.
    isodose : levels, as :func:`~medhash.render.grid.render_results` takes them (default 95, 80, 50
        and 20 % of the query's prescription when its info carries one, else of its maximum dose).

    Returns
    -------
    Path : ``out``.
    """
    panels = []
    for r in result["results"]:
        s = archive.get(r["patient_id"], r["slice_index"])
        panels.append((s.ct, s.dose, result_caption(r)))
    cal = result.get("calibration") or {}
    return render_results(query.ct, query.dose, query_caption(result), panels, out, suptitle=search_title(result),
                          isodose=isodose, reference_gy=prescription_gy(result["query"]),
                          verdict=str(cal.get("verdict_text") or ""), alarm=cal.get("verdict") == "no similar slice")
