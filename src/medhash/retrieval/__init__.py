"""Retrieval: indexes of binary codes and their search.

===============  =====================================================================================
module           owns
===============  =====================================================================================
``blocks``       an index's features: one block per model channel, normalised, weighted, combined
``engines``      the :class:`Engine` protocol and its engines (faiss flat / IVF / HNSW, Milvus)
``topk``         deterministic Hamming top-k over an engine (ties: Euclidean distance, then row)
``index``        :class:`Index` (a named index of an archive, opened) and :class:`Hit`
``build``        choosing models, building / extending and exporting an index
``calibration``  an index's random-pair reference: percentiles, expected Hamming distance, the verdict
``cache``        :class:`IndexCache` (the open indexes of whoever serves) and :func:`open_index`
``query``        queries (slice, patient) and their features for an index
``slices``       slice search: :func:`search`, :func:`search_many`
``patients``     patient search: :func:`patient_search`
===============  =====================================================================================
"""
from .. import threads  # noqa: F401  (the OpenMP wait policy is set before faiss loads)
from ..threads import search_threads
from .blocks import CHANNELS, block_scale, channel_blocks, combine
from .build import build_index, export_index, pick_model
from .cache import IndexCache, open_index
from .calibration import Calibration, calibration_of
from .engines import Engine, FlatEngine
from .index import Hit, Index, index_path, list_indexes
from .patients import patient_search
from .query import (PatientQuery, Query, archive_query, needs_geometry, parse_query, patient_query, query_features,
                    query_slice_features)
from .slices import search, search_many
from .topk import hamming_topk


def set_search_threads(n_queries: int) -> None:
    """faiss threads for a search of ``n_queries`` queries (see :mod:`medhash.threads`)."""
    search_threads(n_queries)


__all__ = ["CHANNELS", "Calibration", "Engine", "FlatEngine", "Hit", "Index", "IndexCache", "PatientQuery", "Query",
           "archive_query", "block_scale", "build_index", "calibration_of", "channel_blocks", "combine",
           "export_index", "hamming_topk", "index_path", "list_indexes", "needs_geometry", "open_index",
           "parse_query", "patient_query", "patient_search", "pick_model", "query_features", "query_slice_features",
           "search", "search_many", "set_search_threads"]
