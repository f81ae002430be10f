"""Loaded by schemathesis (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks) in tests/test_openapi_conformance.py:
the bodies of a tus or draft append are raw bytes, sent as schemathesis sends application/octet-stream."""

import schemathesis

schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/partial-upload"], "application/octet-stream"
)
