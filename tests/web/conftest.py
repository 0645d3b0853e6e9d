"""Fixtures of the REST API tests: a small demo archive served by FastAPI's TestClient (one per test module)."""
from __future__ import annotations

import warnings

import pytest

from medhash.web import create_app
from webarchive import web_archive

with warnings.catch_warnings():  # starlette's note that it prefers httpx2 over httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def demo_arch(tmp_path_factory):
    """(demo DICOM folder, archive path) of :func:`webarchive.web_archive`, built once per test module."""
    return web_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def client(demo_arch):
    """A TestClient of the app serving ``demo_arch``'s archive."""
    with TestClient(create_app(demo_arch[1])) as c:
        yield c
