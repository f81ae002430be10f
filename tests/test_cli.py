"""The `chunkd` command as a user runs it: a real process against this test's database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from tests.support import JWT_SECRET, ROOT, free_port, insert_user


def chunkd(database_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.startswith("chunkd ")


async def test_migrate_deploy_status_and_reset(empty_database_url: str) -> None:
    status = chunkd(empty_database_url, "migrate", "status")
    assert "pending  0001_initial_schema.sql" in status.stdout
    deploy = chunkd(empty_database_url, "migrate", "deploy")
    assert deploy.returncode == 0 and "applied  0001_initial_schema.sql" in deploy.stdout
    again = chunkd(empty_database_url, "migrate", "deploy")
    assert again.stdout.strip() == "nothing to apply: up to date"
    refused = chunkd(empty_database_url, "migrate", "reset")
    assert refused.returncode == 2 and "--force" in refused.stderr
    conn = await asyncpg.connect(empty_database_url)
    try:
        await insert_user(conn, email="keep@example.com")
        assert await conn.fetchval("SELECT count(*) FROM users") == 1  # refused reset kept the data
        forced = chunkd(empty_database_url, "migrate", "reset", "--force")
        assert forced.returncode == 0
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


def test_seed_command_is_idempotent(database_url: str) -> None:
    first = chunkd(database_url, "seed")
    assert first.returncode == 0 and "15 new posts" in first.stdout
    second = chunkd(database_url, "seed")
    assert second.returncode == 0 and "0 new posts" in second.stdout


def test_doctor_passes_on_a_migrated_database(database_url: str, tmp_path: Path) -> None:
    result = chunkd(database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok   database: PostgreSQL ")
    assert any(line.startswith("ok   migrations:") for line in lines)
    assert any(line.startswith("ok   libmagic:") for line in lines)
    assert any("pg_stat_statements" in line for line in lines)


async def test_doctor_names_the_settings_that_cost(database_url: str, tmp_path: Path) -> None:
    """An external database below the workload's settings gets a warning naming each and its cost; the
    command still passes (advice, not a requirement)."""
    conn = await asyncpg.connect(database_url)
    try:
        max_wal_mb = int(await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'max_wal_size'"))
    finally:
        await conn.close()
    result = chunkd(database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    line = next(line for line in result.stdout.splitlines() if "postgresql settings:" in line)
    if max_wal_mb < 8 * 1024:  # the suite's own server runs on stock WAL settings
        assert line.startswith("warn postgresql settings:") and f"max_wal_size is {max_wal_mb}MB" in line
        assert "full-page image" in line
    else:
        assert "max_wal_size" not in line


def test_doctor_fails_on_pending_migrations(empty_database_url: str, tmp_path: Path) -> None:
    result = chunkd(empty_database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL migrations: pending: 0001_initial_schema.sql" in result.stdout


def test_doctor_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    result = chunkd("postgresql://nobody@127.0.0.1:1/nothing", "doctor", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL database: cannot connect")


def serve(database_url: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`chunkd serve` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), "JWT_SECRET": JWT_SECRET, **env},
    )


def test_serve_refuses_a_bad_host_in_one_line(database_url: str, tmp_path: Path) -> None:
    result = serve(database_url, tmp_path, HOST="0.0.0.0.0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("chunkd: HOST: cannot listen on '0.0.0.0.0'")
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_refuses_a_port_in_use_in_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(database_url, tmp_path, PORT=str(port))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"chunkd: PORT: 127.0.0.1:{port} is already in use")
    assert "worker" not in result.stdout  # refused before anything started


def test_serve_refuses_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = serve(f"postgresql://nobody@127.0.0.1:{port}/nothing", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("chunkd: DATABASE_URL: cannot connect to the database")


# `chunkd upload` as a newcomer meets it ---------------------------------------------------------------


def interruptible() -> None:
    """In the client's process before exec: SIGINT as a terminal's Ctrl-C finds it. A suite started as a
    background job (`make test &`, some CI runners) ignores SIGINT, and an ignored signal is inherited:
    Python would then never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def until_sending(conn: asyncpg.Connection, client: subprocess.Popen[str], name: str) -> None:
    """Waits (up to 60 s) until some of `name`'s bytes are stored; the client must still be running."""
    deadline = time.monotonic() + 60
    while not await conn.fetchval("SELECT bytes_received > 0 FROM files WHERE original_name = $1", name):
        assert time.monotonic() < deadline and client.poll() is None, f"the client sent nothing of {name}"
        await asyncio.sleep(0.01)


