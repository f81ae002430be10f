"""GET /openapi.json describes every route of the server, and only those."""

from __future__ import annotations

import json
import re

from service.auth import PUBLIC_PATHS
from service.openapi import served_operations


def refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


async def test_every_route_is_in_the_document(client) -> None:
    response = await client.get("/openapi.json")  # no token needed
    assert response.status == 200 and response.content_type == "application/json"
    doc = await response.json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "chunkd"
    served = served_operations(client.server.app.router)
    missing = sorted(f"{m} {p}" for m, p in served if m.lower() not in doc["paths"].get(p, {}))
    assert missing == [], f"routes without an OpenAPI description (add them to service/openapi.py): {missing}"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served  # nothing described that the server does not have


async def test_document_is_self_consistent(client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for ref in refs(doc):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # every $ref resolves
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in ops.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            assert operation["responses"], (method, path)
            secured = path.startswith("/api/") and path not in PUBLIC_PATHS and method != "options"
            assert ("security" in operation) == secured, (method, path)
    json.dumps(doc)
