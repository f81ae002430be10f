"""Reading requests strictly: JSON bodies field by field, query parameters, path ids.

Every refusal is a problem naming the offending input in the `field` extension member, and happens
before anything is written. Usage:

    TITLE = Field("title", str, required=True, min_len=1, max_len=200)
    body = await read_json(request, TITLE, Field("published", bool))    # only the fields sent
    page = read_page(request)                                           # ?page=&limit=, limit capped
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.errors import InvalidJson, UnsupportedMediaType, ValidationFailed

MAX_PAGE = 1_000_000  # page * limit must stay a bigint OFFSET; nobody pages this far by hand
DEFAULT_LIMIT, MAX_LIMIT = 10, 100
MAX_ID_LENGTH = 200
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only, and small enough for a bigint
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "a list"}


@dataclass(frozen=True)
class Field:
    """One member of a JSON object body. Lengths count characters (str) or items (list)."""

    name: str
    type: type[Any]
    required: bool = False
    nullable: bool = False
    min_len: int = 0  # for str, >= 1 also refuses blank (whitespace-only) strings
    max_len: int | None = None
    minimum: int | None = None  # int only
    maximum: int | None = None
    items: Field | None = None  # list only: how each element is checked (its name is ignored)
    choices: tuple[Any, ...] | None = None


async def read_json(request: web.Request, *fields: Field) -> dict[str, Any]:
    """The body as a dict of the fields that were sent (absent fields stay absent: PATCH needs that)."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as application/json, not {request.content_type}")
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise InvalidJson("the body is not valid JSON (one object, UTF-8, no NaN, no repeated keys)") from None
    if not isinstance(body, dict):
        raise InvalidJson("the body must be a JSON object")
    known = {f.name: f for f in fields}
    for name in body:
        if name not in known:
            raise ValidationFailed(f"unknown field {name!r}; allowed: {', '.join(known)}", field=name)
    for f in fields:
        if f.name in body:
            check(f, body[f.name], f.name)
        elif f.required:
            raise ValidationFailed(f"{f.name} is required", field=f.name)
    return body


def check(f: Field, value: Any, where: str) -> None:
    if value is None:
        if not f.nullable:
            raise ValidationFailed(f"{where} must not be null", field=where)
        return
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, f.type) or (f.type is int and isinstance(value, bool)):
        raise ValidationFailed(f"{where} must be {_TYPE_NAMES.get(f.type, f.type.__name__)}", field=where)
    if f.type is str:
        check_text(value, where)
        if f.min_len and not value.strip():
            raise ValidationFailed(f"{where} must not be blank", field=where)
        if len(value) < f.min_len:
            raise ValidationFailed(f"{where} must be at least {f.min_len} characters", field=where)
    if f.type in (str, list) and f.max_len is not None and len(value) > f.max_len:
        unit = "characters" if f.type is str else "items"
        raise ValidationFailed(f"{where} must be at most {f.max_len} {unit}", field=where)
    if f.type is list and f.items is not None:
        for i, item in enumerate(value):
            check(f.items, item, f"{where}[{i}]")
    if f.choices is not None and value not in f.choices:
        raise ValidationFailed(f"{where} must be one of {', '.join(map(str, f.choices))}", field=where)
    if f.type is int:
        if f.minimum is not None and value < f.minimum:
            raise ValidationFailed(f"{where} must be at least {f.minimum}", field=where)
        if f.maximum is not None and value > f.maximum:
            raise ValidationFailed(f"{where} must be at most {f.maximum}", field=where)


def check_text(value: str, where: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them here, not with a 500 there."""
    if "\x00" in value:
        raise ValidationFailed(f"{where} must not contain NUL characters", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(f"{where} is not valid Unicode text", field=where) from None


def email_address(value: str, where: str = "email") -> str:
    """Normalised (trimmed, lower-case) and plausibly deliverable: one @, a dotted domain, no spaces."""
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or "@" in local
        or len(email) > 254
        or any(c.isspace() for c in email)
        or len(labels) < 2
        or not all(labels)
    ):
        raise ValidationFailed(f"{where} is not a valid email address", field=where)
    return email


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Parsers disagree on which of two equal keys wins (first or last): such a body means two things."""
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("repeated key")
    return body


# Query strings and paths


def query_int(
    request: web.Request, name: str, default: int, minimum: int, maximum: int | None = None, *, cap: bool = False
) -> int:
    """An integer query parameter. Above `maximum` it is refused, or clamped when `cap` is set."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise ValidationFailed(f"{name} must be an integer, got {raw[:40]!r}", field=name)
    value = int(raw)
    if value < minimum:
        raise ValidationFailed(f"{name} must be at least {minimum}", field=name)
    if maximum is not None and value > maximum:
        if cap:
            return maximum
        raise ValidationFailed(f"{name} must be at most {maximum}", field=name)
    return value


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str | None:
    """One of `choices`, matched case-insensitively and returned as spelled there; absent or empty: None."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    allowed = {c.upper(): c for c in choices}
    if raw.upper() not in allowed:
        raise ValidationFailed(f"{name} must be one of {', '.join(allowed.values())}", field=name)
    return allowed[raw.upper()]


def query_seconds(request: web.Request, name: str, maximum: int) -> float:
    """A duration like `5` or `2.5`, from 0 to `maximum` (absent: 0). ASCII digits only, so no nan or inf."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return 0.0
    if not _SECONDS.fullmatch(raw) or float(raw) > maximum:
        raise ValidationFailed(f"{name} must be a number of seconds from 0 to {maximum}", field=name)
    return float(raw)


def query_text(request: web.Request, name: str, max_len: int = MAX_ID_LENGTH) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    check_text(raw, name)
    if len(raw) > max_len:
        raise ValidationFailed(f"{name} must be at most {max_len} characters", field=name)
    return raw


def path_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info[name]
    check_id(value, name)
    return value


def check_id(value: str, where: str) -> None:
    """An id the client names (in a path, a header, a URL): text PostgreSQL can hold, of a bounded length."""
    check_text(value, where)
    if len(value) > MAX_ID_LENGTH:
        raise ValidationFailed(f"{where} must be at most {MAX_ID_LENGTH} characters", field=where)


def path_int(request: web.Request, name: str, minimum: int, maximum: int) -> int:
    """An integer path segment: ASCII digits (no sign, exponent or fullwidth digit), within bounds."""
    raw = request.match_info[name]
    if not _INTEGER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ValidationFailed(f"{name} must be an integer from {minimum} to {maximum}, got {raw[:40]!r}", field=name)
    return int(raw)


@dataclass(frozen=True)
class Page:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    def pagination(self, total: int) -> dict[str, int]:
        return {"page": self.page, "limit": self.limit, "total": total, "pages": math.ceil(total / self.limit)}


def read_page(request: web.Request, default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT) -> Page:
    """`?page=` (from 1) and `?limit=` (from 1, silently capped at max_limit, as the issue asks)."""
    return Page(
        query_int(request, "page", 1, 1, MAX_PAGE), query_int(request, "limit", default_limit, 1, max_limit, cap=True)
    )
