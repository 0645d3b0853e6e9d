"""Search engines behind an index: faiss flat / IVF / HNSW (:mod:`.faiss_engines`) and Milvus (:mod:`.milvus`)."""
