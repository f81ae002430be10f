"""Who is calling: passwords (argon2id, bounded by a semaphore), access tokens (short-lived JWT naming
their session), refresh tokens (random, naming their session, stored hashed), API tokens (`ckd_...`,
stored hashed, with scopes) and signed links; the auth middleware that puts the caller on every /api
request and enforces scopes."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import cached_property

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from service import links
from service.config import Settings
from service.errors import Forbidden, InsufficientScope, RefreshTokenInvalid, SessionRequired, Unauthorized
from service.keys import pending_caller_key, pool_key, settings_key, user_key
from service.models import ApiToken, CurrentUser, Role, Scope, User, expand_scopes
from service.store import sessions, tokens

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
ALGORITHM = "HS256"
API_TOKEN_PREFIX = "ckd_"

# Reachable without an access token: getting one, and the ops endpoints outside /api.
PUBLIC_PATHS = frozenset({"/api/auth/register", "/api/auth/login", "/api/auth/refresh"})
# Methods that only read: a `read` scope is enough for them; everything else needs `upload`.
READING = frozenset({"GET", "HEAD"})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


class Passwords:
    """argon2 off the event loop, at most `concurrency` at once: a login flood queues here instead of
    filling the default thread pool, which file IO of uploads and the worker needs too. An unknown
    email is verified against a dummy hash, so it costs the same time as a wrong password."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(hash_password, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        async with self._slots:
            valid = await asyncio.to_thread(verify_password, hashed or self._dummy, password)
        return valid and hashed is not None

    @cached_property
    def _dummy(self) -> str:
        return hash_password("not anybody's password")


def issue_access_token(settings: Settings, user_id: str, role: str, session_id: str) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "sid": session_id,
        "role": role,
        "iat": now,
        "exp": now + settings.access_token_ttl,
        "typ": "access",
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> tuple[str, str]:
    """(user id, session id) of a valid access token; Unauthorized for a missing, expired or forged one,
    and for one issued before sessions existed (it names none)."""
    user_id, session_id, expires = _verified_claims(settings.jwt_secret, token)
    if expires <= time.time():
        raise Unauthorized("access token expired: refresh it")
    return user_id, session_id


# Decoding a JWT (base64, JSON, HMAC, claim checks) was the largest single cost of a status poll; a
# client sends the same access token for its lifetime. Only genuine tokens are kept (a refusal raises,
# and is not cached), expiry is checked on every use, and whether the session is live is still asked
# of the database on every request: caching the signature check changes no answer.
@functools.lru_cache(maxsize=4096)
def _verified_claims(secret: str, token: str) -> tuple[str, str, float]:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired: refresh it") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("access token invalid") from None
    if claims.get("typ") != "access" or not isinstance(claims["sub"], str) or not isinstance(claims.get("sid"), str):
        raise Unauthorized("access token invalid")
    return claims["sub"], claims["sid"], float(claims["exp"])


