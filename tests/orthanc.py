"""Test helper (not a test file): a real Orthanc from Debian, started unprivileged on loopback.

``OrthancServer(tmp_path)`` writes a JSON configuration (storage and index in ``tmp_path``, free high
HTTP and DICOM ports on 127.0.0.1, remote access off, no authentication, the DICOMweb plugin at
``/dicom-web/``, medhash declared as the modality ``MEDHASH`` for C-MOVE), starts ``Orthanc
config.json`` as a subprocess, waits until ``GET /system`` answers and stops it by PID (terminate,
then kill). Tests skip cleanly with :data:`SKIP_REASON` when Orthanc is not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ORTHANC = os.environ.get("MEDHASH_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
SKIP_REASON = None
if not (Path(ORTHANC).exists() or shutil.which("Orthanc")):
    SKIP_REASON = f"Orthanc is not installed ({ORTHANC}); apt-get install -y orthanc orthanc-dicomweb dcmtk"
elif not Path(DICOMWEB_PLUGIN).exists():
    SKIP_REASON = f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}); apt-get install -y orthanc-dicomweb"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick: a high port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """A throw-away Orthanc for one test module; use as a context manager.

    Attributes: ``http_port``, ``dicom_port``, ``aet`` (``ORTHANC``), ``move_port`` (where the
    modality ``MEDHASH`` is declared to listen, for C-MOVE), ``url`` (REST root) and
    ``dicomweb`` (DICOMweb root).
    """

    def __init__(self, tmp_path: Path, aet: str = "ORTHANC", move_aet: str = "MEDHASH",
                 move_port: int | None = None, startup_timeout: float = 30.0, users: dict | None = None,
                 options: dict | None = None):
        self.root = Path(tmp_path)
        self.options = dict(options or {})  # more configuration options, e.g. {"TranscodeDicomProtocol": False}
        self.users = dict(users or {})  # HTTP basic authentication (REST and DICOMweb) when given
        self.aet, self.move_aet = aet, move_aet
        self.http_port, self.dicom_port = free_port(), free_port()
        self.move_port = move_port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "orthanc.log"

    def config(self) -> dict:
        return {
            "Name": "medhash-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": True,  # a wrong --aec is rejected, as by most PACS
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {"medhash": [self.move_aet, "127.0.0.1", self.move_port]},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
            "StableAge": 1,
            "SaveJobs": False,
            "HttpThreadsCount": 4,
            **self.options,
        }

    def start(self) -> "OrthancServer":
        if SKIP_REASON:
            raise RuntimeError(SKIP_REASON)
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        (self.root / "index").mkdir(parents=True, exist_ok=True)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        exe = ORTHANC if Path(ORTHANC).exists() else shutil.which("Orthanc")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe, str(cfg)], stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"Orthanc exited with code {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {self.startup_timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # REST helpers
    def request(self, method: str, path: str, data: bytes | None = None,
                content_type: str = "application/json") -> bytes:
        headers = {"Content-Type": content_type} if data is not None else {}
        if self.users:
            import base64
            user, password = next(iter(self.users.items()))
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def get(self, path: str):
        return json.loads(self.request("GET", path))

    def upload(self, files) -> int:
        """POST each DICOM file to /instances; returns how many were stored."""
        n = 0
        for f in files:
            out = json.loads(self.request("POST", "/instances", Path(f).read_bytes(), "application/dicom"))
            n += out.get("Status") in ("Success", "AlreadyStored")
        return n
