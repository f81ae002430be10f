"""Property-based fuzz of the whole API, driven by /openapi.json: for every operation, hypothesis makes
requests from its parameters and body schema (well-typed values, wrong types, and junk), sent as a
signed-in user. No answer may be a 5xx, and every 4xx must be an RFC 9457 problem.

Requests are generated first (hypothesis, deterministic: derandomize) and then sent, so that the
aiohttp test client keeps its own event loop; a failure names the request that caused it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import insert_file
from tests.uploading import create

EXAMPLES = 40  # per operation: about 1700 requests per role, ~10 s
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
# Text that hurts: NUL, CR/LF, separators, quotes, RTL override, astral and non-ASCII digits, next to plain text.
NASTY = st.one_of(
    st.text(max_size=60), st.text(st.sampled_from("\x00\r\n%/.\\'\"; \u202e日🦄０a0-"), min_size=1, max_size=20)
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
JUNK_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
NUMBERS = st.one_of(st.integers(), st.integers(-3, 3), st.just(2**63), st.floats(allow_nan=False, allow_infinity=False))


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} ?{self.query} {self.headers} {self.body[:200] if self.body else b''!r}"


def _type(schema: dict[str, Any]) -> str:
    """The schema's JSON type; of a nullable one (["string", "null"]) the other one."""
    kind = schema.get("type", "")
    return kind[0] if isinstance(kind, list) else kind


def value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the schema's type most of the time, anything JSON otherwise."""
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "string": NASTY,
        "integer": NUMBERS,
        "boolean": st.booleans(),
        "array": st.lists(NASTY, max_size=4),
    }
    typed = strategies.get(_type(schema), JUNK_JSON)
    return st.one_of(typed, typed, typed, JUNK_JSON)


def query_value(kind: str) -> st.SearchStrategy[str]:
    if kind == "integer":
        return st.one_of(st.integers(-5, 200).map(str), st.integers().map(str), NASTY)
    return NASTY


def body_for(operation: dict[str, Any]) -> st.SearchStrategy[tuple[bytes | None, str | None]]:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        props = schema.get("properties", {})
        objects = st.fixed_dictionaries({}, optional={k: value_for(v) for k, v in props.items()})
        required = schema.get("required", [])
        well_typed = st.fixed_dictionaries(
            {k: value_for(props[k]) for k in required},
            optional={k: value_for(v) for k, v in props.items() if k not in required},
        )
        as_json = st.one_of(well_typed, well_typed, objects, JUNK_JSON).map(lambda v: json.dumps(v).encode())
        raw = st.binary(max_size=60)
        return st.tuples(st.one_of(as_json, as_json, as_json, raw), st.just("application/json"))
    if content:
        media = next(iter(content))
        return st.tuples(st.binary(max_size=200), st.sampled_from([media, "application/json", "text/plain"]))
    return st.just((None, None))


def calls_for(method: str, path: str, operation: dict[str, Any], ids: list[str], count: int) -> list[Call]:
    params = operation.get("parameters", [])
    path_names = [p["name"] for p in params if p["in"] == "path"]
    ids_or_junk = st.one_of(
        st.sampled_from(ids), NASTY.filter(bool), st.sampled_from(["' OR 1=1 --", "..", "%00", "0", "-1", "x" * 300])
    )
    query = st.fixed_dictionaries(
        {}, optional={p["name"]: query_value(_type(p["schema"])) for p in params if p["in"] == "query"}
    )
    headers = st.fixed_dictionaries(
        {}, optional={p["name"]: HEADER_TEXT for p in params if p["in"] == "header" and p["name"] != "Tus-Resumable"}
    )
    made: list[Call] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.fixed_dictionaries(dict.fromkeys(path_names, ids_or_junk)), query, headers, body_for(operation))
    def collect(
        path_values: dict[str, str], q: dict[str, str], h: dict[str, str], body: tuple[bytes | None, str | None]
    ) -> None:
        filled = path
        for name, value in path_values.items():
            filled = filled.replace("{" + name + "}", quote(value, safe=""))
        data, media = body
        sent = {**h, "Tus-Resumable": "1.0.0", **({"Content-Type": media} if media else {})}
        made.append(Call(method.upper(), filled, q, sent, data))

    collect()
    return made


@pytest.mark.parametrize("role", ["USER", "ADMIN"])
async def test_no_operation_answers_5xx_or_a_non_problem_error(client, make_user, conn, storage_dir, role) -> None:
    """As a user, and as an admin (whose routes read their bodies and parameters past the role check)."""
    caller = await make_user(role=role)
    owner = await make_user()
    document = await (await client.get("/openapi.json")).json()
    upload = await create(client, caller, b"fuzz" * 100)
    served = await insert_file(conn, caller.id, size=10)  # COMPLETED, with its bytes: Range is fuzzed too
    (storage_dir / served["path"]).parent.mkdir(parents=True, exist_ok=True)
    (storage_dir / served["path"]).write_bytes(b"0123456789")
    tus = await client.post("/api/tus/", headers={**caller.headers, "Tus-Resumable": "1.0.0", "Upload-Length": "9"})
    ids = [
        upload["id"],
        served["id"],
        tus.headers["Location"].rsplit("/", 1)[-1],
        owner.id,
        (await insert_file(conn, caller.id, status="FAILED"))["id"],
    ]
    started = time.monotonic()
    sent = 0
    for path, operations in sorted(document["paths"].items()):
        for method, operation in sorted(operations.items()):
            # An SSE stream of an unfinished file never ends: only ids of no file there.
            known = ["nope"] if path.endswith("/events") else ids
            for call in calls_for(method, path, operation, known, EXAMPLES):
                r = await client.request(
                    call.method,
                    call.path,
                    params=call.query,
                    headers={**caller.headers, **call.headers},
                    data=call.body,
                )
                text = await r.text(errors="replace")
                sent += 1
                assert r.status < 500, f"{call} -> {r.status} {text[:300]}"
                if r.status >= 400 and call.method != "HEAD":
                    assert r.content_type == "application/problem+json", f"{call} -> {r.status} {text[:300]}"
                    body = json.loads(text)
                    assert body.keys() >= PROBLEM_KEYS and body["status"] == r.status, f"{call} -> {body}"
    assert sent >= 30 * EXAMPLES
    assert time.monotonic() - started < 300  # catches a hang, not a busy machine (~10 s when idle)
