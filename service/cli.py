"""The `chunkd` command: parses arguments, loads settings, wires the pieces; no logic of its own."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from service import (
    __version__,
    backup,
    cleanup,
    client,
    credentials,
    db,
    doctor,
    embedded,
    logs,
    migrate,
    seed,
    storage,
    worker,
)
from service.app import create_app
from service.config import ConfigError, Settings, load_settings
from service.embedded import EmbeddedError
from service.keys import on_worker_death_key
from service.storage import StorageError, StorageUnavailable
from service.storage.copy import copy_all

log = logging.getLogger("service")

T = TypeVar("T")

SHUTDOWN_TIMEOUT = 30  # seconds in-flight requests get after SIGTERM/SIGINT


def check_storage(settings: Settings) -> None:
    """At start: a store that cannot work as configured stops the process with one line (StorageConfigError);
    one that cannot be reached yet is only a warning, as the database is (the worker retries)."""
    try:
        log.debug("storage: %s", asyncio.run(storage.check(settings)), extra={"action": "storage_checked"})
    except StorageUnavailable as e:
        log.warning("storage not reachable yet: %s", e, extra={"action": "storage_unavailable"})


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    with embedded.database(settings) as settings:
        if not settings.jwt_secret:
            raise ConfigError("JWT_SECRET: required with an external DATABASE_URL (at least 32 characters)")
        check_storage(settings)
        if not args.no_migrate:
            applied = asyncio.run(_with_conn(settings, migrate.deploy))
            for m in applied:
                log.info("applied migration %s", m.path.name, extra={"action": "migration_applied"})
        sock = listening_socket(settings.host, settings.port)  # before anything starts: a bad HOST/PORT is one line
        app = create_app(settings, with_worker=not args.no_worker)
        worker_died = False

        def stop_serving() -> None:  # the worker died of a side task (logged CRITICAL): stop, exit non-zero
            nonlocal worker_died
            worker_died = True
            asyncio.get_running_loop().call_soon(_graceful_exit)

        app[on_worker_death_key] = stop_serving
        # run_app turns SIGINT/SIGTERM into a graceful stop: stop accepting, finish requests, run cleanup_ctx.
        web.run_app(
            app,
            sock=sock,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            print=lambda line: log.info(line.strip()),
        )
    return 1 if worker_died else 0


def _graceful_exit() -> None:
    raise web.GracefulExit  # out of the event loop, as a signal does: run_app stops serving and cleans up


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that what is wrong with HOST or PORT is said in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ConfigError(
            f"HOST: cannot listen on {host!r}: {e.strerror} (an IP address such as 127.0.0.1 "
            "or 0.0.0.0, or a name of this machine)"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does: restart over TIME_WAIT
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"PORT: {host}:{port} is already in use (another chunkd?); stop it or set PORT to a free port"
            ) from None
        raise ConfigError(f"HOST/PORT: cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    check_storage(settings)
    with embedded.database(settings) as settings:
        if not args.no_migrate:
            asyncio.run(_with_conn(settings, migrate.deploy))
        try:
            asyncio.run(worker.run_standalone(settings))  # SIGTERM/SIGINT stop it gracefully
        except worker.SideTaskDied:
            return 1  # logged CRITICAL with its traceback when it happened
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "new":
        print(migrate.new(args.name))
        return 0
    if args.action == "reset" and not args.force:
        print("migrate reset drops every table and its data; run it again with --force", file=sys.stderr)
        return 2
    with embedded.database(settings) as settings:
        if args.action == "status":
            state = asyncio.run(_with_conn(settings, migrate.status))
            for version in state.applied:
                print(
                    f"applied  {version}"
                    + ("  (changed on disk!)" if any(c.startswith(version) for c in state.changed) else "")
                )
            for m in state.pending:
                print(f"pending  {m.path.name}")
            return 1 if state.changed or state.missing else 0
        operation = migrate.deploy if args.action == "deploy" else migrate.reset
        applied = asyncio.run(_with_conn(settings, operation))
        print("\n".join(f"applied  {m.path.name}" for m in applied) or "nothing to apply: up to date")
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    with embedded.database(settings) as settings:
        asyncio.run(_with_conn(settings, migrate.deploy))
        result = asyncio.run(_with_conn(settings, seed.seed))
    print(f"seeded: admin {result.admin_email}, {result.users} users, {result.posts_created} new posts")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    with embedded.database(settings) as settings:
        checks = asyncio.run(doctor.run_checks(settings))
    for check in checks:
        print(check.line())
    return 1 if any(c.required and not c.ok for c in checks) else 0


# operations: cleanup, backup, restore, upload
def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    with embedded.database(settings) as settings:
        report = asyncio.run(
            _with_conn(
                settings, lambda conn: cleanup.run_cleanup(conn, settings, dry_run=args.dry_run, log_summary=False)
            )
        )
    print("\n".join(report.lines()))
    return 1 if report.skipped else 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    with embedded.database(settings) as settings:
        archive, pruned = asyncio.run(backup.backup(settings, Path(args.dir)))
    for path in pruned:
        print(f"removed expired backup {path}", file=sys.stderr)
    print(archive)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if not Path(args.archive).is_file():
        print(f"chunkd: {args.archive}: no such file", file=sys.stderr)
        return 2
    with embedded.database(settings) as settings:
        manifest = asyncio.run(backup.restore(settings, Path(args.archive), force=args.force))
    print(f"restored {args.archive}: database and {manifest['blobs']} blobs (backup of {manifest['created_at']})")
    return 0


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    url = _server_url(args, settings)
    try:
        files = client.expand(args.paths)  # a typo is one line before the server is asked anything
    except client.UploadError as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    token = args.token or (None if args.email else os.environ.get("CHUNKD_TOKEN") or credentials.saved_token(url))
    if not token and not args.email:
        print(
            f"chunkd: not logged in to {url}: run `chunkd register` or `chunkd login`, or pass --token "
            "(or CHUNKD_TOKEN) or --email (password from CHUNKD_PASSWORD, asked, or stdin)",
            file=sys.stderr,
        )
        return 2
    try:
        who = client.Credentials(token, args.email, client.password_from(args.email))
        outcomes = asyncio.run(
            client.upload_many(
                args.paths,
                url,
                who,
                state_dir=Path(args.state_dir),
                report=_report,
                chunk_size=args.chunk_size,
                parallel=args.parallel,
                verify_chunks=args.verify_chunks,
            )
        )
    except client.UploadError as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # What was sent is kept: the state files say which uploads to resume, the batch which files are done.
        end_bar = "\n" if sys.stderr.isatty() else ""  # a progress bar is being redrawn on that line
        print(f"{end_bar}chunkd: interrupted: run the same command again to resume the upload", file=sys.stderr)
        return 130
    failed = [o for o in outcomes if not o.completed]
    if len(files) > 1:
        print(f"{len(outcomes) - len(failed)} of {len(files)} files COMPLETED, {len(failed)} failed")
    if failed and len(files) > 1:
        print(
            "chunkd: run the same command again to retry the failed files; COMPLETED ones are not sent again",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _report(outcome: client.Outcome) -> None:
    """One line per file on stdout as it ends: COMPLETED id name size type sha256, FAILED, or ERROR."""
    file = outcome.file
    if file is None:
        print(f"ERROR {outcome.path}: {outcome.error}", flush=True)
    elif file["status"] == "COMPLETED":
        sha256 = (file.get("metadata") or {}).get("sha256")
        earlier = " (by an earlier run)" if outcome.earlier else ""
        print(
            f"COMPLETED {file['id']} {file['original_name']} {file['size']} bytes {file['type']} sha256 {sha256}"
            + earlier,
            flush=True,
        )
    else:
        print(f"FAILED {file['id']} {outcome.path}: {file.get('error')}", flush=True)


def cmd_storage_copy(args: argparse.Namespace, settings: Settings) -> int:
    async def copy() -> object:
        source, target = storage.from_url(args.source, settings), storage.from_url(args.target, settings)
        try:
            return await copy_all(source, target)
        finally:
            await source.close()
            await target.close()

    report = asyncio.run(copy())
    print(
        f"copied {len(report.copied)} blobs ({report.bytes} bytes), {len(report.skipped)} already there; "  # type: ignore[attr-defined]
        "every SHA-256 verified"
    )
    return 0


def add_operations(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cleanup", help="remove old FAILED files, expired uploads, orphaned chunks and blobs")
    c.add_argument("--dry-run", action="store_true", help="show what would be removed, remove nothing")
    c.set_defaults(run=cmd_cleanup)
    b = sub.add_parser("backup", help="write one archive of the database and the blobs; keep 7 days of them")
    b.add_argument("--dir", default="backups", help="directory of the archives (default ./backups)")
    b.set_defaults(run=cmd_backup)
    r = sub.add_parser("restore", help="restore an archive into the configured database and STORAGE_DIR")
    r.add_argument("archive")
    r.add_argument("--force", action="store_true", help="replace a database or storage that is not empty")
    r.set_defaults(run=cmd_restore)
    u = sub.add_parser(
        "upload",
        help="upload files (and the files under directories), resumably, each its own upload, "
        "and wait until each is processed",
    )
    u.add_argument("paths", nargs="+", metavar="PATH", help="a file or a directory (its files, recursively)")
    u.add_argument("--url", help="server URL (default CHUNKD_URL, else http://HOST:PORT of the environment or .env)")
    who = u.add_mutually_exclusive_group()
    who.add_argument("--token", help="access token (default CHUNKD_TOKEN)")
    who.add_argument("--email", help="log in as this user (password from CHUNKD_PASSWORD, asked, or stdin)")
    u.add_argument("--chunk-size", type=int, help="bytes per chunk (default: the server's)")
    u.add_argument(
        "--parallel",
        type=int,
        default=client.DEFAULT_PARALLEL,
        help=f"chunks in flight (default {client.DEFAULT_PARALLEL})",
    )
    u.add_argument(
        "--verify-chunks",
        action="store_true",
        help="send each chunk's SHA-256 too: the server refuses a damaged chunk at once, "
        "instead of the whole file failing its check at the end",
    )
    u.add_argument(
        "--state-dir",
        default=str(client.default_state_dir()),
        help="where unfinished uploads are remembered (default ~/.local/state/chunkd/uploads)",
    )
    u.set_defaults(run=cmd_upload)
    st = sub.add_parser("storage", help="blob storage operations")
    stsub = st.add_subparsers(dest="action", required=True)
    cp = stsub.add_parser(
        "copy",
        help="copy every blob from one store to another (file:///path, a path, or "
        "s3://bucket/prefix with the AWS_* and S3_ENDPOINT_URL settings), verifying "
        "SHA-256; blobs already there are skipped",
    )
    cp.add_argument("source")
    cp.add_argument("target")
    cp.set_defaults(run=cmd_storage_copy)


# accounts: login, token create|list|revoke (HTTP clients of a running server; service/credentials.py)
def cmd_login(args: argparse.Namespace, settings: Settings) -> int:
    url = _server_url(args, settings)
    email = args.email or input("email: ").strip()
    password = client.password_from(email) or ""
    try:
        token = asyncio.run(credentials.login(url, email, password, args.scopes.split(",")))
    except credentials.AccountError as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    path = credentials.save_token(url, email, token["token"])
    print(f"logged in to {url} as {email}: token {token['id']} ({','.join(token['scopes'])}) saved in {path}")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    url = _server_url(args, settings)
    token = os.environ.get("CHUNKD_TOKEN") or credentials.saved_token(url)
    if not token:
        print(f"chunkd: not logged in to {url}: run `chunkd login` (or set CHUNKD_TOKEN)", file=sys.stderr)
        return 2
    try:
        if args.action == "create":
            made = asyncio.run(credentials.create_token(url, token, args.name, args.scopes.split(","), args.expires_in))
            print(made["token"])
            print(f"token {made['id']} ({','.join(made['scopes'])}): shown once, keep it safe", file=sys.stderr)
        elif args.action == "list":
            for t in asyncio.run(credentials.list_tokens(url, token)):
                print(
                    f"{t['id']}  {','.join(t['scopes']):<18} {t['name']}  last used {t['last_used_at'] or 'never'}"
                    f"  expires {t['expires_at'] or 'never'}"
                )
        else:
            asyncio.run(credentials.revoke_token(url, token, args.id))
            print(f"revoked {args.id}")
    except credentials.AccountError as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    url = _server_url(args, settings)
    email = args.email or input("email: ").strip()
    try:
        password = client.password_from(email, confirm=True) or ""
        token = asyncio.run(credentials.register(url, email, password, args.name, args.scopes.split(",")))
    except (credentials.AccountError, client.UploadError) as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    path = credentials.save_token(url, email, token["token"])
    print(f"registered {email} on {url}: token {token['id']} ({','.join(token['scopes'])}) saved in {path}")
    return 0


def _server_url(args: argparse.Namespace, settings: Settings) -> str:
    """--url, CHUNKD_URL, or the server this directory's settings (HOST, PORT, .env) run: one that
    listens on every address (0.0.0.0, ::) is reached on the loopback address."""
    if args.url or os.environ.get("CHUNKD_URL"):
        return str(args.url or os.environ["CHUNKD_URL"])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def add_accounts(sub: argparse._SubParsersAction) -> None:
    url_help = "server URL (default CHUNKD_URL, else http://HOST:PORT of the environment or .env)"
    login = sub.add_parser("login", help="log in and save an API token, so later commands need no flags")
    login.add_argument("--url", help=url_help)
    login.add_argument("--email", help="account (asked when not given); password from CHUNKD_PASSWORD, asked, or stdin")
    login.add_argument("--scopes", default="upload", help="scopes of the saved token: read, upload or admin")
    login.set_defaults(run=cmd_login)
    register = sub.add_parser(
        "register", help="create an account, log in and save an API token, as `chunkd login` does"
    )
    register.add_argument("--url", help=url_help)
    register.add_argument(
        "--email", help="the new account's email (asked when not given); password from CHUNKD_PASSWORD, asked, or stdin"
    )
    register.add_argument("--name", help="display name")
    register.add_argument("--scopes", default="upload", help="scopes of the saved token: read, upload or admin")
    register.set_defaults(run=cmd_register)
    token = sub.add_parser("token", help="API tokens for scripts: create, list, revoke")
    token.add_argument("--url", help=url_help)
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="mint a token and print its secret (shown once)")
    create.add_argument("name")
    create.add_argument("--scopes", default="read", help="comma-separated: read, upload, admin (default read)")
    create.add_argument("--expires-in", type=int, help="seconds until it expires (default never)")
    actions.add_parser("list", help="the account's tokens")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    token.set_defaults(run=cmd_token)


async def _with_conn(settings: Settings, operation: Callable[[Any], Awaitable[T]]) -> T:
    conn = await db.connect(settings)
    try:
        return await operation(conn)
    finally:
        await conn.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chunkd", description="Resumable chunked file uploads on PostgreSQL.")
    p.add_argument("--version", action="version", version=f"chunkd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (and a worker)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    serve.add_argument("--no-worker", action="store_true", help="serve HTTP only; run `chunkd worker` elsewhere")
    serve.set_defaults(run=cmd_serve)
    work = sub.add_parser("worker", help="process uploaded files (any number of them on one database)")
    work.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    work.set_defaults(run=cmd_worker)
    m = sub.add_parser("migrate", help="database migrations")
    msub = m.add_subparsers(dest="action", required=True)
    msub.add_parser("deploy", help="apply pending migrations")
    msub.add_parser("status", help="list applied and pending migrations")
    reset = msub.add_parser("reset", help="drop everything and re-apply (development only)")
    reset.add_argument("--force", action="store_true", help="yes, delete all data")
    new = msub.add_parser("new", help="create the next numbered migration file")
    new.add_argument("name")
    m.set_defaults(run=cmd_migrate)
    sub.add_parser("seed", help="create the seed's admin, users and posts (idempotent)").set_defaults(run=cmd_seed)
    sub.add_parser("doctor", help="check database, migrations, storage and libmagic").set_defaults(run=cmd_doctor)
    add_operations(sub)
    add_accounts(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.setup(settings.log_level)
        return args.run(args, settings)
    except (ConfigError, EmbeddedError, migrate.MigrationError, backup.BackupError, StorageError) as e:
        print(f"chunkd: {e}", file=sys.stderr)
        return 2
    except db.DatabaseUnreachable as e:
        print(f"chunkd: DATABASE_URL: {e}", file=sys.stderr)
        return 2
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError) as e:
        print(f"chunkd: DATABASE_URL: the server refused the connection: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
