"""medhash: content-based image retrieval for radiotherapy."""
__version__ = "0.1.0"
