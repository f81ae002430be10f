"""Passwords (argon2id), access tokens (short-lived JWT) and refresh tokens (random, stored hashed);
the auth middleware that puts the caller on every /api request."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from service.config import Settings
from service.errors import Forbidden, RefreshTokenInvalid, Unauthorized
from service.keys import pool_key, settings_key, user_key
from service.models import CurrentUser
from service.store import users

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
ALGORITHM = "HS256"

# Reachable without an access token: getting one, and the ops endpoints outside /api.
PUBLIC_PATHS = frozenset({"/api/auth/register", "/api/auth/login", "/api/auth/refresh"})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_access_token(settings: Settings, user_id: str, role: str) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "role": role, "iat": now, "exp": now + settings.access_token_ttl, "typ": "access"}
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> str:
    """The user id of a valid access token; Unauthorized for a missing, expired or forged one."""
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired: refresh it") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("access token invalid") from None
    if claims.get("typ") != "access" or not isinstance(claims["sub"], str):
        raise Unauthorized("access token invalid")
    return claims["sub"]


@dataclass(frozen=True)
class RefreshToken:
    """`<user id>.<expiry>.<nonce>.<mac>`: names its user and expiry; only its SHA-256 is stored.

    The MAC (HMAC-SHA256 under JWT_SECRET) tells a token this server issued from a forged one, so only
    a genuine but already-consumed token counts as reuse and revokes the session; without it, anyone
    who knows a user id (authors' ids are public in post listings) could log that user out at will."""
    token: str
    user_id: str
    expires_at: int

    @classmethod
    def new(cls, settings: Settings, user_id: str) -> RefreshToken:
        expires_at = int(time.time()) + settings.refresh_token_ttl
        body = f"{user_id}.{expires_at}.{secrets.token_urlsafe(32)}"
        return cls(f"{body}.{_mac(settings, body)}", user_id, expires_at)

    @classmethod
    def parse(cls, settings: Settings, token: str) -> RefreshToken:
        parts = token.split(".")
        if len(parts) != 4:
            raise RefreshTokenInvalid("refresh token invalid")
        user_id, expiry, nonce, mac = parts
        body = token.rpartition(".")[0]
        genuine = hmac.compare_digest(mac.encode(), _mac(settings, body).encode())
        if not user_id or not expiry.isdigit() or len(nonce) < 32 or not genuine:
            raise RefreshTokenInvalid("refresh token invalid")
        return cls(token, user_id, int(expiry))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def _mac(settings: Settings, body: str) -> str:
    digest = hmac.new(settings.jwt_secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api route needs a valid access token of an active user, except PUBLIC_PATHS and
    CORS preflights. The user row is read per request: deactivation and role changes apply at once."""
    if not request.path.startswith("/api/") or request.path in PUBLIC_PATHS or request.method == "OPTIONS":
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send `Authorization: Bearer <access token>`",
                           headers={"WWW-Authenticate": 'Bearer realm="chunkd"'})
    user_id = decode_access_token(request.app[settings_key], token.strip())
    async with request.app[pool_key].acquire() as conn:
        user = await users.get_user(conn, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("account unknown or inactive")
    request[user_key] = CurrentUser(user.id, user.email, user.role)
    return await handler(request)


def current_user(request: web.Request) -> CurrentUser:
    return request[user_key]


def require_admin(request: web.Request) -> CurrentUser:
    user = request[user_key]
    if not user.is_admin:
        raise Forbidden("this needs the ADMIN role")
    return user
