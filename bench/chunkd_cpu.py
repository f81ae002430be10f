"""Where chunkd's own CPU goes during one upload: its event loop thread apart from its other threads
(the blob's write, SHA-256 and fdatasync run in asyncio's thread pool), and how many socket reads and
sends it makes; optionally an A/B against the same chunkd with something in its environment.

    .venv/bin/python -m bench.chunkd_cpu --mode tus-js-unchunked --runs 5
    .venv/bin/python -m bench.chunkd_cpu --mode native-x4 --runs 3 --env SOME_SWITCH=1

Each run starts a fresh `chunkd serve` on its own embedded PostgreSQL as bench/compare.py does (one
unmeasured warm-up upload first), uploads once with the client mode given, and reads every thread's
CPU from /proc/PID/task before and after. With --env, runs alternate between the plain chunkd and one
with those variables, each on a fresh server and database, so that neither leaves its page cache or
WAL to the other (bench/compare.py's --also-env runs both side by side, where a change in what one
server leaves behind shows up in the other's figures). Syscall counts come from `perf stat` when perf
is installed. CPU-seconds per GiB; median [min..max] over the runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import compare
from service import embedded
from service.config import _bytes

SYSCALLS = ("recvfrom", "sendto", "epoll_wait", "write")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU-seconds of the main thread ("loop") and of all the others ("threads")."""
    cpu = {"loop": 0.0, "threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu["loop" if task.name == str(pid) else "threads"] += (int(fields[11]) + int(fields[12])) / compare.TICK
    return cpu


async def one_run(mode_name: str, size: int, source: Path, sha256: str, env: dict[str, str]) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="chunkd-cpu-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            chunkd = await stack.enter_async_context(compare.start_chunkd(embedded.tuned_options(), env))
            peer = subprocess.Popen(["sleep", "infinity"])  # compare.Servers wants a peer; none is measured
            stack.callback(peer.wait)
            stack.callback(peer.terminate)
            s = compare.Servers({"chunkd": chunkd}, peer, "", work, compare.node_modules())
            await compare.warm_up(s, "chunkd", source, sha256)
            mode = next(m for m in compare.modes(["chunkd"], {mode_name}) if m.server == "chunkd")
            pid = chunkd.process.proc.pid  # type: ignore[union-attr]
            counter = None
            if shutil.which("perf"):
                events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
                counter = subprocess.Popen(
                    ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", str(work / "perf.csv")],
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(0.5)
            before = thread_cpu(pid)
            result = await mode.run(s, "chunkd", source, sha256)
            after = thread_cpu(pid)
            gib = size / compare.GiB
            figures = {k: (after[k] - before[k]) / gib for k in after}
            figures["chunkd"] = result.cpu["chunkd"] / gib
            figures["postgres"] = result.cpu["postgres"] / gib
            figures["MB/s"] = size / compare.MB / result.durable
            figures["COMPLETED+s"] = result.completed or 0.0
            if counter is not None:
                counter.send_signal(2)
                counter.wait(30)
                for line in (work / "perf.csv").read_text().splitlines():
                    parts = line.split(",")
                    if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
                        with contextlib.suppress(ValueError):
                            figures[parts[2].removeprefix("syscalls:sys_enter_") + "/GiB"] = int(parts[0]) / gib
            return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def show(name: str, runs: list[dict[str, float]]) -> None:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    parts = []
    for k in keys:
        values = [r[k] for r in runs]
        fmt = "{:.0f}" if k.endswith("/GiB") or k == "MB/s" else "{:.2f}"
        parts.append(
            f"{k} {fmt.format(statistics.median(values))} [{fmt.format(min(values))}..{fmt.format(max(values))}]"
        )
    print(f"{name:8} n={len(runs)}  " + "  ".join(parts), flush=True)


async def run(args: argparse.Namespace) -> None:
    size = _bytes(1)(args.size)
    env = dict(item.partition("=")[::2] for item in args.env)
    work = Path(tempfile.mkdtemp(prefix="chunkd-cpu-source-"))
    try:
        source = work / "source.bin"
        sha256 = compare.make_source(source, size)
        print(f"{args.mode}, {size / compare.MB:.0f} MB, load {compare.load()}", flush=True)
        variants = {"plain": {}, "env": env} if env else {"plain": {}}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for r in range(args.runs):
            order = list(variants.items())
            if r % 2:
                order.reverse()
            for name, variant_env in order:
                figures = await one_run(args.mode, size, source, sha256, variant_env)
                results[name].append(figures)
                print(f"  run {r + 1} {name:6} " + " ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
        print(f"CPU-s per GiB (loop: chunkd's event loop thread; threads: all its others); load {compare.load()}")
        for name, runs in results.items():
            show(name, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="tus-js-unchunked", help="a client mode of bench/compare.py")
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="A/B: the other chunkd's")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
