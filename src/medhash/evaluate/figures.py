"""The report's figures (matplotlib, Agg, PNG): every axis labelled, units given, legends drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.grid import GRID_SIZE, GRID_SPACING_MM
from ..hashing import expected_hamming_fraction
from ..render import crop_box
from .distances import SATURATION
from .metrics import jaccard_from_dice

DPI = 110
MODE_TITLES = {"included": "same-patient results included", "excluded": "same-patient results excluded"}
METHOD_STYLE = {"euclidean": ("Euclidean (float features)", "#1b7837", (0, (1, 1))),
                "hamming": ("Hamming", "#2166ac", "-"),
                "rerank": ("Hamming, re-ranked", "#b2182b", (0, (5, 2))),
                "random": ("random slices (baseline)", "#777777", "--")}


def _plt():
    # start-up: matplotlib only when a figure is drawn
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up: matplotlib only when drawing
    return plt


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    _plt().close(fig)
    return out


def _colours(n: int):
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    return [cmap(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


def violins(per_query: dict, bits: list[int], k: int, out: Path) -> Path:
    """Dice and Jaccard per query at one k, one violin per code length, per same-patient mode."""
    plt = _plt()
    modes = list(per_query)
    fig, axes = plt.subplots(2, len(modes), figsize=(5.2 * len(modes), 7.2), squeeze=False)
    for c, mode in enumerate(modes):
        for r, (name, fn) in enumerate((("Dice", lambda v: v), ("Jaccard", jaccard_from_dice))):
            ax = axes[r, c]
            data = [fn(per_query[mode][b][k]) for b in bits]
            parts = ax.violinplot(data, showmedians=True, showextrema=True)
            for body in parts["bodies"]:
                body.set_alpha(0.55)
            ax.set_xticks(range(1, len(bits) + 1), [f"{b:,}" for b in bits])
            ax.set_xlabel("code length (bits)")
            ax.set_ylabel(f"{name}@{k}, Hamming vs Euclidean")
            ax.set_ylim(-0.03, 1.1)
            ax.grid(axis="y", alpha=0.3)
            n = len(data[0])
            ax.set_title(f"{name}: {MODE_TITLES[mode]} ({n} queries)", fontsize=9)
            for x, v in enumerate(data, start=1):
                ax.text(x, 1.03, f"{np.mean(v):.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"Overlap of the {k} nearest by Hamming and by Euclidean distance (line: median; "
                 "number: mean)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, out)


def overlap_vs_k(summary: dict, bits: list[int], ks: list[int], out: Path) -> Path:
    """Mean Dice / Jaccard against k with the 95 % confidence band of the mean, a line per length."""
    plt = _plt()
    modes = list(summary)
    fig, axes = plt.subplots(2, len(modes), figsize=(5.2 * len(modes), 7.2), squeeze=False)
    cols = _colours(len(bits))
    for c, mode in enumerate(modes):
        for r, metric in enumerate(("dice", "jaccard")):
            ax = axes[r, c]
            for b, col in zip(bits, cols):
                s = [summary[mode][metric][str(b)][str(k)] for k in ks]
                m = np.array([x["mean"] for x in s])
                lo = np.array([x["ci95"][0] for x in s])
                hi = np.array([x["ci95"][1] for x in s])
                ax.plot(ks, m, "o-", color=col, ms=3, label=f"{b:,} bits")
                ax.fill_between(ks, lo, hi, color=col, alpha=0.2, lw=0)
            ax.set_xscale("log")
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k, number of slices retrieved")
            ax.set_ylabel(f"mean {metric.capitalize()}@k")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{metric.capitalize()}: {MODE_TITLES[mode]}", fontsize=9)
            if r == 0 and c == 0:
                ax.legend(fontsize=8, title="code length", title_fontsize=8)
    fig.suptitle("Hamming vs Euclidean neighbours against k (band: 95 % confidence interval of the mean)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, out)


def hamming_scatter(hve: dict, out: Path) -> Path:
    """Normalised Hamming against Euclidean distance of sampled pairs, with the closed form."""
    plt = _plt()
    per = hve["per_bits"]
    fig, axes = plt.subplots(1, len(per), figsize=(5.4 * len(per), 4.4), squeeze=False)
    r = hve["euclidean"]
    grid = np.linspace(0, r.max() * 1.05, 300)
    for ax, (b, d) in zip(axes[0], per.items()):
        ax.scatter(r, d["hamming_fraction"], s=4, alpha=0.35, color="#2166ac", label=f"pairs ({len(r):,})")
        ax.plot(grid, expected_hamming_fraction(grid, hve["gamma"]), color="#d7191c", lw=2,
                label="closed form E[hamming / n]")
        ax.axhline(SATURATION, color="#555555", ls="--", lw=1, label="saturation 4/π² ≈ 0.405")
        ax.set_xlabel("Euclidean distance of the features")
        ax.set_ylabel("normalised Hamming distance (hamming / n)")
        ax.set_ylim(0, 0.6)
        ax.set_xlim(0, grid[-1])
        ax.grid(alpha=0.3)
        ax.set_title(f"{int(b):,} bits: RMS deviation from closed form {d['rms_deviation']:.3f}, "
                     f"Spearman {d['spearman']:.2f}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Hamming against Euclidean distance (gamma = {hve['gamma']:.4g}, set from the data)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return _save(fig, out)


def gamma_sweep(sweep: dict, out: Path) -> Path:
    """Dice@k, rank correlation, mean distance and ties against gamma / gamma_auto."""
    plt = _plt()
    pts = sweep["points"]
    f = np.array([p["factor"] for p in pts])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    shade = {"flat": "#fdd49e", "all ties": "#c6dbef"}
    for ax in axes:
        for p, lo, hi in zip(pts, np.r_[f[0] / 1.5, np.sqrt(f[1:] * f[:-1])], np.r_[np.sqrt(f[1:] * f[:-1]), f[-1] * 1.5]):
            if p["regime"] in shade:
                ax.axvspan(lo, hi, color=shade[p["regime"]], alpha=0.6, lw=0)
        ax.axvline(1.0, color="#d7191c", lw=1.5, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("gamma / gamma_auto (log scale)")
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
    axes[0].plot(f, [p["dice"] for p in pts], "o-", color="#2166ac", label=f"mean Dice@{sweep['k']}")
    axes[0].set_ylabel(f"mean Dice@{sweep['k']}, Hamming vs Euclidean")
    axes[1].plot(f, [p["spearman"] for p in pts], "o-", color="#1b7837", label="Spearman ρ (pairs)")
    axes[1].plot(f, [p["mean_fraction"] for p in pts], "s-", color="#762a83", label="mean hamming / n (pairs)")
    axes[1].plot(f, [p["tied_fraction"] for p in pts], "^-", color="#e08214",
                 label=f"share of items tied at the {sweep['k']}-th distance")
    axes[1].set_ylabel("value")
    from matplotlib.patches import Patch  # start-up: matplotlib only when a figure is drawn
    from matplotlib.lines import Line2D  # start-up: matplotlib only when drawing
    extra = [Patch(color=shade["flat"], label="flat: saturated (closed form)"),
             Patch(color=shade["all ties"], label="all ties (closed form)"),
             Line2D([0], [0], color="#d7191c", ls=":", label=f"gamma auto = {sweep['gamma_auto']:.3g}")]
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        ax.legend(handles=h + extra, fontsize=7, loc="best")
    fig.suptitle(f"The kernel width gamma at {sweep['n_bits']} bits", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return _save(fig, out)


def _crop_extent(crop) -> tuple:
    rs, cs = crop
    return (cs.start * GRID_SPACING_MM, cs.stop * GRID_SPACING_MM, rs.stop * GRID_SPACING_MM, rs.start * GRID_SPACING_MM)


def reconstructions(channel: str, inputs: np.ndarray, outputs: np.ndarray, captions: list[str], out: Path,
                    *, psnr_db: float | None = None, ct: np.ndarray | None = None) -> Path:
    """Input, reconstruction and |difference| per example slice (CT in HU, dose in Gy).

    inputs, outputs : (n, 128, 128); ct : (n, 128, 128) HU of the same slices, to crop to the body.
    """
    plt = _plt()
    n = len(inputs)
    fig, axes = plt.subplots(n, 3, figsize=(10, 3.1 * n + 0.7), squeeze=False, layout="constrained")
    if channel == "ct":
        kw = {"cmap": "gray", "vmin": -1000, "vmax": 1000}
        unit, dmax = "HU", 300.0
    else:
        kw = {"cmap": "jet", "vmin": 0, "vmax": max(1.0, float(np.max(inputs)))}
        unit, dmax = "Gy", 10.0
    crop = crop_box(list(ct if ct is not None else inputs))
    ext = _crop_extent(crop)
    for r in range(n):
        a = axes[r, 0].imshow(inputs[r][crop], extent=ext, **kw)
        axes[r, 1].imshow(outputs[r][crop], extent=ext, **kw)
        d = axes[r, 2].imshow(np.abs(outputs[r] - inputs[r])[crop], extent=ext, cmap="magma", vmin=0, vmax=dmax)
        axes[r, 0].set_ylabel(f"{captions[r]}\ny (mm)", fontsize=8)
        for c, t in enumerate(("input", "reconstruction", "|difference|")):
            axes[r, c].set_title(t, fontsize=9)
            axes[r, c].tick_params(labelsize=7)
        axes[r, 1].set_yticklabels([])
        axes[r, 2].set_yticklabels([])
    for c in range(3):
        axes[-1, c].set_xlabel("x (mm)", fontsize=8)
    fig.colorbar(a, ax=axes[-1, :2].tolist(), location="bottom", shrink=0.8, aspect=40).set_label(unit)
    fig.colorbar(d, ax=axes[-1, 2], location="bottom", shrink=0.9, aspect=20).set_label(f"|difference| ({unit})")
    what = "CT (window -1000..1000 HU)" if channel == "ct" else "dose (Gy)"
    fig.suptitle(f"Auto-encoder reconstructions, {what}"
                 + (f"; held-out PSNR {psnr_db:.1f} dB" if psnr_db is not None else ""), fontsize=10)
    return _save(fig, out)


def volume_planes(ct: np.ndarray, rec: np.ndarray, z_mm: np.ndarray, title: str, out: Path) -> Path:
    """Orthogonal planes (axial, coronal, sagittal) through one patient: input above, reconstruction below.

    ct, rec : (nz, 128, 128) HU, slices in increasing ``z_mm`` (nz,).
    """
    plt = _plt()
    nz = len(ct)
    zc = nz // 2
    rs, cs = crop_box(list(ct), margin_px=4)
    body = ct > -500
    _, rr, cols = np.nonzero(body) if body.any() else ([0], [GRID_SIZE // 2], [GRID_SIZE // 2])
    rc, cc = int(np.median(rr)), int(np.median(cols))
    z0, z1 = float(z_mm.min()), float(z_mm.max())
    x0, x1 = cs.start * GRID_SPACING_MM, cs.stop * GRID_SPACING_MM
    y0, y1 = rs.start * GRID_SPACING_MM, rs.stop * GRID_SPACING_MM
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), layout="constrained")
    kw = {"cmap": "gray", "vmin": -1000, "vmax": 1000, "interpolation": "nearest"}
    for r, (vol, name) in enumerate(((ct, "input"), (rec, "reconstruction"))):
        im = axes[r, 0].imshow(vol[zc][rs, cs], extent=(x0, x1, y1, y0), **kw)
        axes[r, 0].axhline(rc * GRID_SPACING_MM, color="#f29e2e", lw=0.8, ls="--")
        axes[r, 0].axvline(cc * GRID_SPACING_MM, color="#2c7bb6", lw=0.8, ls="--")
        axes[r, 0].set_title(f"{name}: axial, z = {z_mm[zc]:.1f} mm", fontsize=9)
        axes[r, 0].set(xlabel="x (mm)", ylabel="y (mm)")
        axes[r, 1].imshow(vol[:, rc, cs], extent=(x0, x1, z0, z1), origin="lower", aspect="equal", **kw)
        axes[r, 1].set_title(f"{name}: coronal (orange line)", fontsize=9)
        axes[r, 1].set(xlabel="x (mm)", ylabel="z (mm)")
        axes[r, 2].imshow(vol[:, rs, cc], extent=(y0, y1, z0, z1), origin="lower", aspect="equal", **kw)
        axes[r, 2].set_title(f"{name}: sagittal (blue line)", fontsize=9)
        axes[r, 2].set(xlabel="y (mm)", ylabel="z (mm)")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6).set_label("HU")
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def relevance(organ: dict, dose: dict, ks: list[int], out: Path) -> Path:
    """Organ-set Jaccard@k, precision@k and dose MAE@k per retrieval method, with baselines."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for method, res in organ["methods"].items():
        label, col, ls = METHOD_STYLE[method]
        for ax, key in zip(axes[:2], ("jaccard", "precision")):
            y = [res[key][str(k)] for k in ks]
            if all(v is not None for v in y):
                ax.plot(ks, y, "o", ls=ls, color=col, ms=3, label=label)
    axes[0].set_ylabel("mean organ-set Jaccard@k")
    axes[1].set_ylabel(f"precision@k (organ-set Jaccard ≥ {organ['relevant_jaccard']:g})")
    for method, mae in dose["mae"].items():
        label, col, ls = METHOD_STYLE[method]
        y = [mae[str(k)] for k in ks]
        if all(v is not None for v in y):
            axes[2].plot(ks, y, "o", ls=ls, color=col, ms=3, label=label)
    if dose["zero"] is not None:
        axes[2].axhline(dose["zero"], color="black", ls=":", label=f"predict 0 Gy ({dose['zero']:.1f} Gy)")
    axes[2].set_ylabel("dose MAE (Gy), mean of the top-k as prediction")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("k, slices retrieved from other patients")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[0].set_title(f"organs on the slices ({organ['n_queries']} queries with structures)", fontsize=9)
    axes[1].set_title("relevant results", fontsize=9)
    axes[2].set_title(f"dose from neighbours ({dose['n_queries']} queries with dose)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)
