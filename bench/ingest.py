"""Webhook ingest under load: ``POST /hooks/whatsapp`` on the real app served by gunicorn, against
a bare Flask app with the same route under the same gunicorn settings (the framework ceiling).

    .venv/bin/python -m bench.ingest [--duration 15] [--connections 32] [--rounds 3]
                                     [--workers 2] [--threads 16] [--max-requests 0]

Seqbridge runs on a fresh SQLite database (WAL, synchronous=FULL) in a temporary directory, with a
mappings directory holding one WhatsApp Cloud hook; no ``seqbridge worker`` runs, so this measures
receiving only: verify the signature, parse, deduplicate, store the delivery and its audit event,
answer 202. The bare app parses the JSON body and answers 202 with a small JSON.

``wrk`` drives both on loopback with a fixed number of connections. It cannot compute an HMAC, so
each run gets its own file of signed bodies, each with a unique WhatsApp message id (a repeated id
would be a duplicate, answered 200 and not stored), and a Lua script posts them in turn. Every run
starts with a short warm-up; the targets alternate (bare, app, bare, app, ...) because the machine
is noisy. Reported per run: requests/s, p99 latency and the answers' status codes; then the
medians and the paired ratios (median of per-round ratios). Targets: app/bare requests/s >= 0.60,
app/bare p99 <= 3.0. To check the app really stored what it acknowledged, the ``deliveries``
table is counted after each run and at the end and compared with the 202s wrk saw.
Each run also reports the CPU it cost per answered request (gunicorn's workers and wrk, read
from ``/proc``) and how idle the machine was: steadier than requests/s on a noisy machine.

Both servers use ``seqbridge.gunicorn_conf`` with the same workers and threads, except that worker
recycling (``max_requests``, 10,000 in the shipped config) is off by default: at the bare app's
rate it restarts a worker every few seconds, which makes the ceiling both lower and erratic.
``--max-requests 10000`` measures the shipped setting.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import database, paired_ratio
from seqbridge import create_app

HOOK_NAME = "whatsapp"
APP_SECRET = "bench-secret"
HOOK_YAML = f"""\
hooks:
  {HOOK_NAME}:
    organization: bench
    source:
      connector: whatsapp_cloud
      app_secret: {APP_SECRET}
      verify_token: bench-token
    rules: []
"""
WARMUP_SECONDS = 3
WRK_THREADS = 2
#: Bodies per second of run: well above what either target reaches here, so wrk never wraps
#: around (which would send duplicates) — the Lua script reports it if it does.
BODIES_PER_SECOND = 6000

# wrk's Lua: every thread loads every n-th line of the bodies file (so no two threads send the
# same body), posts them in turn, counts the answers by status and, at the end, prints one
# RESULT line of JSON for the Python side.
WRK_SCRIPT = """\
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
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
class Run:
    """One timed wrk run against one target."""

    target: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    statuses: dict[str, int]
    non_2xx: int
    errors: int
    wrapped: int
    sent: int  # requests wrk started; the ones in flight when it stopped have no answer
    warmup_accepted: int  # 202s and requests sent in the warm-up before this run
    warmup_sent: int
    stored: int | None = None  # deliveries rows added during the run (the app only)
    cpu: Cpu | None = None  # what the run cost in CPU, where it was spent (Linux only)

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0)

    def line(self) -> str:
        statuses = " ".join(f"{code}={count}" for code, count in sorted(self.statuses.items()))
        text = (
            f"round {self.round} {self.target:4}  {self.rps:8,.0f} req/s  p50 {self.p50_ms:6.1f} ms  "
            f"p99 {self.p99_ms:6.1f} ms  requests {self.requests:,} [{statuses}]  "
            f"non-2xx {self.non_2xx}  socket errors {self.errors}"
        )
        if self.stored is not None:
            text += f"  rows added {self.stored:,} (sent {self.sent:,})"
        if self.cpu is not None and self.requests:
            text += (f"  CPU/request: server {self.cpu.server_s / self.requests * 1e6:,.0f} us, "
                     f"wrk {self.cpu.wrk_s / self.requests * 1e6:,.0f} us; machine idle {self.cpu.idle:.0%}")  # fmt: skip
        if self.wrapped and self.target == "app":  # the bare app does not care
            text += f"  WARNING: wrk ran out of bodies {self.wrapped} times (duplicates sent)"
        return text


