"""Status changes of files, pushed to the requests waiting on them (long-polls, server-sent events).

One LISTEN connection per process, on channel `file_status` that a trigger (sql/0003) notifies on
every status change. A notification only wakes the waiters of that file; they re-read the row, so a
lost notification costs at most one fallback poll interval, never a wrong answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from service.db import listening
from service.keys import file_events_key, settings_key

log = logging.getLogger("service.events")

FILE_STATUS = "file_status"


class FileEvents:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def subscribe(self, file_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the file's status may have changed. Subscribe before reading the
        row, so that no change between the read and the wait goes unnoticed."""
        event = asyncio.Event()
        self._waiters[file_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[file_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[file_id]

    def notify(self, payload: str) -> None:
        try:
            file_id = json.loads(payload)["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("bad file_status payload %r", payload, extra={"action": "bad_notification"})
            return
        for event in self._waiters.get(file_id, ()):
            event.set()

    def wake_all(self) -> None:
        """After a reconnect: notifications may have been missed, everyone re-reads."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()


async def file_events_ctx(app: web.Application) -> AsyncIterator[None]:
    events = app[file_events_key] = FileEvents()
    async with listening(
        app[settings_key], {FILE_STATUS: events.notify}, name="file status listener", on_connect=events.wake_all
    ):
        yield
