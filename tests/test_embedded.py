"""The embedded PostgreSQL: found, shared between processes, and a clear line when absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from service.embedded import EmbeddedError, EmbeddedPostgres, find_bin_dir
from tests.support import ROOT, free_port, scratch_dir


def test_missing_binaries_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError) as e:
        find_bin_dir(path=str(tmp_path), versioned=str(tmp_path / "none" / "*" / "bin"), wheel=False)
    message = str(e.value)
    assert "\n" not in message
    assert "install PostgreSQL" in message and "chunkd[embedded]" in message and "DATABASE_URL" in message


def test_a_second_instance_shares_the_running_server() -> None:
    base = scratch_dir("chunkd-test-share-")
    first, second = EmbeddedPostgres(base), EmbeddedPostgres(base)
    try:
        first.start()
        second.start()
        assert first.started_here and not second.started_here
        second.stop()  # not its server: leaves it running
        assert first.running()
    finally:
        first.stop()
    assert not first.running()
    shutil.rmtree(base, ignore_errors=True)


def test_serve_starts_embedded_postgres_and_answers_readyz() -> None:
    """`chunkd serve` with no DATABASE_URL: initdb, start, migrate, serve; stops PostgreSQL on exit."""
    workdir = scratch_dir("chunkd-test-serve-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    port = free_port()
    env.update(PORT=str(port), JWT_SECRET="x" * 40, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.2)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    data_dir = workdir / "var" / "postgres" / "data"
    assert (data_dir / "PG_VERSION").is_file()
    assert not EmbeddedPostgres(workdir / "var" / "postgres").running(), "PostgreSQL left running"
    # The embedded server runs with the workload's settings, which doctor checks against the server's own.
    doctor = subprocess.run(
        [sys.executable, "-m", "service", "doctor"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 0 and "ok   postgresql settings:" in doctor.stdout, doctor.stdout + doctor.stderr
    shutil.rmtree(workdir, ignore_errors=True)
