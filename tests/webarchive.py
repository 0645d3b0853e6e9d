"""A small trained and indexed demo archive for the web tests (built once per test session).

Three synthetic demo patients as DICOM (96 x 96 CT, RTDOSE, RTSTRUCT), one-epoch shallow CT and
dose models, a 64-bit CT index ``ct64`` and a 64-bit joint index ``joint64``.
"""
from __future__ import annotations

import fcntl
import warnings
from pathlib import Path

import pytest

from medhash import Archive
from medhash.ingest import ingest
from medhash.demo import write_demo_cohort
from medhash.features import train_model
from medhash.retrieval import build_index


def web_archive(tmp_path_factory) -> tuple[Path, Path]:
    """(demo DICOM folder, archive folder), shared by test_web.py and test_browser.py in one session."""
    root = tmp_path_factory.getbasetemp() / "web-archive"
    root.mkdir(exist_ok=True)
    done = root / "done"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            write_demo_cohort(root / "demo", n_patients=3, rows=96)
            with Archive(root / "arch", create=True) as arch:
                assert ingest(arch, [root / "demo"]).exit_code == 0
                train_model(arch, "ct", "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
                train_model(arch, "dose", "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
                build_index(arch, "ct64", "ct", 64, seed=0)
                build_index(arch, "joint64", "ct+dose", 64, seed=0)
            done.touch()
    return root / "demo", root / "arch"


# -- fixtures of the REST API tests (imported by name by the test modules that use them) ---------------

@pytest.fixture(scope="module")
def demo_arch(tmp_path_factory):
    """(demo DICOM folder, archive path) of :func:`web_archive`."""
    return web_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def client(demo_arch):
    """A FastAPI TestClient of the app serving ``demo_arch``'s archive, one per test module."""
    with warnings.catch_warnings():  # starlette's note that it prefers httpx2 over httpx
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient  # test-only: fastapi only for the REST tests
    from medhash.web import create_app  # (as above)

    with TestClient(create_app(demo_arch[1])) as c:
        yield c
