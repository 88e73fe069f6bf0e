"""Wake on arrival: a committed delivery starts the worker's next batch at once, not at its next
poll (PostgreSQL: LISTEN/NOTIFY; SQLite: a datagram on a Unix socket beside the database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from seqbridge.storage.schema import deliveries, workers
from seqbridge.storage.wakeup import Listener, socket_directory
from tests import factories
from tests.test_hooks import WHATSAPP_STOP, meta_body, post_meta, write_mapping


def test_an_announcement_wakes_a_listener_and_silence_lets_it_sleep(services):
    listener = Listener(services.db)
    listener.open()
    try:
        assert listener.wait(0.2, lambda: False) is False
        services.db.announcer.announce()
        assert listener.wait(10, lambda: False) is True
        listener.drain()
        assert listener.wait(0.2, lambda: False) is False
        assert listener.wait(10, lambda: True) is False  # a stopping worker does not wait
    finally:
        listener.close()
    if services.db.is_sqlite:  # its socket is gone with it, and announcing to nobody is fine
        assert not any(socket_directory(services.db.engine.url.database).glob("*.sock"))
        services.db.announcer.announce()


def _count(services, query) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_a_webhook_is_processed_long_before_the_workers_next_poll(
    app_config, api, client, services, tmp_path
):
    write_mapping(app_config, WHATSAPP_STOP)
    person = factories.contact(api, phone="+15551234567")
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": app_config["DATABASE_URL"],
        "SEQBRIDGE_MAPPINGS_DIR": app_config["MAPPINGS_DIR"],
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "120",
    }
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while _count(services, select(func.count()).select_from(workers)) == 0:  # its first round is done
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(0.5)  # asleep now, for two minutes unless woken
        assert post_meta(client, meta_body("STOP")).status_code == 202
        processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
        deadline = time.monotonic() + 30
        while _count(services, processed) == 0:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
