"""What processing one file can come to. The worker turns every attempt into exactly one Outcome and records
it in one place (Worker._record): Finished, Failed (the bytes themselves are wrong: no retry helps) or
RetryAfter (back to the queue for a while)."""

from __future__ import annotations

from dataclasses import dataclass

from service.media.result import Analysis


class CorruptContent(Exception):
    """The bytes themselves are wrong (a checksum mismatch, a gap in the chunks, an unreadable image):
    FAILED at once, no retry helps."""


@dataclass(frozen=True)
class Finished:
    """Assembled, checked, analysed and stored: COMPLETED with this digest and analysis."""

    digest: str
    analysis: Analysis


@dataclass(frozen=True)
class Failed:
    """FAILED with this reason; the chunks are dropped."""

    reason: str


@dataclass(frozen=True)
class RetryAfter:
    """Back to the queue, taken again no sooner than `delay` seconds. counted: the attempt counts towards
    the attempts limit (False when the fault was not the file's: the database went away, say)."""

    delay: float
    reason: str
    counted: bool = True


Outcome = Finished | Failed | RetryAfter
