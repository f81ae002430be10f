"""What the bytes themselves can get wrong. Assembly is service/storage/assembly.py; analysis is service/media."""

from __future__ import annotations


class CorruptContent(Exception):
    """The bytes themselves are wrong: FAILED at once, no retry helps."""