@dataclass
class Cpu:
    """CPU seconds one timed run cost: the target's gunicorn workers, and wrk; the machine's idle
    share over the run. Read from /proc, so only on Linux."""

    server_s: float
    wrk_s: float
    idle: float


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _children(pid: int) -> list[int]:
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
    ``master_pid``, and wrk (a child of this process, counted once it has been waited for). A
    worker recycled during the run (``--max-requests``) is missed."""
    out: list[Cpu] = []
    if not Path("/proc/stat").exists():
        yield out
        return
    workers = _children(master_pid)
    before = sum(_process_cpu(w) for w in workers)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle0, total0 = _machine_times()
    yield out
    idle1, total1 = _machine_times()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.append(Cpu(
        server_s=sum(_process_cpu(w) for w in workers) - before,
        wrk_s=(after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime),
        idle=(idle1 - idle0) / max(1, total1 - total0),
    ))  # fmt: skip


# Setup --------------------------------------------------------------------------------------


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


def prepare(url: str, mappings: Path) -> None:
    """Write the hook file and create its organization in the database at ``url``."""
    mappings.mkdir()
    (mappings / "bench.yaml").write_text(HOOK_YAML)
    app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": str(mappings), "LOG_LEVEL": "WARNING"})
    services = app.extensions["seqbridge"]
    services.keys.create_key("bench", ["*"])
    services.db.dispose()


def signed_body(message_id: str) -> tuple[str, bytes]:
    """A WhatsApp Cloud notification of one text message, and its X-Hub-Signature-256."""
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PN1"},
            "contacts": [{"profile": {"name": "Kim"}, "wa_id": "15551234567"}],
            "messages": [{"from": "15551234567", "id": message_id, "timestamp": "1767607200",
                          "type": "text", "text": {"body": "hello"}}],
        }}]}]}, separators=(",", ":")).encode()  # fmt: skip
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest(), body


def write_bodies(path: Path, prefix: str, count: int) -> Path:
    """``count`` lines of ``signature<TAB>body``, message ids ``wamid.<prefix>.<n>``."""
    with path.open("wb") as out:
        for n in range(count):
            signature, body = signed_body(f"wamid.{prefix}.{n}")
            out.write(signature.encode() + b"\t" + body + b"\n")
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
def gunicorn(name: str, app: str, env: dict[str, str], logs: Path, max_requests: int) -> Iterator[Server]:
    """Serve ``app`` under gunicorn with Seqbridge's config; yield it once it answers."""
    port = free_port()
    env = {**env, "SEQBRIDGE_BIND": f"127.0.0.1:{port}"}
    log = (logs / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:seqbridge.gunicorn_conf",
                             "--max-requests", str(max_requests), app],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
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
        yield Server(f"http://127.0.0.1:{port}/hooks/{HOOK_NAME}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def check_answer(url: str, prefix: str) -> None:
    """Post one signed body and make sure the target answers 202 ``queued``."""
    signature, body = signed_body(f"wamid.{prefix}")
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as response:
        answer = json.load(response)
        if response.status != 202 or answer["data"]["status"] != "queued":
            raise RuntimeError(f"{url} answered {response.status} {answer}")


def stored_rows(db_path: Path) -> dict[str, int]:
    """The ``deliveries`` rows by status, read with the sqlite3 module (the server keeps running)."""
    conn = sqlite3.connect(db_path)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    finally:
        conn.close()


def settled_rows(db_path: Path) -> int:
    """The number of ``deliveries`` rows once it stops changing: requests still in flight when wrk
    stopped are answered to a closed connection, but stored all the same."""
    count = sum(stored_rows(db_path).values())
    for _ in range(30):
        time.sleep(1)
        previous, count = count, sum(stored_rows(db_path).values())
        if count == previous:
            break
    return count


# Load ---------------------------------------------------------------------------------------


def wrk(
    wrk_path: str, script: Path, url: str, bodies: Path, seconds: int, connections: int
) -> dict[str, Any]:
    """One wrk run; its RESULT line as a dict."""
    cmd = [wrk_path, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(script), url, "--", str(bodies), str(WRK_THREADS)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"no RESULT from wrk:\n{out}")


def measure(
    target: str, number: int, server: Server, args, work: Path, wrk_path: str, db_path: Path | None
) -> Run:
    """Warm up, then one timed run against ``target`` with fresh bodies; count what was stored."""
    script = work / "post.lua"
    warmup = write_bodies(work / "warmup.txt", f"{target}{number}w", WARMUP_SECONDS * BODIES_PER_SECOND)
    url = server.url
    warm = wrk(wrk_path, script, url, warmup, WARMUP_SECONDS, args.connections)
    bodies = write_bodies(work / "bodies.txt", f"{target}{number}", args.duration * BODIES_PER_SECOND)
    before = settled_rows(db_path) if db_path else 0
    with cpu_of(server.pid) as cpu:
        result = wrk(wrk_path, script, url, bodies, args.duration, args.connections)
    statuses = {str(k): int(v) for k, v in result["statuses"].items()}
    run = Run(
        target=target,
        round=number,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        requests=result["requests"],
        statuses=statuses,
        non_2xx=result["non_2xx_3xx"],
        errors=result["socket_errors"] + result["timeouts"],
        wrapped=result["wrapped"] + warm["wrapped"],
        sent=result["sent"],
        warmup_accepted=warm["statuses"].get("202", 0),
        warmup_sent=warm["sent"],
        cpu=cpu[0] if cpu else None,
    )
    if db_path:
        run.stored = settled_rows(db_path) - before
    warmup.unlink()
    bodies.unlink()
    return run


def run(args) -> None:
    """Set up the database and both servers, alternate the runs, print each, then the report."""
    wrk_path = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="seqbridge-bench-ingest-"))
    try:
        (work / "post.lua").write_text(WRK_SCRIPT)
        with database("sqlite") as url:
            db_path = Path(url.removeprefix("sqlite:///"))
            mappings = db_path.parent / "mappings"
            prepare(url, mappings)
            env = {**os.environ, "SEQBRIDGE_DATABASE_URL": url, "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
                   "SEQBRIDGE_WEB_WORKERS": str(args.workers), "SEQBRIDGE_WEB_THREADS": str(args.threads),
                   "SEQBRIDGE_LOG_LEVEL": "WARNING"}  # fmt: skip
            with (
                gunicorn("bare", "bench.bare_app:app", env, work, args.max_requests) as bare,
                gunicorn("app", "seqbridge:create_app()", env, work, args.max_requests) as app,
            ):
                check_answer(bare.url, "check")
                check_answer(app.url, "check")
                print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), "
                      f"max_requests {args.max_requests}; "
                      f"wrk: {WRK_THREADS} threads, {args.connections} connections, {args.duration} s "
                      f"after {WARMUP_SECONDS} s warm-up, {args.rounds} rounds; database {db_path}",
                      flush=True)  # fmt: skip
                runs: list[Run] = []
                for number in range(1, args.rounds + 1):
                    for target, server, path in (("bare", bare, None), ("app", app, db_path)):
                        runs.append(measure(target, number, server, args, work, wrk_path, path))
                        print(runs[-1].line(), flush=True)
                settled_rows(db_path)
                rows = stored_rows(db_path)
            report(runs, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: list[Run], rows: dict[str, int]) -> None:
    """Medians, paired ratios against the targets, and the 202s against the stored rows."""
    bare = [r for r in runs if r.target == "bare"]
    app = [r for r in runs if r.target == "app"]
    rps_ratio = paired_ratio([r.rps for r in app], [r.rps for r in bare])
    p99_ratio = paired_ratio([r.p99_ms for r in app], [r.p99_ms for r in bare])
    for name, group in (("bare", bare), ("app", app)):
        print(f"median {name:4}  {statistics.median(r.rps for r in group):8,.0f} req/s  "
              f"p99 {statistics.median(r.p99_ms for r in group):6.1f} ms")  # fmt: skip
    if all(r.cpu is not None and r.requests for r in runs):
        per_request = {name: statistics.median(r.cpu.server_s / r.requests * 1e6 for r in group)
                       for name, group in (("bare", bare), ("app", app))}  # fmt: skip
        print(f"server CPU per answered request (median): bare {per_request['bare']:,.0f} us, "
              f"app {per_request['app']:,.0f} us ({per_request['app'] / per_request['bare']:.1f}x); "
              f"machine idle during app runs {statistics.median(r.cpu.idle for r in app):.0%}")  # fmt: skip
    print(f"app/bare req/s {rps_ratio:.2f} (target >= 0.60: {'met' if rps_ratio >= 0.60 else 'MISSED'})")
    print(f"app/bare p99   {p99_ratio:.2f} (target <= 3.0: {'met' if p99_ratio <= 3.0 else 'MISSED'})")
    accepted, sent, stored = (sum(r.accepted for r in app), sum(r.sent for r in app),
                              sum(r.stored or 0 for r in app))  # fmt: skip
    print(f"app, timed runs: {accepted:,} answered 202, {sum(r.requests - r.accepted for r in app):,} "
          f"answered otherwise (non-2xx: {sum(r.non_2xx for r in app)}), {sum(r.errors for r in app)} "
          f"socket errors; {stored:,} deliveries rows added; {sent:,} requests sent "
          f"({sent - accepted} in flight when wrk stopped)")  # fmt: skip
    # Everything the app ever got: one check request, then each run's warm-up and timed run.
    accepted_all = 1 + sum(r.accepted + r.warmup_accepted for r in app)
    sent_all = 1 + sum(r.sent + r.warmup_sent for r in app)
    total = sum(rows.values())
    verdict = "OK" if accepted_all <= total <= sent_all else "MISMATCH"
    print(f"deliveries table at the end: {total:,} rows {rows}; 202s counted over the whole run "
          f"(warm-ups included): {accepted_all:,}; requests sent: {sent_all:,} -> {verdict} "
          f"(202s <= rows <= sent)")  # fmt: skip
    print(json.dumps({"app_vs_bare_rps": round(rps_ratio, 2), "app_vs_bare_p99": round(p99_ratio, 2),
                      "runs": [asdict(r) for r in runs]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per timed run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each target, alternating")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--threads", type=int, default=16, help="gunicorn threads per worker (the shipped default)"
    )
    parser.add_argument("--max-requests", type=int, default=0,
                        help="gunicorn max_requests for both servers; 0 never recycles workers")  # fmt: skip
    run(parser.parse_args())


if __name__ == "__main__":
    main()
