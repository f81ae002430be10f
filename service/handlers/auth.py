"""Sessions: register, login (throttled), refresh (rotating within its session), logout, the caller's
sessions, and the password change."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from service.auth import RefreshToken, issue_access_token, new_session_secret, require_session
from service.errors import (
    AccountInactive,
    CurrentPasswordWrong,
    InvalidCredentials,
    RefreshTokenInvalid,
    RefreshTokenReused,
    SessionNotFound,
    TooManyLogins,
)
from service.handlers.users import user_json
from service.keys import passwords_key, pool_key, settings_key
from service.models import Session, User
from service.store import logins, sessions, users
from service.validation import EMAIL_ADDRESS, Field, email_address, path_id, read_json

log = logging.getLogger("service.auth")

EMAIL = Field("email", str, required=True, min_len=1, max_len=254)
NEW_EMAIL = Field(
    "email", str, required=True, min_len=1, max_len=254, pattern=EMAIL_ADDRESS, pattern_means="be an email address"
)
NEW_PASSWORD = Field("password", str, required=True, min_len=8, max_len=1024)
PASSWORD = Field("password", str, required=True, max_len=1024)
NAME = Field("name", str, nullable=True, max_len=200)
DEVICE = Field("device", str, nullable=True, min_len=1, max_len=200)
REFRESH = Field("refresh_token", str, required=True, min_len=1, max_len=1024)
CURRENT_PASSWORD = Field("current_password", str, required=True, max_len=1024)
CHANGED_PASSWORD = Field("new_password", str, required=True, min_len=8, max_len=1024)
MAX_DEVICE = 200
REUSED = "refresh token reused"  # why a session was revoked, when it was for reuse


async def register(request: web.Request) -> web.Response:
    body = await read_json(request, NEW_EMAIL, NEW_PASSWORD, NAME, DEVICE)
    email = email_address(body["email"])
    password_hash = await request.app[passwords_key].hash(body["password"])
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        user = await users.insert_user(conn, email, password_hash, body.get("name"))
        session = await _start_session(request, conn, user.id, body.get("device"))
    return web.json_response(session, status=201)


async def login(request: web.Request) -> web.Response:
    """Failed logins are counted per account and per client address; past LOGIN_MAX_FAILURES within
    LOGIN_WINDOW either one answers 429 before any password is hashed, so a flood costs a few cheap
    statements per request. An unknown email costs the same argon2 verification as a wrong password."""
    settings = request.app[settings_key]
    body = await read_json(request, EMAIL, PASSWORD, DEVICE)
    email = body["email"].strip().lower()
    keys = [f"email:{email}", f"ip:{request.remote}"]
    async with request.app[pool_key].acquire() as conn:
        attempt = await logins.insert_attempt(conn, keys, settings.login_window)
        if attempt.failures > settings.login_max_failures:
            await logins.delete_attempt(conn, attempt)
            raise TooManyLogins(
                f"too many failed logins; try again in {attempt.retry_after} s",
                headers={"Retry-After": str(attempt.retry_after)},
            )
        found = await users.get_credentials(conn, email)
    valid = await request.app[passwords_key].verify(found[1] if found else None, body["password"])
    if found is None or not valid:
        raise InvalidCredentials("wrong email or password")  # the attempt stays: a failure
    user = found[0]
    async with request.app[pool_key].acquire() as conn:
        await logins.delete_attempt(conn, attempt)
        await logins.delete_failures(conn, keys[0])
        if not user.is_active:
            raise AccountInactive("this account is deactivated")
        async with conn.transaction():
            session = await _start_session(request, conn, user.id, body.get("device"))
    return web.json_response(session)


async def refresh(request: web.Request) -> web.Response:
    """Rotation within the token's session: the presented token is consumed and a new pair issued. A
    genuine token that is no longer its session's current one was used before (stolen, or replayed):
    that session is revoked, and only that one."""
    settings = request.app[settings_key]
    presented = RefreshToken.parse(settings, (await read_json(request, REFRESH))["refresh_token"])
    if presented.expired:
        raise RefreshTokenInvalid("refresh token expired: log in again")
    token = RefreshToken.new(settings, presented.session_id)
    async with request.app[pool_key].acquire() as conn:
        user = await sessions.rotate_refresh_token(
            conn, presented.session_id, presented.digest, token.digest, request.remote, settings.refresh_token_ttl
        )
        if user is not None:
            return web.json_response(session_json(request, user, presented.session_id, token))
        found = await sessions.get_session(conn, presented.session_id)
        owner = None if found is None else await users.get_user(conn, found[0].user_id)
        if found is None or owner is None:
            raise RefreshTokenInvalid("refresh token invalid")
        session, expired = found
        if not owner.is_active:
            raise AccountInactive("this account is deactivated")
        if session.revoked_at is not None and session.revoked_why != REUSED:
            raise RefreshTokenInvalid(f"this session has ended ({session.revoked_why}): log in again")
        if expired:
            raise RefreshTokenInvalid("this session has expired: log in again")
        await sessions.revoke_session(conn, session.id, None, REUSED)
    log.warning(
        "refresh token reused: session revoked",
        extra={"action": "refresh_token_reused", "user_id": session.user_id, "session_id": session.id},
    )
    raise RefreshTokenReused("this refresh token was already used; its session is revoked: log in again")


async def logout(request: web.Request) -> web.Response:
    """Ends the caller's session: its refresh token and its access tokens stop working at once."""
    user = require_session(request)
    async with request.app[pool_key].acquire() as conn:
        await sessions.revoke_session(conn, user.session_id, user.id, "logout")  # type: ignore[arg-type]
    return web.Response(status=204)


