"""Sessions: register, login, refresh (rotating), logout."""
from __future__ import annotations

import asyncio
import logging
from functools import cache
from typing import Any

from aiohttp import web

from service.auth import RefreshToken, current_user, hash_password, issue_access_token, verify_password
from service.errors import AccountInactive, InvalidCredentials, RefreshTokenInvalid, RefreshTokenReused
from service.handlers.users import user_json
from service.keys import pool_key, settings_key
from service.models import User
from service.store import users
from service.validation import Field, email_address, read_json

log = logging.getLogger("service.auth")

EMAIL = Field("email", str, required=True, min_len=1, max_len=254)
NEW_PASSWORD = Field("password", str, required=True, min_len=8, max_len=1024)
PASSWORD = Field("password", str, required=True, max_len=1024)
NAME = Field("name", str, nullable=True, max_len=200)
REFRESH = Field("refresh_token", str, required=True, min_len=1, max_len=1024)


async def register(request: web.Request) -> web.Response:
    body = await read_json(request, EMAIL, NEW_PASSWORD, NAME)
    email = email_address(body["email"])
    password_hash = await asyncio.to_thread(hash_password, body["password"])  # argon2 is slow on purpose
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        user = await users.insert_user(conn, email, password_hash, body.get("name"))
        token = RefreshToken.new(request.app[settings_key], user.id)
        await users.set_refresh_token(conn, user.id, token.digest)
    return web.json_response(_session(request, user, token), status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_json(request, EMAIL, PASSWORD)
    email = body["email"].strip().lower()
    async with request.app[pool_key].acquire() as conn:
        found = await users.get_credentials(conn, email)
    # An unknown email costs the same argon2 verification as a known one: timing tells nothing.
    valid = await asyncio.to_thread(verify_password, found[1] if found else _dummy_hash(), body["password"])
    if found is None or not valid:
        raise InvalidCredentials("wrong email or password")
    if not found[0].is_active:
        raise AccountInactive("this account is deactivated")
    token = RefreshToken.new(request.app[settings_key], found[0].id)
    async with request.app[pool_key].acquire() as conn:
        user = await users.set_refresh_token(conn, found[0].id, token.digest)
    if user is None:  # deactivated (or deleted) between the two statements
        raise AccountInactive("this account is deactivated")
    return web.json_response(_session(request, user, token))


async def refresh(request: web.Request) -> web.Response:
    """Rotation: the presented token is consumed and a new pair issued. A genuine token that is no longer
    the current one was used before (stolen, or replayed): the whole session is revoked."""
    settings = request.app[settings_key]
    presented = RefreshToken.parse(settings, (await read_json(request, REFRESH))["refresh_token"])
    if presented.expired:
        raise RefreshTokenInvalid("refresh token expired: log in again")
    token = RefreshToken.new(settings, presented.user_id)
    async with request.app[pool_key].acquire() as conn:
        user = await users.rotate_refresh_token(conn, presented.user_id, presented.digest, token.digest)
        if user is not None:
            return web.json_response(_session(request, user, token))
        is_active = await users.get_is_active(conn, presented.user_id)
        if is_active is None:
            raise RefreshTokenInvalid("refresh token invalid")
        if not is_active:
            raise AccountInactive("this account is deactivated")
        await users.clear_refresh_token(conn, presented.user_id)
    log.warning("refresh token reused: session revoked",
                extra={"action": "refresh_token_reused", "user_id": presented.user_id})
    raise RefreshTokenReused("this refresh token was already used; the session is revoked: log in again")


async def logout(request: web.Request) -> web.Response:
    """Ends the refresh session; access tokens already issued stay valid until they expire (ACCESS_TOKEN_TTL)."""
    async with request.app[pool_key].acquire() as conn:
        await users.clear_refresh_token(conn, current_user(request).id)
    return web.Response(status=204)


def _session(request: web.Request, user: User, token: RefreshToken) -> dict[str, Any]:
    settings = request.app[settings_key]
    return {"access_token": issue_access_token(settings, user.id, user.role), "refresh_token": token.token,
            "token_type": "Bearer", "expires_in": settings.access_token_ttl, "user": user_json(user)}


@cache
def _dummy_hash() -> str:
    return hash_password("not anybody's password")
