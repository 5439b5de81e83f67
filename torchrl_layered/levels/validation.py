"""Checks on what a level receives, made before anything is stored or counted."""
from __future__ import annotations


class InvalidDataError(ValueError):
    """Data a level or hierarchy refuses: non-finite values, wrong shapes or dtypes, a foreign batch."""
