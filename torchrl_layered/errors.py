"""The library's own exceptions, importable from every layer."""
from __future__ import annotations


class InvalidDataError(ValueError):
    """Data a level or hierarchy refuses: non-finite values, wrong shapes or dtypes, a foreign batch."""
