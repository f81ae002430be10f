"""Signed links: a file's content, thumbnail or event stream without an Authorization header, so that
<img src>, a download link and EventSource work in a browser.

    /api/files/{id}/{purpose}?u={user id}&exp={unix time}&sig={base64url HMAC-SHA256}

The HMAC (a key derived from JWT_SECRET) covers the file id, the user the link was made for, the
purpose and the expiry: a link opens that one resource of that one file, read only, until it expires
or its user is deactivated. Expiries are rounded to half of LINK_TTL, so the links of an unchanged
file stay the same for a while (its ETag too) and a link handed out lives between LINK_TTL/2 and
LINK_TTL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from service.config import Settings
from service.errors import LinkExpired, LinkInvalid
from service.keys import link_key, pool_key, settings_key
from service.models import CurrentUser, Scope
from service.store import users

SIGNATURE = "sig"
PURPOSES = ("content", "thumbnail", "events")
_PATH = re.compile(r"/api/files/([^/]+)/(content|thumbnail|events)")
_EXPIRY = re.compile(r"[0-9]{1,12}")  # ASCII digits: str.isdigit() also takes "¹", which int() refuses


@dataclass(frozen=True)
class SignedLink:
    file_id: str
    user_id: str
    purpose: str


def expiry(settings: Settings, now: float | None = None) -> int:
    """The expiry of links made now: the same for LINK_TTL/2 at a time, LINK_TTL/2 to LINK_TTL away."""
    half = max(settings.link_ttl // 2, 1)
    return int(now if now is not None else time.time()) // half * half + settings.link_ttl


def sign(settings: Settings, file_id: str, user_id: str, purpose: str, expires: int | None = None) -> str:
    expires = expiry(settings) if expires is None else expires
    query = urlencode({"u": user_id, "exp": expires, SIGNATURE: _mac(settings, file_id, user_id, purpose, expires)})
    return f"/api/files/{file_id}/{purpose}?{query}"


async def caller(request: web.Request) -> CurrentUser:
    """The user a valid link was made for, allowed to read just that resource; 403 for anything else."""
    match = _PATH.fullmatch(request.path)
    if match is None or request.method not in ("GET", "HEAD"):
        raise LinkInvalid("signed links open only GET /api/files/{id}/content, /thumbnail or /events")
    file_id, purpose = match.groups()
    user_id, expiry, signature = (request.query.get(k, "") for k in ("u", "exp", SIGNATURE))
    settings = request.app[settings_key]
    if not user_id or not _EXPIRY.fullmatch(expiry):
        raise LinkInvalid("the link is incomplete: it needs u, exp and sig")
    if not hmac.compare_digest(signature.encode(), _mac(settings, file_id, user_id, purpose, int(expiry)).encode()):
        raise LinkInvalid("the link's signature does not match: it was changed or not made here")
    if int(expiry) <= time.time():
        raise LinkExpired("the link has expired: fetch the file again for a fresh one")
    async with request.app[pool_key].acquire() as conn:
        user = await users.get_active_user(conn, user_id)
    if user is None:
        raise LinkInvalid("the link's user is unknown or inactive")
    request[link_key] = SignedLink(file_id, user_id, purpose)
    return CurrentUser(user.id, user.email, user.role, scopes=frozenset({Scope.READ}))


def _mac(settings: Settings, file_id: str, user_id: str, purpose: str, expires: int) -> str:
    key = hmac.new(settings.jwt_secret.encode(), b"chunkd signed links", hashlib.sha256).digest()
    message = "\n".join((file_id, user_id, purpose, str(expires))).encode()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=").decode()
