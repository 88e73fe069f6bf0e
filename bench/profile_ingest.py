"""Where a webhook's CPU goes: py-spy samples of the gunicorn workers under wrk, by stage.

    .venv/bin/python -m bench.profile_ingest [--targets minimal,app] [--duration 12] [--rate 250]
                                             [--raw-dir DIR]

Each target is served as ``bench.ingest`` serves it (same gunicorn settings, same signed WhatsApp
bodies, the app on a fresh SQLite database). After a warm-up, ``py-spy record --gil`` samples both
workers while wrk posts for ``--duration`` seconds: each sample is the stack of the thread that
holds the GIL at that moment, so the samples are the processes' Python time (a gunicorn worker
runs one thread of Python at a time). Each sample goes to the innermost stage on its stack (the
table below); per request, a stage's share is its samples / rate / requests answered. The server
CPU per request read from ``/proc`` over the same run is printed beside: the difference is time
spent outside the GIL (the kernel's socket and file work, SQLite's C code, the fsync).

py-spy comes from PyPI (``pip install py-spy``) and needs ptrace (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from bench import minimal_ingest
from bench.common import database
from bench.ingest import APP_SECRET, HOOK_NAME, WARMUP_SECONDS, check_answer, prepare, write_bodies
from bench.load import WRK_SCRIPT, cpu_of, ensure_wrk, gunicorn, wrk

#: (stage, what a frame's ``function (file)`` contains), innermost match wins; order matters
#: only between patterns that can be on one frame.
STAGES = [
    ("SQLite statements (DBAPI cursor)", ("execute_raw (", "execute_count (", "Cursor.execute")),
    ("commit (COMMIT, fsync)", ("do_commit (", "receipts: commit")),
    ("write lock (flock, wake-up FIFO)", ("SQLiteWriteLock.",)),
    ("transaction machinery (SQLAlchemy, Tx)", ("sqlalchemy/", "Database.transaction", "storage/tx.py")),
    ("receipts' batch (claims, answers)", ("write_receipts (", "_answer_duplicates (", "Writer.write (")),
    ("group commit hand-off", ("GroupCommit.", "_Ticket.")),
    (
        "receipt row (values, headers JSON, ids)",
        (
            "receipt_values (",
            "redact_strings (",
            "new_id (",
            "Inbox._store (",
            "key_expiry (",
            "receipt_time",
        ),
    ),
    ("parse (strict JSON, events)", ("strictjson", "WhatsAppCloud.parse", "parse_json_body", "json/decoder")),
    ("verify (HMAC)", ("WhatsAppCloud.verify", "hmac.py")),
    ("inbox: the rest", ("services/inbox.py", "services/intake.py")),
    ("hooks view (body, headers, answer)", ("seqbridge/web/hooks.py", "seqbridge/web/hook_lane.py")),
    ("minimal view (verify, key, answer)", ("bench/minimal_ingest.py",)),
    ("bare view", ("bench/bare_app.py",)),
    (
        "pipeline (request id, contract, metrics, log)",
        (
            "seqbridge/web/pipeline.py",
            "seqbridge/web/contract.py",
            "seqbridge/web/idempotency.py",
            "prometheus_client",
        ),
    ),
    ("Flask / werkzeug", ("flask/", "werkzeug/", "blinker/")),
    (
        "gunicorn (HTTP, sockets, threads)",
        ("gunicorn/", "concurrent/futures", "selectors.py", "threading.py", "socket.py"),
    ),
]
OTHER = "other"


def _py_spy() -> str | None:
    """py-spy: next to this Python (a virtualenv's bin) or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def stage_of(frames: list[str]) -> str:
    """The innermost stage on a stack (frames root first)."""
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    return OTHER


def breakdown(raw: Path) -> tuple[Counter[str], int]:
    """Samples by stage from py-spy's raw (collapsed) output, and the total."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        samples[stage_of(frames)] += int(count)
    return samples, sum(samples.values())


def profile(name: str, app: str, env: dict[str, str], work: Path, args, wrk_path: str) -> None:
    script = work / "post.lua"
    with gunicorn(name, app, env, work, 0, HOOK_NAME) as server:
        check_answer(server.url, "check")
        warm = write_bodies(work / "warm.txt", f"{name}w", WARMUP_SECONDS * 7000)
        wrk(wrk_path, script, server.url, warm, WARMUP_SECONDS, args.connections)
        bodies = write_bodies(work / "bodies.txt", name, args.duration * 7000)
        raw = (args.raw_dir or work) / f"{name}.pyspy.txt"
        spy = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "--pid",
                str(server.pid),
                "--subprocesses",
                "--gil",
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--nolineno",
                "--duration",
                str(args.duration + 2),
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with cpu_of(server.pid) as cpu:
            result = wrk(wrk_path, script, server.url, bodies, args.duration, args.connections)
        spy.wait(timeout=120)
    requests = result["requests"]
    samples, total = breakdown(raw)
    server_us = cpu[0].server_s / requests * 1e6 if cpu and requests else float("nan")
    gil_us = total / args.rate / requests * 1e6
    print(
        f"\n{name}: {requests / (result['duration_us'] / 1e6):,.0f} req/s under py-spy; server CPU "
        f"{server_us:,.0f} us per request, of which {gil_us:,.0f} us holding the GIL ({total:,} samples)"
    )
    for stage, count in samples.most_common():
        print(f"  {stage:46} {count / total:6.1%}  {count / args.rate / requests * 1e6:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="minimal,app", help="comma-separated: bare, minimal, app")
    parser.add_argument("--duration", type=int, default=12, help="seconds sampled per target")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--raw-dir", type=Path, default=None, help="keep py-spy's raw output here")
    args = parser.parse_args()
    if _py_spy() is None:
        sys.exit("bench.profile_ingest needs py-spy: pip install py-spy")
    wrk_path = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="seqbridge-bench-profile-"))
    try:
        (work / "post.lua").write_text(WRK_SCRIPT)
        with ExitStack() as stack:
            url = stack.enter_context(database("sqlite"))
            prepare(url, work / "mappings")
            minimal_db = work / "minimal.db"
            minimal_ingest.create(str(minimal_db))
            env = {
                **os.environ,
                "SEQBRIDGE_DATABASE_URL": url,
                "SEQBRIDGE_MAPPINGS_DIR": str(work / "mappings"),
                "SEQBRIDGE_WEB_WORKERS": str(args.workers),
                "SEQBRIDGE_WEB_THREADS": str(args.threads),
                "SEQBRIDGE_LOG_LEVEL": "WARNING",
                "SEQBRIDGE_MINIMAL_DATABASE": str(minimal_db),
                "SEQBRIDGE_MINIMAL_SECRET": APP_SECRET,
            }
            apps = {
                "bare": "bench.bare_app:app",
                "minimal": "bench.minimal_ingest:app",
                "app": "seqbridge:create_app()",
            }
            for name in args.targets.split(","):
                profile(name, apps[name], env, work, args, wrk_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
