"""Gunicorn web workers killed with SIGKILL while they handle webhooks. A sender either got a 2xx
and the delivery exists, or got no 2xx (then its retry stores it once). Never a 2xx with nothing
stored. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from seqbridge.storage.migrate import upgrade
from seqbridge.storage.schema import deliveries
from seqbridge.web import create_app
from tests.test_hooks import WHATSAPP_STOP, meta_body, meta_headers, write_mapping

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_2xx_always_means_stored_when_web_workers_are_killed_mid_request(engine, request, tmp_path):
    url = f"sqlite:///{tmp_path}/web.db" if engine == "sqlite" else request.getfixturevalue("postgresql_url")
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    write_mapping({"MAPPINGS_DIR": str(mappings)}, WHATSAPP_STOP)
    app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": str(mappings)})
    services = app.extensions["seqbridge"]
    upgrade(services.db)
    services.keys.create_key("acme", ["*"], "test")  # the hook's organization
    port = _free_port()
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
        "SEQBRIDGE_BIND": f"127.0.0.1:{port}",
        "SEQBRIDGE_WEB_WORKERS": "2",
        "SEQBRIDGE_WEB_THREADS": "8",
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:seqbridge.gunicorn_conf", "seqbridge:create_app()"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    serial = itertools.count()
    outcomes: list[tuple[int, int | str, str | None]] = []  # (message, status or error, delivery id)
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def post(session: requests.Session, n: int) -> requests.Response:
        body = meta_body("STOP", message_id=f"wamid.W{n}", sender=f"1666{n:07d}")
        return session.post(f"{base}/hooks/whatsapp", data=body, headers=meta_headers(body), timeout=30)

    def sender() -> None:
        session = requests.Session()
        while sending.is_set():
            n = next(serial)
            try:
                answer = post(session, n)
                outcome = (
                    n,
                    answer.status_code,
                    answer.json()["data"].get("delivery_id") if answer.ok else None,
                )
            except requests.RequestException as error:
                outcome = (n, type(error).__name__, None)
                session = requests.Session()
            with lock:
                outcomes.append(outcome)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=5).ok and len(_children(master.pid)) == 2:
                    break
            except requests.RequestException:  # still booting
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-3000:]
            time.sleep(0.1)
        senders = [threading.Thread(target=sender) for _ in range(8)]
        for thread in senders:
            thread.start()
        rng = random.Random(7)
        kills = 0

        def answered() -> int:
            with lock:
                return sum(1 for o in outcomes if o[1] == 202)

        while kills < 6:
            # Kill only once the servers have answered a few more webhooks since the last kill, so
            # the test does the same work on a loaded machine as on a quiet one.
            wanted, deadline = answered() + 20, time.monotonic() + 60
            while answered() < wanted:
                assert time.monotonic() < deadline, "the web workers stopped answering"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            workers = _children(master.pid)
            if workers:  # gunicorn restarts the killed one
                os.kill(rng.choice(workers), signal.SIGKILL)
                kills += 1
        time.sleep(1)
        sending.clear()
        for thread in senders:
            thread.join(timeout=60)

        statuses = Counter(o[1] for o in outcomes)
        print(f"{kills} web workers killed; outcomes: {dict(statuses)}")
        assert set(statuses) - {"ConnectionError", "ChunkedEncodingError"} == {202}, statuses
        assert statuses[202] > 100 and len(statuses) > 1  # the kills landed on requests in flight
        # Every 2xx names a delivery that is stored.
        acknowledged = {o[2] for o in outcomes if o[1] == 202}
        with services.db.engine.connect() as conn:
            stored = set(
                conn.execute(select(deliveries.c.id).where(deliveries.c.id.in_(acknowledged))).scalars()
            )
        assert stored == acknowledged
        # A sender retries what got no answer: each message ends up stored exactly once.
        unanswered = sorted({o[0] for o in outcomes if o[1] != 202})
        with ThreadPoolExecutor(8) as pool:
            retried = Counter(pool.map(lambda n: post(requests.Session(), n).status_code, unanswered))
        assert set(retried) <= {200, 202}, retried  # 200: the killed request had stored it
        with services.db.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
        assert total == len({o[0] for o in outcomes})
    finally:
        sending.clear()
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=60)
        log.close()
        services.db.dispose()
