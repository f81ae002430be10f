"""A decoder process of pool.py: `python -m service.media.child MEMORY_LIMIT`.

Reads one JSON request per line on stdin ({"path": ...}), answers each with one JSON line on the
original stdout, followed by the thumbnail's bytes when there is one. Only JSON and raw bytes cross:
a decoder taken over by a hostile file cannot hand the worker a pickle to run. Before the first
request: the address-space limit (RLIMIT_AS), no core dumps, and death with the parent."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    memory = int(argv[1])
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a C library prints goes to stderr, never into the replies
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a killed worker takes its decoders along
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from service.media import analysis  # the libraries' code is mapped before the limit counts the rest

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    send(replies, {"status": "ready"})
    for line in requests:
        request = json.loads(line)
        reply, data = answer(analysis, Path(request["path"]))
        send(replies, reply, data)
        if reply["status"] == "memory":
            return 0  # a heap that ran out may be in any state: the pool starts a fresh process
    return 0


def answer(analysis: Any, path: Path) -> tuple[dict[str, Any], bytes]:
    from service.media.result import Unreadable

    try:
        result = analysis.analyse(path)
    except Unreadable as e:
        return {"status": "unreadable", "reason": str(e)}, b""
    except MemoryError:
        return {"status": "memory"}, b""
    except OSError as e:  # reading the file failed: the environment's fault (see result.decode_failed)
        return {"status": "environment", "reason": f"{type(e).__name__}: {e.strerror or e}", "errno": e.errno}, b""
    except Exception as e:  # a decoder (or analyser) bug: the pool retries once, then fails the file
        return {"status": "error", "reason": f"{type(e).__name__}: {e}"}, b""
    thumb = result.thumbnail
    return {
        "status": "ok",
        "mimetype": result.mimetype,
        "type": str(result.type),
        "metadata": result.metadata,
        "thumbnail": None
        if thumb is None
        else {"width": thumb.width, "height": thumb.height, "mimetype": thumb.mimetype, "size": len(thumb.data)},
    }, thumb.data if thumb else b""


def send(out: BinaryIO, reply: dict[str, Any], data: bytes = b"") -> None:
    try:
        line = json.dumps(reply, allow_nan=False)
    except (TypeError, ValueError) as e:
        line, data = json.dumps({"status": "error", "reason": f"metadata is not JSON: {e}"}), b""
    out.write(line.encode() + b"\n" + data)
    out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
