"""Webhook ingest under load: ``POST /hooks/whatsapp`` on the real app served by gunicorn, against
two baselines under the same gunicorn settings, in alternating rounds.

    .venv/bin/python -m bench.ingest [--duration 15] [--connections 32] [--rounds 3]
                                     [--workers 2] [--threads 16] [--max-requests 0]
                                     [--targets bare,minimal,app,app-flask] [--flood 1000]
                                     [--engine sqlite|postgresql]

The targets:

- ``bare`` (``bench/bare_app.py``): a Flask view that parses the JSON body and answers 202. The
  framework's ceiling: no verification, no storage.
- ``minimal`` (``bench/minimal_ingest.py``): the least work a durable, deduplicated ingest can
  do on this stack: verify the same HMAC, read the message id, claim it and insert the raw body
  in a group-committed, fsync'd SQLite transaction, answer.
- ``app``: Seqbridge (``seqbridge:create_app()``) on a fresh database with one WhatsApp Cloud
  hook and no ``seqbridge worker``: verify, parse, deduplicate, store the receipt, answer 202.
  SQLite (WAL, ``synchronous=FULL``) by default; ``--engine postgresql`` starts a durable
  PostgreSQL (fsync and synchronous_commit on) for the app (the baselines stay on SQLite).
- ``minimal-wsgi`` (not run unless named): the same minimal ingest as a plain WSGI callable, no
  Flask, for comparison with the app's webhook lane, which leaves Flask out too.
- ``app-flask``: the same app with ``SEQBRIDGE_HOOKS_LANE=false``, on a database of its own, so
  every webhook goes through Flask's request machinery as before the webhook lane
  (:mod:`seqbridge.web.hook_lane`): what the lane is worth, in the same run.
- ``app+flood`` (with ``--flood RATE``): the app again while a second wrk posts RATE requests/s
  with a wrong signature (answered 401 and recorded as rejected). Its req/s counts only the
  valid webhooks: what a flood of bad signatures leaves for the real senders.

``wrk`` drives every target on loopback with a fixed number of connections. It cannot compute an
HMAC, so each run gets its own file of signed bodies, each with a unique WhatsApp message id (a
repeated id would be a duplicate, answered 200 and not stored), and a Lua script posts them in
turn. Every run starts with a short warm-up. Reported per run: requests/s, p99, the answers'
status codes, the server's and wrk's CPU per answered request (from ``/proc``: steadier than
requests/s on a shared machine) and how idle the machine was; then the medians and the paired
ratios (median of per-round ratios): app/bare, app/minimal, minimal/bare, p99 against bare.
Targets: app/bare req/s >= 0.60, app/minimal >= 0.85, app/bare p99 <= 3.0. To check that the
storing targets really stored what they acknowledged, their rows are counted after each run and
at the end and compared with the 202s wrk saw (202s <= rows <= requests sent).

Both servers use ``seqbridge.gunicorn_conf`` with the same workers and threads, except that
worker recycling (``max_requests``, 10,000 in the shipped config) is off by default: at the bare
app's rate it restarts a worker every few seconds. ``--max-requests 10000`` measures the shipped
setting.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import minimal_ingest
from bench.common import database, paired_ratio, whatsapp_body
from bench.load import (
    WRK_SCRIPT,
    Cpu,
    Server,
    children,
    cpu_of,
    ensure_wrk,
    gunicorn,
    parse_result,
    process_cpu,
    wrk,
    wrk_command,
)
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
#: Bodies per second of run: well above what any target reaches here, so wrk never wraps
#: around (which would send duplicates); the Lua script reports it if it does.
BODIES_PER_SECOND = 7000
FLOOD_CONNECTIONS = 16


@dataclass
class Run:
    """One timed wrk run against one target."""

    target: str
    round: int
    rps: float  # 2xx answers per second (the flood's 401s are not counted)
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
    stored: int | None = None  # rows added during the run (the storing targets)
    cpu: Cpu | None = None  # what the run cost in CPU (Linux only)
    flood: dict[str, int] = field(default_factory=dict)  # the flood's answers by status
    pg: PgSample | None = None  # what PostgreSQL did during the run (the app on PostgreSQL)

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0)

    def cpu_per_request_us(self) -> float | None:
        answered = self.requests + sum(self.flood.values())
        return self.cpu.server_s / answered * 1e6 if self.cpu and answered else None

    def line(self) -> str:
        statuses = " ".join(f"{code}={count}" for code, count in sorted(self.statuses.items()))
        text = (
            f"round {self.round} {self.target:9} {self.rps:8,.0f} req/s  p50 {self.p50_ms:6.1f} ms  "
            f"p99 {self.p99_ms:6.1f} ms  requests {self.requests:,} [{statuses}]  "
            f"non-2xx {self.non_2xx}  socket errors {self.errors}"
        )
        if self.flood:
            flood = " ".join(f"{code}={count}" for code, count in sorted(self.flood.items()))
            text += f"  flood [{flood}]"
        if self.stored is not None:
            text += f"  rows added {self.stored:,} (sent {self.sent:,})"
        if self.cpu is not None and self.requests:
            text += (
                f"  CPU/request: server {self.cpu_per_request_us():,.0f} us, "
                f"wrk {self.cpu.wrk_s / self.requests * 1e6:,.0f} us; machine idle {self.cpu.idle:.0%}"
            )
        if self.pg is not None and self.requests:
            per_commit = self.accepted / max(1, self.pg.commits)
            text += (
                f"  PostgreSQL: {self.pg.commits:,} commits ({per_commit:.1f} webhooks each), "
                f"{self.pg.wal_syncs:,} WAL fsyncs, its CPU {self.pg.cpu_s / self.requests * 1e6:,.0f} us/request"
            )
        if self.wrapped and self.target != "bare":  # the bare app does not care
            text += f"  WARNING: wrk ran out of bodies {self.wrapped} times (duplicates sent)"
        return text


@dataclass
class Target:
    name: str
    server: Server
    #: Rows stored so far (accepted receipts only), or None for the bare app.
    count: Callable[[], int] | None
    flood: bool = False
    pg_url: str | None = None  # the app's PostgreSQL, watched during each run


def prepare(url: str, mappings: Path) -> None:
    """Write the hook file and create its organization in the database at ``url``."""
    mappings.mkdir()
    (mappings / "bench.yaml").write_text(HOOK_YAML)
    app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": str(mappings), "LOG_LEVEL": "WARNING"})
    services = app.extensions["seqbridge"]
    services.keys.create_key("bench", ["*"])
    services.db.dispose()


def signed_body(message_id: str, secret: str = APP_SECRET) -> tuple[str, bytes]:
    """A WhatsApp Cloud notification of one text message, and its X-Hub-Signature-256."""
    body = whatsapp_body(sender="15551234567", message_id=message_id, text="hello")
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), body


def write_bodies(path: Path, prefix: str, count: int, secret: str = APP_SECRET) -> Path:
    """``count`` lines of ``signature<TAB>body``, message ids ``wamid.<prefix>.<n>``."""
    with path.open("wb") as out:
        for n in range(count):
            signature, body = signed_body(f"wamid.{prefix}.{n}", secret)
            out.write(signature.encode() + b"\t" + body + b"\n")
    return path


def check_answer(url: str, prefix: str) -> None:
    """Post one signed body and make sure the target answers 202 ``queued``."""
    signature, body = signed_body(f"wamid.{prefix}")
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        answer = json.load(response)
        if response.status != 202 or answer["data"]["status"] != "queued":
            raise RuntimeError(f"{url} answered {response.status} {answer}")


def sqlite_counter(path: Path, sql: str) -> Callable[[], int]:
    def count() -> int:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(sql).fetchone()[0]
        finally:
            conn.close()

    return count


def app_counter(url: str) -> Callable[[], int]:
    """Accepted deliveries in the app's database (rejected ones are the flood's)."""
    sql = "SELECT count(*) FROM deliveries WHERE status <> 'rejected'"
    if url.startswith("sqlite"):
        return sqlite_counter(Path(url.removeprefix("sqlite:///")), sql)

    def count() -> int:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return conn.execute(sql).fetchone()[0]

    return count


@dataclass
class PgSample:
    """What PostgreSQL did, from its statistics and /proc: commits and WAL fsyncs of the database,
    and the CPU seconds of its server processes."""

    commits: int
    wal_syncs: int
    cpu_s: float

    def minus(self, other: PgSample) -> PgSample:
        return PgSample(
            self.commits - other.commits, self.wal_syncs - other.wal_syncs, self.cpu_s - other.cpu_s
        )


def pg_sample(url: str) -> PgSample:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        commits = conn.execute(query).fetchone()[0]
        wal_syncs = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0]
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    cpu = sum(process_cpu(pid) for pid in [postmaster, *children(postmaster)])
    return PgSample(commits, wal_syncs, cpu)


def settled(count: Callable[[], int]) -> int:
    """The number of rows once it stops changing: requests still in flight when wrk stopped are
    answered to a closed connection, but stored all the same."""
    import time

    value = count()
    for _ in range(30):
        time.sleep(1)
        previous, value = value, count()
        if value == previous:
            break
    return value


def measure(target: Target, number: int, args, work: Path, wrk_path: str) -> Run:
    """Warm up, then one timed run against ``target`` with fresh bodies; count what was stored."""
    script = work / "post.lua"
    url = target.server.url
    warmup = write_bodies(work / "warmup.txt", f"{target.name}{number}w", WARMUP_SECONDS * BODIES_PER_SECOND)
    warm = wrk(wrk_path, script, url, warmup, WARMUP_SECONDS, args.connections)
    bodies = write_bodies(work / "bodies.txt", f"{target.name}{number}", args.duration * BODIES_PER_SECOND)
    before = settled(target.count) if target.count else 0
    with ExitStack() as stack:
        flood = None
        if target.flood:
            bad = write_bodies(
                work / "flood.txt", f"flood{number}", args.duration * args.flood, "wrong-secret"
            )
            command = wrk_command(wrk_path, script, url, bad, args.duration, FLOOD_CONNECTIONS, 1, args.flood)
            flood = stack.enter_context(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        pg_before = pg_sample(target.pg_url) if target.pg_url else None
        with cpu_of(target.server.pid) as cpu:
            result = wrk(wrk_path, script, url, bodies, args.duration, args.connections)
            flood_result = parse_result(flood.communicate()[0]) if flood else None
        pg_after = pg_sample(target.pg_url) if target.pg_url else None
    statuses = {str(k): int(v) for k, v in result["statuses"].items()}
    run = Run(
        target=target.name,
        round=number,
        rps=sum(v for k, v in statuses.items() if k.startswith("2")) / (result["duration_us"] / 1e6),
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
        flood={str(k): int(v) for k, v in flood_result["statuses"].items()} if flood_result else {},
        pg=pg_after.minus(pg_before) if pg_after and pg_before else None,
    )
    if target.count:
        run.stored = settled(target.count) - before
    for path in work.glob("*.txt"):
        path.unlink()
    return run


def run(args) -> None:
    """Set up the databases and the servers, alternate the runs, print each, then the report."""
    wrk_path = ensure_wrk()
    names = args.targets.split(",")
    if args.flood and "app" in names:
        names.insert(names.index("app") + 1, "app+flood")
    work = Path(tempfile.mkdtemp(prefix="seqbridge-bench-ingest-"))
    try:
        (work / "post.lua").write_text(WRK_SCRIPT)
        with ExitStack() as stack:
            url = stack.enter_context(database(args.engine, durable=True))
            mappings = work / "mappings"
            prepare(url, mappings)
            flask_url = None
            if "app-flask" in names:
                flask_url = stack.enter_context(database(args.engine, durable=True))
                prepare(flask_url, work / "mappings-flask")
            minimal_db = work / "minimal.db"
            minimal_ingest.create(str(minimal_db))
            minimal_wsgi_db = work / "minimal-wsgi.db"
            minimal_ingest.create(str(minimal_wsgi_db))
            env = {
                **os.environ,
                "SEQBRIDGE_DATABASE_URL": url,
                "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
                "SEQBRIDGE_WEB_WORKERS": str(args.workers),
                "SEQBRIDGE_WEB_THREADS": str(args.threads),
                "SEQBRIDGE_LOG_LEVEL": "WARNING",
                "SEQBRIDGE_MINIMAL_DATABASE": str(minimal_db),
                "SEQBRIDGE_MINIMAL_SECRET": APP_SECRET,
            }
            apps = {
                "bare": "bench.bare_app:app",
                "minimal": "bench.minimal_ingest:app",
                "minimal-wsgi": "bench.minimal_ingest:wsgi",
                "app": "seqbridge:create_app()",
                "app-flask": "seqbridge:create_app()",
            }
            counters = {
                "bare": None,
                "minimal": sqlite_counter(minimal_db, "SELECT count(*) FROM receipts"),
                "minimal-wsgi": sqlite_counter(minimal_wsgi_db, "SELECT count(*) FROM receipts"),
                "app": app_counter(url),
                "app-flask": app_counter(flask_url) if flask_url else None,
            }
            envs = {
                "minimal-wsgi": {"SEQBRIDGE_MINIMAL_DATABASE": str(minimal_wsgi_db)},
                "app-flask": {
                    "SEQBRIDGE_HOOKS_LANE": "false",
                    "SEQBRIDGE_DATABASE_URL": flask_url or "",
                    "SEQBRIDGE_MAPPINGS_DIR": str(work / "mappings-flask"),
                },
            }
            servers = {}
            for name in dict.fromkeys(n.removesuffix("+flood") for n in names):
                servers[name] = stack.enter_context(
                    gunicorn(
                        name, apps[name], {**env, **envs.get(name, {})}, work, args.max_requests, HOOK_NAME
                    )
                )
                check_answer(servers[name].url, "check")
            targets = [
                Target(
                    n,
                    servers[n.removesuffix("+flood")],
                    counters[n.removesuffix("+flood")],
                    flood=n.endswith("+flood"),
                    pg_url=(flask_url if n == "app-flask" else url)
                    if args.engine == "postgresql" and n.startswith("app")
                    else None,
                )
                for n in names
            ]
            print(
                f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), "
                f"max_requests {args.max_requests}; wrk: 2 threads, {args.connections} connections, "
                f"{args.duration} s after {WARMUP_SECONDS} s warm-up, {args.rounds} rounds; app database "
                f"{args.engine} (durable){f'; flood {args.flood} bad signatures/s' if args.flood else ''}",
                flush=True,
            )
            runs: list[Run] = []
            for number in range(1, args.rounds + 1):
                for target in targets:
                    runs.append(measure(target, number, args, work, wrk_path))
                    print(runs[-1].line(), flush=True)
            totals = {t.name: settled(t.count) for t in targets if t.count and not t.flood}
        report(runs, totals)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ratio(runs: list[Run], subject: str, baseline: str, value: Callable[[Run], float]) -> float | None:
    a = [value(r) for r in runs if r.target == subject]
    b = [value(r) for r in runs if r.target == baseline]
    return paired_ratio(a, b) if a and len(a) == len(b) else None


def report(runs: list[Run], totals: dict[str, int]) -> None:
    """Medians, paired ratios against the targets, and the 202s against the stored rows."""
    names = list(dict.fromkeys(r.target for r in runs))
    summary: dict[str, object] = {}
    for name in names:
        group = [r for r in runs if r.target == name]
        cpu = [c for r in group if (c := r.cpu_per_request_us()) is not None]
        print(
            f"median {name:9} {statistics.median(r.rps for r in group):8,.0f} req/s  "
            f"p99 {statistics.median(r.p99_ms for r in group):6.1f} ms"
            + (f"  server CPU per answered request {statistics.median(cpu):,.0f} us" if cpu else "")
            + (
                f"  machine idle {statistics.median(r.cpu.idle for r in group if r.cpu):.0%}"
                if all(r.cpu for r in group)
                else ""
            )
        )
    checks = [
        ("app/bare req/s", "app", "bare", lambda r: r.rps, ">=", 0.60),
        ("app/minimal req/s", "app", "minimal", lambda r: r.rps, ">=", 0.85),
        ("minimal/bare req/s", "minimal", "bare", lambda r: r.rps, None, None),
        ("app/bare p99", "app", "bare", lambda r: r.p99_ms, "<=", 3.0),
        ("app/bare CPU per request", "app", "bare", lambda r: r.cpu_per_request_us() or 0, None, None),
        ("app/minimal CPU per request", "app", "minimal", lambda r: r.cpu_per_request_us() or 0, None, None),
        ("app+flood/app valid req/s", "app+flood", "app", lambda r: r.rps, None, None),
        ("app-flask/minimal req/s", "app-flask", "minimal", lambda r: r.rps, None, None),
        ("app/app-flask req/s", "app", "app-flask", lambda r: r.rps, None, None),
        ("app/minimal-wsgi req/s", "app", "minimal-wsgi", lambda r: r.rps, None, None),
        ("minimal-wsgi/bare req/s", "minimal-wsgi", "bare", lambda r: r.rps, None, None),
    ]
    for label, subject, baseline, value, op, goal in checks:
        ratio = _ratio(runs, subject, baseline, value)
        if ratio is None:
            continue
        summary[label] = round(ratio, 2)
        verdict = ""
        if op:
            met = ratio >= goal if op == ">=" else ratio <= goal
            verdict = f" (target {op} {goal:.2f}: {'met' if met else 'MISSED'})"
        print(f"{label:28} {ratio:.2f}{verdict}")
    for name, total in totals.items():
        group = [r for r in runs if r.target.removesuffix("+flood") == name]
        accepted, sent = sum(r.accepted for r in group), sum(r.sent for r in group)
        stored = sum(r.stored or 0 for r in group)
        # Everything the target ever got: one check request, then each run's warm-up and timed run.
        accepted_all = 1 + sum(r.accepted + r.warmup_accepted for r in group)
        sent_all = 1 + sum(r.sent + r.warmup_sent for r in group)
        verdict = "OK" if accepted_all <= total <= sent_all else "MISMATCH"
        print(
            f"{name}: timed runs {accepted:,} answered 202, {stored:,} rows added, {sent:,} sent; "
            f"at the end {total:,} rows, {accepted_all:,} 202s and {sent_all:,} requests over the "
            f"whole run (warm-ups included) -> {verdict} (202s <= rows <= sent)"
        )
    print(json.dumps({"ratios": summary, "runs": [asdict(r) for r in runs]}))


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
    parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        help="gunicorn max_requests for every server; 0 never recycles workers",
    )
    parser.add_argument(
        "--targets",
        default="bare,minimal,app,app-flask",
        help="comma-separated: bare, minimal, minimal-wsgi, app, app-flask",
    )
    parser.add_argument(
        "--flood",
        type=int,
        default=0,
        help="also run the app while this many bad-signature requests/s arrive",
    )
    parser.add_argument(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the app's database (durable either way)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