async def list_sessions(request: web.Request) -> web.Response:
    user = require_session(request)
    async with request.app[pool_key].acquire() as conn:
        rows = await sessions.list_sessions(conn, user.id)
    return web.json_response({"sessions": [_session_view(s, s.id == user.session_id) for s in rows]})


async def delete_session(request: web.Request) -> web.Response:
    user = require_session(request)
    session_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        if not await sessions.revoke_session(conn, session_id, user.id, "revoked by its user"):
            raise SessionNotFound(f"session {session_id}")
    return web.Response(status=204)


async def change_password(request: web.Request) -> web.Response:
    """The current password again, then the new one; every other session of the user ends."""
    user = require_session(request)
    body = await read_json(request, CURRENT_PASSWORD, CHANGED_PASSWORD)
    passwords = request.app[passwords_key]
    async with request.app[pool_key].acquire() as conn:
        found = await users.get_credentials(conn, user.email)
    if found is None or not await passwords.verify(found[1], body["current_password"]):
        raise CurrentPasswordWrong("current_password is not this account's password")
    new_hash = await passwords.hash(body["new_password"])
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        await users.set_password(conn, user.id, new_hash)
        ended = await sessions.revoke_user_sessions(conn, user.id, "password changed", keep=user.session_id)
    return web.json_response({"sessions_ended": ended})


async def _start_session(request: web.Request, conn: Any, user_id: str, device: str | None) -> dict[str, Any]:
    settings = request.app[settings_key]
    session_id, token = new_session_secret(settings)
    label = device or request.headers.get("User-Agent", "")[:MAX_DEVICE].strip() or "unknown device"
    user = await sessions.insert_session(
        conn, session_id, user_id, label, request.remote, token.digest, settings.refresh_token_ttl
    )
    if user is None:  # deactivated (or deleted) since the password was checked
        raise AccountInactive("this account is deactivated")
    return session_json(request, user, session_id, token)


def session_json(request: web.Request, user: User, session_id: str, token: RefreshToken) -> dict[str, Any]:
    settings = request.app[settings_key]
    return {
        "access_token": issue_access_token(settings, user.id, user.role, session_id),
        "refresh_token": token.token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
        "session_id": session_id,
        "user": user_json(user),
    }


def _session_view(session: Session, current: bool) -> dict[str, Any]:
    return {
        "id": session.id,
        "device": session.device,
        "ip": session.ip,
        "current": current,
        "created_at": session.created_at.isoformat(),
        "last_used_at": session.last_used_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
    }
