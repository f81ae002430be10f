"""A real S3 server for the suite: a single-node Ceph cluster (one monitor, one in-memory OSD) and its RADOS
Gateway, every path under one scratch directory, on free loopback ports (shared/notes/ceph-rgw.md)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.support import free_port

BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph")
START_TIMEOUT = 90.0  # seconds per step: the machine may be busy

CONFIG = """[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
log to stderr = false
mon cluster log file = {d}/log/cluster.log
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
ms bind ipv6 = false
[mon]
mon data = {d}/mon.$id
paxos propose interval = 0.05
paxos min wait = 0.01
mon memory target = 134217728
mon memory autotune = false
mon data avail warn = 1
mon data avail crit = 0
[osd]
osd data = {d}/osd.$id
osd objectstore = memstore
memstore device bytes = {memstore}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd op num shards = 1
osd op num threads per shard = 2
[client.rgw.a]
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:{rgw}
rgw dns name = localhost
rgw dynamic resharding = false
rgw gc obj min wait = 2
rgw gc processor period = 5
"""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


class CephError(RuntimeError):
    pass


class CephRGW:
    """start() brings up mon, osd and radosgw (about 3 s on a quiet machine) and an S3 user; stop() ends
    every daemon by the PID it recorded and removes the directory."""

    def __init__(self, directory: Path, memstore_bytes: int = 4 << 30) -> None:
        self.dir = directory
        self.memstore_bytes = memstore_bytes
        self.access_key, self.secret_key = "chunkd" + uuid.uuid4().hex[:14], uuid.uuid4().hex
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.rgw_port = 0
        self.env = {**os.environ, "CEPH_CONF": str(directory / "ceph.conf")}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def environment(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """What points chunkd at a bucket of this server."""
        return {
            "STORAGE_URL": f"s3://{bucket}/{prefix}",
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> CephRGW:
        try:
            self._start()
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def _start(self) -> None:
        d = self.dir
        for sub in ("run", "log", "crash"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        v2, v1, self.rgw_port = free_port(), free_port(), free_port()
        fsid = str(uuid.uuid4())
        (d / "ceph.conf").write_text(
            CONFIG.format(fsid=fsid, v2=v2, v1=v1, d=d, rgw=self.rgw_port, memstore=self.memstore_bytes)
        )
        self._run(
            "monmaptool",
            "--create",
            "--fsid",
            fsid,
            "--addv",
            "a",
            f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]",
            str(d / "monmap"),
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(d / "monmap"))
        self._daemon("ceph-mon", "-f", "-i", "a")
        self._until("the monitor answers", lambda: self._ok("ceph", "--connect-timeout", "5", "mon", "stat"))
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "osd", "new", osd_uuid).strip()
        (d / f"osd.{osd_id}").mkdir(exist_ok=True)
        self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("ceph-osd", "-f", "-i", osd_id)
        self._until("the OSD is up", lambda: f"osd.{osd_id} up" in self._run("ceph", "osd", "dump"))
        self._daemon("radosgw", "-f", "-n", "client.rgw.a")
        self._until("radosgw listens", lambda: _listening(self.rgw_port))
        self._run(
            "radosgw-admin",
            "user",
            "create",
            "--uid=chunkd",
            "--display-name=chunkd",
            f"--access-key={self.access_key}",
            f"--secret={self.secret_key}",
        )

    def stop(self, remove: bool = True) -> None:
        for process in reversed(self.daemons):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.daemons):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.daemons.clear()
        self.names.clear()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        out = []
        for path in sorted((self.dir / "log").glob("*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def _daemon(self, *command: str) -> None:
        self.names.append(command[0])
        with open(self.dir / "log" / f"{command[0]}.stdout", "wb") as log:
            self.daemons.append(
                subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            )

    def _run(self, *command: str) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT)
        if result.returncode != 0:
            raise CephError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
        return result.stdout

    def _ok(self, *command: str) -> bool:
        try:
            self._run(*command)
        except (CephError, subprocess.TimeoutExpired):
            return False
        return True

    def _until(self, what: str, condition) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name, process in zip(self.names, self.daemons, strict=True):
                if process.poll() is not None:
                    raise CephError(f"{name} exited ({process.returncode}) before {what}:\n{self.logs()}")
            if condition():
                return
            time.sleep(0.1)
        raise CephError(f"timed out waiting until {what}:\n{self.logs()}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def run(coroutine):
    """A coroutine to completion on a loop of its own, from sync code, whether or not a loop is running."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _client(rgw: CephRGW):
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    return get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=rgw.endpoint,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        config=AioConfig(s3={"addressing_style": "path"}),
    )


async def create_bucket(rgw: CephRGW, name: str) -> None:
    async with _client(rgw) as client:
        await client.create_bucket(Bucket=name)


async def remove_bucket(rgw: CephRGW, name: str) -> None:
    """Every object and unfinished upload, then the bucket (memstore holds them in memory)."""
    async with _client(rgw) as client:
        async for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                await client.delete_object(Bucket=name, Key=item["Key"])
        async for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                await client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        await client.delete_bucket(Bucket=name)
