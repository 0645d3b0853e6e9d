"""store.durable: the one atomic writer (file and folder fsynced before it returns) and the one lock.

Durability is checked by recording which files ``os.fsync`` was called on, and in what order with
the rename: after a power cut, a manifest that was fsynced must never point at a hasher or engine
file whose data was not.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from medhash.errors import ArchiveError
from medhash.hashing import ITQ, KernelLSH
from medhash.retrieval.engines import FaissApproxEngine, resolve_params
from medhash.store import durable


@pytest.fixture
def synced(monkeypatch):
    """The paths passed to os.fsync (resolved from their fds) and os.replace, in call order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    return events


def _durably_written(events, path: Path) -> bool:
    """The file's data was fsynced before it was renamed to ``path``, and its folder after."""
    kinds = [e[0] for e in events]
    i = events.index(("replace", str(path)))
    return ("fsync" in kinds[:i] and events[i - 1][0] == "fsync" and Path(events[i - 1][1]).parent == path.parent
            and ("fsync", str(path.parent)) in events[i + 1:])


def test_replace_atomically_fsyncs_file_then_folder(tmp_path, synced):
    target = tmp_path / "a.bin"
    with durable.replace_atomically(target) as tmp:
        tmp.write_bytes(b"new")
        assert not target.exists()                       # nothing under the name until complete
    assert target.read_bytes() == b"new"
    assert _durably_written(synced, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]   # no temporary file left


def test_replace_atomically_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    durable.write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with durable.replace_atomically(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("hasher", [KernelLSH(n_bits=32, seed=0), ITQ(n_bits=16, seed=0)],
                         ids=["kernel-lsh", "itq"])
def test_hasher_files_are_as_durable_as_the_manifest(tmp_path, synced, hasher):
    X = np.random.default_rng(0).normal(size=(200, 24)).astype(np.float32)
    hasher.fit(X)
    path = tmp_path / "hasher.pkl"
    hasher.save(path)
    assert _durably_written(synced, path)
    assert np.array_equal(type(hasher).load(path).transform(X), hasher.transform(X))
    with open(path, "rb") as f:
        assert isinstance(pickle.load(f), dict)          # a payload dict, not a pickled class


def test_engine_file_is_durable(tmp_path, synced):
    codes = np.random.default_rng(1).integers(0, 256, size=(2000, 8), dtype=np.uint8)
    engine = FaissApproxEngine.create("ivf", resolve_params("ivf", {"nlist": 16}), codes)
    path = tmp_path / "engine.faissbin"
    engine.save(path)
    assert _durably_written(synced, path)
    assert path.stat().st_size > codes.nbytes


def test_file_lock_refuses_a_second_holder(tmp_path):
    lock = tmp_path / ".lock"
    with durable.file_lock(lock, wait_s=0):
        with pytest.raises(ArchiveError, match="busy here"):
            with durable.file_lock(lock, wait_s=0, busy="busy here"):
                pass
    with durable.file_lock(lock, wait_s=0):            # released on exit
        pass


def test_atomically_written_files_get_the_mode_open_would_give(tmp_path):
    import os

    from medhash.store.durable import write_json_atomic
    mask = os.umask(0o022)
    os.umask(mask)
    write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~mask
