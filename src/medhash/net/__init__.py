"""DICOM networking: :class:`Listener`, the storage SCP behind ``medhash listen``, and the pulls behind
``medhash pull`` (:func:`pull_dimse`: C-FIND + C-MOVE / C-GET; :func:`pull_dicomweb`: QIDO-RS + WADO-RS).

Modules, one job each:

* :mod:`.listen`: the listener: associations, their study folders, when a study is ingested;
* :mod:`.spool`: the spool folder: durable writes, study keys, recovery, set-aside of damaged files;
* :mod:`.workers`: the ingest processes of the listener;
* :mod:`.dicom_tuning`: the hand-encoded DICOM of the receiving path, and the only code that touches
  pynetdicom internals;
* :mod:`.pulling`: what both pulls share: the query check, the ingest of what arrived, :class:`PullReport`;
* :mod:`.dimse`: C-FIND, C-MOVE (to a temporary storage SCP) and C-GET;
* :mod:`.dicomweb`: QIDO-RS and WADO-RS, with the standard library only.
"""
from __future__ import annotations

from .dicom_tuning import tune_connection
from .listen import ACCEPTED_SOP_CLASSES, Listener
from .dicomweb import WADO_ACCEPT, WADO_ACCEPT_PLAIN, dicomweb_headers, pull_dicomweb
from .dimse import DEFAULT_AET, DEFAULT_MOVE_PORT, METHODS, find_studies, pull_dimse
from .pulling import PullReport

__all__ = ["ACCEPTED_SOP_CLASSES", "DEFAULT_AET", "DEFAULT_MOVE_PORT", "Listener", "METHODS", "PullReport",
           "WADO_ACCEPT", "WADO_ACCEPT_PLAIN", "dicomweb_headers", "find_studies", "pull_dicomweb", "pull_dimse",
           "tune_connection"]