@dataclass(frozen=True)
class RefreshToken:
    """`<session id>.<expiry>.<nonce>.<mac>`: names its session and expiry; only its SHA-256 is stored.

    The MAC (HMAC-SHA256 under JWT_SECRET) tells a token this server issued from a forged one, so only
    a genuine but already-consumed token counts as reuse and revokes the session; without it, anyone
    who knows a session id could end that session at will. Tokens from before sessions existed named
    their user instead; migration 0013 gave each such session the user's id, so they still parse."""

    token: str
    session_id: str
    expires_at: int

    @classmethod
    def new(cls, settings: Settings, session_id: str) -> RefreshToken:
        expires_at = int(time.time()) + settings.refresh_token_ttl
        body = f"{session_id}.{expires_at}.{secrets.token_urlsafe(32)}"
        return cls(f"{body}.{mac(settings, body)}", session_id, expires_at)

    @classmethod
    def parse(cls, settings: Settings, token: str) -> RefreshToken:
        parts = token.split(".")
        if len(parts) != 4:
            raise RefreshTokenInvalid("refresh token invalid")
        session_id, expiry, nonce, signature = parts
        body = token.rpartition(".")[0]
        genuine = hmac.compare_digest(signature.encode(), mac(settings, body).encode())
        if not session_id or not expiry.isdigit() or len(nonce) < 32 or not genuine:
            raise RefreshTokenInvalid("refresh token invalid")
        return cls(token, session_id, int(expiry))

    @property
    def digest(self) -> str:
        return digest(self.token)

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def new_session_secret(settings: Settings) -> tuple[str, RefreshToken]:
    """A session id chosen here (so the first refresh token can name it) and that token."""
    session_id = secrets.token_hex(16)
    return session_id, RefreshToken.new(settings, session_id)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mac(settings: Settings, body: str) -> str:
    signature = hmac.new(settings.jwt_secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api route needs a caller, except PUBLIC_PATHS and CORS preflights: a session's access
    token, an API token, or (for a file's content, thumbnail and events) a signed link. The session
    or token is read with its user on every request, in one statement: a revoked session, a revoked
    token, a deactivation or a role change applies at once. Then the scope: reading needs `read`,
    anything else `upload`; admin routes check `admin` themselves (require_admin)."""
    if not request.path.startswith("/api/") or request.path in PUBLIC_PATHS or request.method == "OPTIONS":
        return await handler(request)
    if links.SIGNATURE in request.query:
        request[user_key] = await links.caller(request)
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "send `Authorization: Bearer <access token or API token>`",
            headers={"WWW-Authenticate": 'Bearer realm="chunkd"'},
        )
    if request.match_info.handler in _CHECK_THEIR_CALLER:
        # The token's form (and a JWT's signature and expiry) here; the session or token and its user in
        # the handler's own statement.
        request[pending_caller_key] = (
            TokenClaims(digest(token))
            if token.startswith(API_TOKEN_PREFIX)
            else SessionClaims(*decode_access_token(request.app[settings_key], token))
        )
        return await handler(request)
    user = await (
        _api_token_caller(request, token) if token.startswith(API_TOKEN_PREFIX) else _session_caller(request, token)
    )
    request[user_key] = _with_scope(request, user)
    return await handler(request)


def _with_scope(request: web.Request, user: CurrentUser) -> CurrentUser:
    needed = Scope.READ if request.method in READING else Scope.UPLOAD
    if needed not in user.scopes:
        raise InsufficientScope(
            f"this token's scopes ({', '.join(sorted(user.scopes))}) do not include {needed}", needed=needed
        )
    return user


async def _session_caller(request: web.Request, token: str) -> CurrentUser:
    user_id, session_id = decode_access_token(request.app[settings_key], token)
    async with request.app[pool_key].acquire() as conn:
        user = await sessions.get_session_user(conn, session_id, user_id)
    return _session_user(user, session_id)


def _session_user(user: User | None, session_id: str) -> CurrentUser:
    if user is None:
        raise Unauthorized("the session has ended or the account is inactive: log in again")
    scopes = expand_scopes([Scope.ADMIN] if user.role == Role.ADMIN else [Scope.UPLOAD])
    return CurrentUser(user.id, user.email, user.role, scopes=scopes, session_id=session_id)


@dataclass(frozen=True)
class SessionClaims:
    """A valid access token's user and session, not yet checked against the database."""

    user_id: str
    session_id: str


@dataclass(frozen=True)
class TokenClaims:
    """An API token's SHA-256, not yet looked up."""

    token_hash: str


# Handlers that check their caller themselves, in the statement that reads what they answer.
_CHECK_THEIR_CALLER: set[Handler] = set()


def checks_its_caller(handler: Handler) -> Handler:
    """Marks a read-only handler that checks its caller in the statement that reads its answer (a
    status poll: one round trip). auth_middleware checks only the token's form (and an access token's
    signature and expiry) and leaves the session or API token and its user to the handler, which
    passes what its statement found to accept_caller. No window opens: a revoked session or token, a
    deactivation or a role change applies to the very next request, as everywhere else."""
    _CHECK_THEIR_CALLER.add(handler)
    return handler


def pending_caller(request: web.Request) -> SessionClaims | TokenClaims | None:
    """What a checks_its_caller handler must still check, until accept_caller has run."""
    return request.get(pending_caller_key)


def accept_caller(
    request: web.Request, claims: SessionClaims | TokenClaims, found: User | tuple[ApiToken, User] | None
) -> CurrentUser:
    """The caller from what the handler's statement found for the claims: the user of a live session,
    or an API token and its user (None: ended, revoked, expired or inactive: 401 as auth_middleware
    answers it); then the scope, as auth_middleware checks it."""
    if isinstance(claims, SessionClaims):
        assert not isinstance(found, tuple)
        caller = _session_user(found, claims.session_id)
    else:
        assert not isinstance(found, User)
        caller = _token_user(found)
    request[user_key] = _with_scope(request, caller)
    del request[pending_caller_key]
    return caller


async def _api_token_caller(request: web.Request, token: str) -> CurrentUser:
    async with request.app[pool_key].acquire() as conn:
        found = await tokens.get_token_user(conn, digest(token))
    return _token_user(found)


def _token_user(found: tuple[ApiToken, User] | None) -> CurrentUser:
    if found is None:
        raise Unauthorized("API token unknown, revoked or expired, or its account is inactive")
    api_token, user = found
    scopes = expand_scopes(api_token.scopes)
    if user.role != Role.ADMIN:
        scopes -= {Scope.ADMIN}  # minted by an admin since demoted: the role is what counts
    return CurrentUser(user.id, user.email, user.role, scopes=scopes, token_id=api_token.id)


def current_user(request: web.Request) -> CurrentUser:
    return request[user_key]


def require_admin(request: web.Request) -> CurrentUser:
    user = request[user_key]
    if not user.is_admin:
        raise Forbidden("this needs the ADMIN role")
    if Scope.ADMIN not in user.scopes:
        raise InsufficientScope("this needs a token with the admin scope", needed=Scope.ADMIN)
    return user


def require_session(request: web.Request) -> CurrentUser:
    """Sessions and passwords are managed from a login, never with an API token or a link: a leaked
    script token must not be able to lock its owner out."""
    user = request[user_key]
    if user.session_id is None:
        raise SessionRequired("this needs a login session's access token, not an API token")
    return user