def client_env(**extra: str) -> dict[str, str]:
    """The environment of a client command: none of the test runner's server settings or saved tokens."""
    drop = ("HOST", "PORT", "CHUNKD_URL", "CHUNKD_TOKEN", "CHUNKD_PASSWORD", "DATABASE_URL")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONPATH": str(ROOT), **extra}


def run_client(cwd: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=client_env(XDG_STATE_HOME=str(cwd / "state"), **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def completed_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """{original name: (file id, sha256)} of the COMPLETED lines."""
    lines = [line.split() for line in stdout.splitlines() if line.startswith("COMPLETED ")]
    return {words[2]: (words[1], words[7]) for words in lines}


def sparse_file(path: Path, size: int = 64 * 1024**3) -> Path:
    """A file far too large to hash in the time the tests allow (64 GiB of holes: no disk used)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def startup_seconds(cwd: Path) -> float:
    """How long `chunkd --version` takes here and now: the reference for the time bounds below."""
    started = time.monotonic()
    assert run_client(cwd, "--version").returncode == 0
    return time.monotonic() - started


def test_upload_fails_fast_when_the_server_is_unreachable(tmp_path: Path) -> None:
    """No --url: the client goes where this directory's .env says the server listens (0.0.0.0 is
    reached on 127.0.0.1), and says in one line that nothing is there, before reading the file."""
    port = free_port()  # nobody listens on it
    (tmp_path / ".env").write_text(f"HOST=0.0.0.0\nPORT={port}\n")
    big = sparse_file(tmp_path / "huge.iso")
    reference = startup_seconds(tmp_path)
    started = time.monotonic()
    done = run_client(tmp_path, "upload", str(big), "--token", "whatever")
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"chunkd: cannot reach chunkd at http://127.0.0.1:{port} (")
    assert "`make run` or `.venv/bin/chunkd serve`" in done.stderr
    assert elapsed < 3 + reference, f"{elapsed:.1f} s (startup {reference:.1f} s): it read the file or retried"
    assert done.stdout == ""


async def test_refused_credentials_are_one_line_before_the_file_is_read(chunkd, user, tmp_path: Path) -> None:
    server = chunkd("serve")
    big = sparse_file(tmp_path / "huge.iso")
    reference = startup_seconds(tmp_path)
    started = time.monotonic()
    token = run_client(tmp_path, "upload", str(big), "--url", server.url, "--token", "not-a-token")
    assert time.monotonic() - started < 3 + reference
    assert token.returncode == 2 and token.stderr.count("\n") == 1, token.stderr
    assert token.stderr.startswith(f"chunkd: {server.url} refused the access token (401 UNAUTHORIZED: ")
    started = time.monotonic()
    password = run_client(
        tmp_path, "upload", str(big), "--url", server.url, "--email", user.email, CHUNKD_PASSWORD="wrong password"
    )
    assert time.monotonic() - started < 3 + reference
    assert password.returncode == 2 and password.stderr.count("\n") == 1, password.stderr
    assert password.stderr == (
        f"chunkd: {server.url} refused the login of {user.email} (401 INVALID_CREDENTIALS: wrong email or password)\n"
    )
    not_logged_in = run_client(tmp_path, "upload", str(big), "--url", server.url)
    assert not_logged_in.returncode == 2 and not_logged_in.stderr.count("\n") == 1
    assert not_logged_in.stderr.startswith(f"chunkd: not logged in to {server.url}: run `chunkd register` or")


async def test_upload_of_files_and_a_directory(chunkd, conn, user, tmp_path: Path) -> None:
    """Several files and a directory (recursively): each its own upload, a line each and a summary; one
    the server refuses does not lose the others, the exit code says so, and the same command again sends
    only what is not COMPLETED. The server is found through .env."""
    server = chunkd("serve", MAX_UPLOAD_SIZE="1MiB")
    (tmp_path / ".env").write_text(f"HOST=0.0.0.0\nPORT={server.port}\n")
    (tmp_path / "a.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "notes.txt").write_text("hello chunkd\n" * 5000)
    tree = tmp_path / "photos"
    (tree / "2024" / "june").mkdir(parents=True)
    (tree / "x.bin").write_bytes(os.urandom(200_000))
    (tree / "2024" / "y.bin").write_bytes(os.urandom(150_001))
    (tree / "2024" / "june" / "z.bin").write_bytes(os.urandom(1))
    (tree / "2024" / "too-big.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # over MAX_UPLOAD_SIZE
    sent = {"a.bin": tmp_path / "a.bin", "notes.txt": tmp_path / "notes.txt", "x.bin": tree / "x.bin"}
    sent |= {"y.bin": tree / "2024" / "y.bin", "z.bin": tree / "2024" / "june" / "z.bin"}
    command = ("upload", "a.bin", "notes.txt", "photos", "--token", user.token, "--state-dir", "uploads")

    first = run_client(tmp_path, *command)
    assert first.returncode == 1, first.stdout + first.stderr
    done = completed_lines(first.stdout)
    assert {name: sha for name, (_, sha) in done.items()} == {name: sha256_of(p) for name, p in sent.items()}
    errors = [line for line in first.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR {Path('photos', '2024', 'too-big.bin')}: 413 ")
    assert first.stdout.splitlines()[-1] == "5 of 6 files COMPLETED, 1 failed"
    assert "run the same command again to retry the failed files" in first.stderr
    rows = await conn.fetch("SELECT id, original_name, status, sha256 FROM files")
    assert {r["original_name"]: (r["id"], r["sha256"]) for r in rows if r["status"] == "COMPLETED"} == done
    assert len(rows) == 5

    again = run_client(tmp_path, *command)
    assert again.returncode == 1, again.stdout + again.stderr
    assert completed_lines(again.stdout) == done  # the same files, not sent twice
    assert again.stdout.count("(by an earlier run)") == 5
    assert await conn.fetchval("SELECT count(*) FROM files") == 5


async def test_register_then_login_then_upload(chunkd, conn, tmp_path: Path) -> None:
    """A newcomer's path: an account from the command line (the password from stdin, never argv), a
    login, and an upload with the saved token and no flags."""
    server = chunkd("serve")
    (tmp_path / ".env").write_text(f"PORT={server.port}\n")
    register = run_client(tmp_path, "register", "--email", "newcomer@example.com", stdin="a long password\n")
    assert register.returncode == 0, register.stderr
    assert register.stdout.startswith(f"registered newcomer@example.com on {server.url}: token ")
    user_id = await conn.fetchval("SELECT id FROM users WHERE email = 'newcomer@example.com'")
    assert user_id is not None
    taken = run_client(tmp_path, "register", "--email", "newcomer@example.com", stdin="another password\n")
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and " 409 " in taken.stderr, taken.stderr
    wrong = run_client(tmp_path, "login", "--email", "newcomer@example.com", stdin="not the password\n")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and " 401 " in wrong.stderr, wrong.stderr
    login = run_client(tmp_path, "login", "--email", "newcomer@example.com", stdin="a long password\n")
    assert login.returncode == 0 and login.stdout.startswith(f"logged in to {server.url} as newcomer@example.com")
    (tmp_path / "first.bin").write_bytes(os.urandom(100_000))
    upload = run_client(tmp_path, "upload", "first.bin")
    assert upload.returncode == 0, upload.stderr
    assert completed_lines(upload.stdout)["first.bin"][1] == sha256_of(tmp_path / "first.bin")
    assert await conn.fetchval("SELECT uploaded_by_id FROM files WHERE original_name = 'first.bin'") == user_id


async def test_ctrl_c_says_how_to_resume_and_the_same_command_does(chunkd, conn, user, tmp_path: Path) -> None:
    """SIGINT mid-upload of the second file of two: one line saying to run the same command again; run
    again, it sends neither the finished file nor the chunks already stored, and both end COMPLETED."""
    server = chunkd("serve")
    (tmp_path / "small.txt").write_text("first of two\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024 + 777))
    command = [sys.executable, "-m", "service", "upload", "small.txt", "big.bin", "--url", server.url]
    command += ["--token", user.token, "--chunk-size", str(128 * 1024), "--parallel", "1", "--state-dir", "uploads"]
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        await until_sending(conn, first, "big.bin")
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()  # a no-op once it has exited
        first.communicate()
    assert first.returncode == 130, err
    assert err.splitlines()[-1] == "chunkd: interrupted: run the same command again to resume the upload"
    assert "Traceback" not in err
    assert list(completed_lines(out)) == ["small.txt"]
    big_id, received = await conn.fetchrow("SELECT id, bytes_received FROM files WHERE original_name = 'big.bin'")
    assert 0 < received < big.stat().st_size, "interrupted too late to prove anything"

    again = subprocess.run(command, cwd=tmp_path, env=client_env(), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"resuming upload {big_id}" in again.stderr
    done = completed_lines(again.stdout)
    assert done["big.bin"] == (big_id, sha256_of(big)) and done["small.txt"][1] == sha256_of(tmp_path / "small.txt")
    assert "(by an earlier run)" in next(line for line in again.stdout.splitlines() if "small.txt" in line)
    assert await conn.fetchval("SELECT count(*) FROM files") == 2
    assert await conn.fetchval("SELECT sha256 FROM files WHERE id = $1", big_id) == sha256_of(big)
    assert again.stdout.splitlines()[-1] == "2 of 2 files COMPLETED, 0 failed"
    assert list((tmp_path / "uploads").rglob("*.json")) == []  # all done: nothing left to resume


async def test_ctrl_c_does_not_wait_for_the_whole_file_to_be_hashed(chunkd, conn, user, tmp_path: Path) -> None:
    """The file's SHA-256 is computed while its chunks go out; Ctrl-C stops that too, at once, instead of
    asyncio waiting for its thread to read the rest of an 8 GiB file."""
    server = chunkd("serve")
    sparse_file(tmp_path / "disk.img", 8 * 1024**3)
    reference = startup_seconds(tmp_path)
    command = [sys.executable, "-m", "service", "upload", "disk.img", "--url", server.url, "--token", user.token]
    first = subprocess.Popen(
        [*command, "--state-dir", "uploads"],
        cwd=tmp_path,
        env=client_env(),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        await until_sending(conn, first, "disk.img")
        interrupted = time.monotonic()
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()  # a no-op once it has exited
        first.communicate()
    assert time.monotonic() - interrupted < 3 + reference, "Ctrl-C waited for the hash"
    assert first.returncode == 130 and err.splitlines()[-1].startswith("chunkd: interrupted: run the same command")


def on_a_terminal(cwd: Path, args: list[str], answers: list[str], timeout: float = 120) -> tuple[int, str]:
    """Runs `chunkd ARGS` on a pseudo-terminal of its own (its controlling terminal, as in a shell),
    typing each answer after the next prompt that ends in ': '; (exit code, everything shown)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its stdin, stdout, stderr and /dev/tty
        os.chdir(cwd)
        os.execve(
            sys.executable, [sys.executable, "-m", "service", *args], client_env(XDG_STATE_HOME=str(cwd / "state"))
        )
    shown, pending, answered = b"", list(answers), 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal: it ended
                break
            if not data:
                break
            shown += data
            if pending and shown[answered:].endswith(b": "):  # a new prompt (getpass shows it with echo off)
                os.write(master, pending.pop(0).encode() + b"\n")
                answered = len(shown)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(master)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), shown.decode(errors="replace")


async def test_register_asks_the_password_twice_on_a_terminal(chunkd, conn, tmp_path: Path) -> None:
    """On a terminal the password is asked (not echoed) and confirmed; two that differ create nothing."""
    server = chunkd("serve")
    args = ["register", "--url", server.url, "--email", "typed@example.com"]
    code, shown = on_a_terminal(tmp_path, args, ["one password", "another one"])
    assert code == 2 and "chunkd: the two passwords differ" in shown, shown
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'typed@example.com'") == 0
    code, shown = on_a_terminal(tmp_path, args, ["typed password", "typed password"])
    assert code == 0 and "registered typed@example.com on " in shown, shown
    assert "password for typed@example.com:" in shown and "typed password" not in shown  # asked, not echoed
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'typed@example.com'") == 1
