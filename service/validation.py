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
MAX_QUERY_INT = 2**63 - 1  # a bigint: the largest integer a query parameter may carry (a capped one, too)
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: no sign, exponent or fullwidth digit
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "a list"}
_SCHEMA_TYPES = {str: "string", bool: "boolean", int: "integer", list: "array"}

# The rules below are regular expressions in the common subset of Python's and JSON Schema's (ECMA 262)
# dialects, so that service/openapi.py publishes the very pattern the server applies.
# What str.strip() removes (str.isspace()), spelled out: Python's and ECMA's \s differ at the edges.
WHITESPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL = "^[^\x00]*$"  # PostgreSQL text holds no NUL
NOT_BLANK = f"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"
# Characters a name must not carry because they do not show as themselves: control (Cc), format (Cf,
# e.g. U+202E which shows "evil\u202egnp.exe" as "evilexe.png"), line and paragraph separators (Zl, Zp).
# Listed from Python's unicodedata (tests/test_validation.py checks the list against it).
HIDDEN = (
    "\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
DISPLAYABLE = f"^[^{HIDDEN}]*[^{HIDDEN}{WHITESPACE}][^{HIDDEN}]*$"  # and not blank
# email_address's rule: one @ after a non-empty local part, a dotted domain, no whitespace once trimmed
_ADDRESS_PART = f"[^@.\x00{WHITESPACE}]+"
EMAIL_ADDRESS = f"^[{WHITESPACE}]*[^@\x00{WHITESPACE}]+@{_ADDRESS_PART}(?:\\.{_ADDRESS_PART})+[{WHITESPACE}]*$"


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
    min_items: int = 0  # list only
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None  # str only: a regular expression the whole value must match
    pattern_means: str = ""  # ... said in the refusal: "must <pattern_means>"

    def schema(self) -> dict[str, Any]:
        """This field as JSON Schema, for service/openapi.py: exactly what check() accepts."""
        schema: dict[str, Any] = {"type": _SCHEMA_TYPES[self.type]}
        if self.type is str:
            schema["pattern"] = self.pattern or (NOT_BLANK if self.min_len else NO_NUL)
            if self.min_len:
                schema["minLength"] = self.min_len
            if self.max_len is not None:
                schema["maxLength"] = self.max_len
        if self.type is list:
            if self.min_items:
                schema["minItems"] = self.min_items
            if self.max_len is not None:
                schema["maxItems"] = self.max_len
            if self.items is not None:
                schema["items"] = self.items.schema()
        if self.type is int:
            schema.update({k: v for k, v in (("minimum", self.minimum), ("maximum", self.maximum)) if v is not None})
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"].append(None)
        return schema


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
            body[f.name] = check(f, body[f.name], f.name)
        elif f.required:
            raise ValidationFailed(f"{f.name} is required", field=f.name)
    return body


def check(f: Field, value: Any, where: str) -> Any:
    """The value if it is what the field accepts (an integer sent as 2.0 becomes 2), else ValidationFailed."""
    if value is None:
        if not f.nullable:
            raise ValidationFailed(f"{where} must not be null", field=where)
        return None
    if f.type is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema: a number with a zero fractional part is an integer
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, f.type) or (f.type is int and isinstance(value, bool)):
        raise ValidationFailed(f"{where} must be {_TYPE_NAMES.get(f.type, f.type.__name__)}", field=where)
    if f.type is str:
        check_text(value, where)
        if f.min_len and not value.strip():
            raise ValidationFailed(f"{where} must not be blank", field=where)
        if len(value) < f.min_len:
            raise ValidationFailed(f"{where} must be at least {f.min_len} characters", field=where)
        if f.pattern is not None and not re.fullmatch(f.pattern, value):
            raise ValidationFailed(f"{where} must {f.pattern_means or 'match ' + f.pattern}", field=where)
    if f.type in (str, list) and f.max_len is not None and len(value) > f.max_len:
        unit = "characters" if f.type is str else "items"
        raise ValidationFailed(f"{where} must be at most {f.max_len} {unit}", field=where)
    if f.type is list and len(value) < f.min_items:
        raise ValidationFailed(f"{where} must have at least {f.min_items} items", field=where)
    if f.type is list and f.items is not None:
        value = [check(f.items, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if f.choices is not None and value not in f.choices:
        raise ValidationFailed(f"{where} must be one of {', '.join(map(str, f.choices))}", field=where)
    if f.type is int:
        if f.minimum is not None and value < f.minimum:
            raise ValidationFailed(f"{where} must be at least {f.minimum}", field=where)
        if f.maximum is not None and value > f.maximum:
            raise ValidationFailed(f"{where} must be at most {f.maximum}", field=where)
    return value


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
    """An integer query parameter (absent: `default`; empty is not a number). Above `maximum` it is
    refused, or clamped when `cap` is set."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise ValidationFailed(f"{name} must be an integer, got {raw[:40]!r}", field=name)
    value = int(raw)
    if value > MAX_QUERY_INT:
        raise ValidationFailed(f"{name} must be at most {MAX_QUERY_INT}", field=name)
    if value < minimum:
        raise ValidationFailed(f"{name} must be at least {minimum}", field=name)
    if maximum is not None and value > maximum:
        if cap:
            return maximum
        raise ValidationFailed(f"{name} must be at most {maximum}", field=name)
    return value


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str | None:
    """One of `choices`, matched case-insensitively and returned as spelled there; absent: None."""
    raw = request.query.get(name)
    if raw is None:
        return None
    allowed = {c.upper(): c for c in choices}
    if raw.upper() not in allowed:
        raise ValidationFailed(f"{name} must be one of {', '.join(allowed.values())}", field=name)
    return allowed[raw.upper()]


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
