"""The API description tells the truth: schemathesis `--checks all` against /openapi.json of a real
`chunkd serve` over a real socket. Every status, header and body it answers must be the one described; a
schema-valid request must be accepted and a schema-violating one refused; no answer may be a 5xx; 405s list the
route's own methods. The checks' few widened statuses, each with its reason, are in tests/schemathesis.toml.

Bounded: a few examples per operation with a fixed seed (the same requests every run), as an admin's API token
(which the run's own logout and password change cannot end), then the session-only operations with the admin's
login session. A failure prints schemathesis's report, each
mismatch with a curl line that reproduces it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support import ROOT

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = 3  # per operation and phase; the coverage phase adds its boundary cases on top
SEED = 15
TIMEOUT = 600  # seconds: a hard stop for a loaded machine, far above the run's usual time


async def test_schemathesis_finds_no_mismatch(chunkd, admin) -> None:
    server = chunkd("serve", WORKER_CONCURRENCY="1")
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin.token}"}) as http,
        http.post(f"{server.url}/api/tokens", json={"name": "schemathesis", "scopes": ["admin"]}) as r,
    ):
        assert r.status == 201, await r.text()
        token = (await r.json())["token"]
    _run(server.url, token)
    # What only a login session may do (its sessions, the password change), with the admin's session;
    # logout is left out: it would end that session for the rest of the run.
    _run(server.url, admin.token, "--include-path-regex", "^/api/auth/(sessions|password)")


def _run(url: str, token: str, *options: str) -> None:
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(ROOT / "tests" / "schemathesis.toml"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",  # nothing written into the tree, and the same run every time
            "--request-timeout",
            "30",
            "--no-color",
            *options,
        ],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert " passed" in report and "failures" not in report.lower(), report
    assert "Errors:" not in report, report  # a schema schemathesis cannot use is a mismatch too
