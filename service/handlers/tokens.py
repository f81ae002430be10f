"""API tokens for scripts and servers: minted once (the secret is shown only in the answer), listed,
revoked. A token never grants more than its minter holds: only an admin mints `admin`, and a token
can mint only tokens within its own scopes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.auth import current_user, digest, new_api_token
from service.errors import InsufficientScope, TokenNotFound
from service.keys import pool_key
from service.models import SCOPE_ORDER, ApiToken, Scope, expand_scopes
from service.store import tokens
from service.validation import Field, path_id, read_json

MAX_TOKEN_LIFETIME = 10 * 365 * 86400
NAME = Field("name", str, required=True, min_len=1, max_len=100)
SCOPES = Field("scopes", list, required=True, min_items=1, max_len=3, items=Field("scope", str, choices=tuple(Scope)))
EXPIRES_IN = Field("expires_in", int, nullable=True, minimum=60, maximum=MAX_TOKEN_LIFETIME)


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "scopes": list(token.scopes),
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
    }


async def create_token(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await read_json(request, NAME, SCOPES, EXPIRES_IN)
    scopes = sorted(set(body["scopes"]), key=_level)
    if Scope.ADMIN in scopes and not user.is_admin:
        raise InsufficientScope("only an admin may mint a token with the admin scope", needed=Scope.ADMIN)
    wider = expand_scopes(scopes) - user.scopes
    if wider:
        raise InsufficientScope(
            f"a token cannot grant more than its minter holds: {', '.join(sorted(wider))}",
            needed=max(wider, key=_level),
        )
    secret = new_api_token()
    async with request.app[pool_key].acquire() as conn:
        row = await tokens.insert_token(
            conn, user.id, body["name"].strip(), digest(secret), scopes, body.get("expires_in")
        )
    return web.json_response({**token_json(row), "token": secret}, status=201)


def _level(scope: str) -> int:
    return SCOPE_ORDER.index(Scope(scope))


async def list_tokens(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        rows = await tokens.list_tokens(conn, current_user(request).id)
    return web.json_response({"tokens": [token_json(r) for r in rows]})


async def delete_token(request: web.Request) -> web.Response:
    token_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        if not await tokens.delete_token(conn, token_id, current_user(request).id):
            raise TokenNotFound(f"token {token_id}")
    return web.Response(status=204)
