"""Search engines behind an index: the :class:`~.base.Engine` protocol (:mod:`.base`), faiss flat / IVF /
HNSW (:mod:`.faiss_engines`), Milvus (:mod:`.milvus`) and the registry that picks one (:mod:`.registry`)."""
from .base import Engine
from .faiss_engines import (DEFAULT_PARAMS, ENGINE_FILE, INDEX_TYPES, FaissApproxEngine, FlatEngine, auto_nlist,
                            resolve_params, update_engine)
from .milvus import MilvusEngine
from .registry import ENGINES, engine_kind, open_engine

__all__ = ["DEFAULT_PARAMS", "ENGINES", "ENGINE_FILE", "INDEX_TYPES", "Engine", "FaissApproxEngine", "FlatEngine",
           "MilvusEngine", "auto_nlist", "engine_kind", "open_engine", "resolve_params", "update_engine"]
