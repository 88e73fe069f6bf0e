"""`seqbridge serve` and `seqbridge worker` as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout: float = 90) -> requests.Response:
    """The first answer from ``url``. Gunicorn binds before its workers have booted, so on a busy
    machine a read may time out before the first answer: that is waited out too."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=10)
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """End a process still running after a failed test: SIGTERM first, so `seqbridge serve` takes
    gunicorn and the worker down with it (a SIGKILL would leave them running, orphaned)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def test_serve_runs_gunicorn_and_the_worker_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "SEQBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}
    key = subprocess.run(
        [sys.executable, "-m", "seqbridge", "keys", "create", "--org", "demo", "--scope", "*"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/healthz").json() == {"data": {"status": "ok"}}
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["data"]["status"] == "ready"
        created = requests.post(
            f"http://127.0.0.1:{port}/api/v1/contacts",
            json={"email": "a@x.com"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert created.status_code == 201 and created.json()["data"]["email"] == "a@x.com"
        assert created.headers["X-Request-Id"]
        # Two children: gunicorn's master and the worker.
        assert len(_children(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 0, output
    assert "worker" in output and "stopped" in output


def test_serve_no_worker_starts_only_the_web_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "SEQBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "serve", "--port", str(port), "--workers", "1", "--no-worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert len(_children(proc.pid)) == 1
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_worker_stops_gracefully_on_sigterm(tmp_path):
    env = {**os.environ, "SEQBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    line = ""
    while "started" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "stopping after the current batch" in output and "stopped" in output


def test_sigterm_at_any_moment_of_the_idle_poll_stops_the_worker(tmp_path):
    """The stop flag is safe to set from a signal handler: SIGTERM arriving in the middle of the
    idle wait (polled every millisecond here, so the signal lands inside it) always stops the
    worker. threading.Event.set() from the handler could deadlock in exactly this spot."""
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.001",
    }
    subprocess.run(
        [sys.executable, "-m", "seqbridge", "init"], env=env, check=True, capture_output=True, timeout=60
    )
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        line = ""
        while "started" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        time.sleep(0.05 * attempt)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, output
        assert "stopped" in output
