"""Every typed key of the application state, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service.config import Settings
from service.models import CurrentUser

if TYPE_CHECKING:
    from service.auth import Passwords, SessionClaims, TokenClaims
    from service.bodies import BodyMemory
    from service.db import Pool
    from service.events import FileEvents
    from service.links import SignedLink
    from service.storage import BlobStore
    from service.tus_locks import UploadLocks
    from service.webui import WebPages
    from service.worker import Worker

settings_key = web.AppKey("settings_key", Settings)
pool_key: web.AppKey[Pool] = web.AppKey("pool_key", asyncpg.Pool)
user_key = web.RequestKey("user_key", CurrentUser)
# A caller the handler checks itself (auth.checks_its_caller), until it has.
pending_caller_key: web.RequestKey[SessionClaims | TokenClaims] = web.RequestKey("pending_caller_key")
tus_locks_key: web.AppKey[UploadLocks] = web.AppKey("tus_locks_key")
# Long-polls and event streams are slow on purpose: access_middleware does not warn about them.
slow_by_design_key = web.RequestKey("slow_by_design_key", bool)
file_events_key: web.AppKey[FileEvents] = web.AppKey("file_events_key")
worker_key: web.AppKey[Worker] = web.AppKey("worker_key")
# Called when the app's worker dies of a side task (`chunkd serve` stops serving: see worker.worker_ctx).
on_worker_death_key: web.AppKey[Callable[[], None]] = web.AppKey("on_worker_death_key")
body_memory_key: web.AppKey[BodyMemory] = web.AppKey("body_memory_key")
storage_key: web.AppKey[BlobStore] = web.AppKey("storage_key")
passwords_key: web.AppKey[Passwords] = web.AppKey("passwords_key")
# A request authorised by a signed link (service/links.py): which file and resource it opens.
link_key: web.RequestKey[SignedLink] = web.RequestKey("link_key")
web_pages_key: web.AppKey[WebPages] = web.AppKey("web_pages_key")
