"""Load generation and measurement for ``bench.ingest``: gunicorn servers, wrk runs driven by Lua
scripts, and the CPU a run cost (read from ``/proc``)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRK_THREADS = 2

# wrk's Lua: every thread loads every n-th line of the bodies file (so no two threads send the
# same body), posts them in turn, counts the answers by status and, at the end, prints one
# RESULT line of JSON for the Python side. With a third argument (requests per second), each
# thread paces its requests to its share of that rate (LuaJIT's ffi reads the clock): the
# bad-signature flood.
WRK_SCRIPT = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  local rate = tonumber(args[3] or "0")
  interval = rate > 0 and (1000 * nthreads / rate) or 0
  signatures, bodies, statuses, next_body, wrapped, sent = {}, {}, {}, 0, 0, 0
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == id then
      local tab = line:find("\\t", 1, true)
      signatures[#signatures + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    n = n + 1
  end
end

function delay()
  if interval == 0 then return 0 end
  local t = now_ms()
  if next_at == nil or next_at < t - 50 then next_at = t end  -- no burst to catch up after a stall
  next_at = next_at + interval
  return math.max(0, math.floor(next_at - t))
end

function request()
  sent, next_body = sent + 1, next_body + 1
  if next_body > #bodies then
    next_body, wrapped = 1, wrapped + 1
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["X-Hub-Signature-256"] = signatures[next_body]}, bodies[next_body])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, wraps, sent_total = {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
    wraps = wraps + thread:get("wrapped")
    sent_total = sent_total + thread:get("sent")
  end
  local parts = {}
  for status, count in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"statuses": {%s}, "socket_errors": %d, "timeouts": %d, "non_2xx_3xx": %d, "wrapped": %d, '
    .. '"sent": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ", "), e.connect + e.read + e.write, e.timeout, e.status, wraps, sent_total))
end
"""


@dataclass
class Cpu:
    """CPU seconds one timed run cost: the target's gunicorn workers, and wrk; the machine's idle
    share over the run. Read from /proc, so only on Linux."""

    server_s: float
    wrk_s: float
    idle: float


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _machine_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)  # idle + iowait


@contextmanager
def cpu_of(master_pid: int) -> Iterator[list[Cpu]]:
    """Measure the CPU the body of the ``with`` costs: the workers of the gunicorn whose master is
    ``master_pid``, and wrk (children of this process, counted once they have been waited for).
    A worker recycled during the run (``--max-requests``) is missed."""
    out: list[Cpu] = []
    if not Path("/proc/stat").exists():
        yield out
        return
    workers = children(master_pid)
    before = sum(process_cpu(w) for w in workers)
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle0, total0 = _machine_times()
    yield out
    idle1, total1 = _machine_times()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.append(
        Cpu(
            server_s=sum(process_cpu(w) for w in workers) - before,
            wrk_s=(after.ru_utime + after.ru_stime) - (start.ru_utime + start.ru_stime),
            idle=(idle1 - idle0) / max(1, total1 - total0),
        )
    )


def ensure_wrk() -> str:
    """The path of ``wrk``; installs it with apt-get when it is missing and we are root."""
    path = shutil.which("wrk")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
    if path is None:
        sys.exit("bench.ingest needs wrk: apt-get install -y wrk")
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str  # the hook's URL
    pid: int  # gunicorn's master


@contextmanager
def gunicorn(
    name: str, app: str, env: dict[str, str], logs: Path, max_requests: int, hook: str
) -> Iterator[Server]:
    """Serve ``app`` under gunicorn with Seqbridge's config; yield it once it answers."""
    port = free_port()
    env = {**env, "SEQBRIDGE_BIND": f"127.0.0.1:{port}"}
    log = (logs / f"{name}.log").open("w")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:seqbridge.gunicorn_conf",
        "--max-requests",
        str(max_requests),
        app,
    ]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn for {name} exited; see {logs / f'{name}.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}/hooks/{hook}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def wrk_command(
    wrk_path: str,
    script: Path,
    url: str,
    bodies: Path,
    seconds: int,
    connections: int,
    threads: int = WRK_THREADS,
    rate: int = 0,
) -> list[str]:
    return [
        wrk_path,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
        str(threads),
        str(rate),
    ]


def parse_result(out: str) -> dict[str, Any]:
    """wrk's RESULT line as a dict."""
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"no RESULT from wrk:\n{out}")


def wrk(
    wrk_path: str, script: Path, url: str, bodies: Path, seconds: int, connections: int
) -> dict[str, Any]:
    """One wrk run; its RESULT line as a dict."""
    command = wrk_command(wrk_path, script, url, bodies, seconds, connections)
    return parse_result(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
