"""Shared fixtures: small synthetic OpenKBP patients and the location of the shared real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_OPENKBP = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp-60.tar.xz"


def write_sparse(path: Path, vol: np.ndarray, mask: bool = False) -> None:
    """Write a (128, 128, 128) volume as an OpenKBP sparse CSV (non-zero voxels only)."""
    flat = vol.ravel()
    idx = np.flatnonzero(flat)
    with open(path, "w") as f:
        f.write(",data\n")
        if mask:
            f.writelines(f"{i},\n" for i in idx)
        else:
            f.writelines(f"{i},{flat[i]:g}\n" for i in idx)


def make_openkbp_patient(root: Path, name: str = "pt_7", *, spacing=(3.906, 3.906, 2.5), dose: bool = True,
                         body_slices=range(40, 80), shift=(0, 0)) -> dict:
    """A synthetic OpenKBP patient: a box body of known HU values, a PTV mask and a dose ramp.

    Returns the arrays written (file units: CT = HU + 1024) so tests can compare.
    """
    folder = root / name
    folder.mkdir(parents=True)
    ct = np.zeros((128, 128, 128), dtype=np.float32)
    r0, c0 = 40 + shift[0], 50 + shift[1]
    for k in body_slices:
        ct[r0:r0 + 40, c0:c0 + 30, k] = 1064.0          # 40 HU soft tissue
        ct[r0 + 5:r0 + 10, c0 + 5:c0 + 10, k] = 2024.0  # 1000 HU bone
    ct[r0 + 20, c0 + 20, 60] = 5000.0                   # 16-bit outlier: clipped to 4095 -> 3071 HU
    write_sparse(folder / "ct.csv", ct)
    ptv = np.zeros_like(ct, dtype=bool)
    ptv[r0 + 10:r0 + 20, c0 + 10:c0 + 20, 50:60] = True
    write_sparse(folder / "PTV70.csv", ptv, mask=True)
    pdm = ct > 0
    write_sparse(folder / "possible_dose_mask.csv", pdm, mask=True)
    d = None
    if dose:
        d = np.zeros_like(ct)
        d[pdm] = (np.indices(ct.shape)[1][pdm] * 0.5).astype(np.float32)  # Gy ramp along columns
        write_sparse(folder / "dose.csv", d)
    np.savetxt(folder / "voxel_dimensions.csv", np.array(spacing))
    return {"folder": folder, "ct": ct, "ptv": ptv, "dose": d, "origin": (r0, c0)}


@pytest.fixture
def openkbp_root(tmp_path):
    """A `train-pats` folder with two synthetic patients."""
    root = tmp_path / "train-pats"
    root.mkdir()
    a = make_openkbp_patient(root, "pt_7")
    b = make_openkbp_patient(root, "pt_12", shift=(10, -5), body_slices=range(30, 70))
    return root, {"pt_7": a, "pt_12": b}


@pytest.fixture(scope="session")
def _trained_demo_template(tmp_path_factory):
    """Built once per session: ``demo/`` (3 synthetic DICOM patients, 96 rows) and ``arch/`` (them ingested,
    with a CT and a dose shallow auto-encoder trained 1 epoch, 32 features, seed 0)."""
    from medhash import Archive
    from medhash.ingest import ingest
    from medhash.demo import write_demo_cohort
    from medhash.features import train_model
    root = tmp_path_factory.mktemp("trained-demo")
    write_demo_cohort(root / "demo", n_patients=3, rows=96)
    with Archive(root / "arch", create=True) as arch:
        assert ingest(arch, [root / "demo"]).exit_code == 0
        for channel in ("ct", "dose"):
            train_model(arch, channel, "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(_trained_demo_template, tmp_path_factory):
    """(root, Archive): a private copy, per test module, of the session's trained demo archive."""
    import shutil

    from medhash import Archive
    root = tmp_path_factory.mktemp("trained") / "copy"
    shutil.copytree(_trained_demo_template, root)
    return root, Archive(root / "arch")
