"""Start a throw-away PostgreSQL cluster for the test session.

PostgreSQL refuses to run as root, so as root the cluster is initialised and started as the
``postgres`` system user. Set ``SEQBRIDGE_TEST_PG_URL`` to use a server you already run instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str | None
    data_dir: Path | None = None
    _prefix: tuple[str, ...] = ()
    _pg_ctl: str | None = None
    _options: str = ""
    _log: Path | None = None

    def url(self, dbname: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.data_dir and self._pg_ctl:
            subprocess.run(
                [*self._prefix, self._pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "stop"],
                capture_output=True,
                check=False,
            )

    def start_again(self) -> None:
        """Start a cluster this module started (and :meth:`stop` stopped) on the same port."""
        assert self.data_dir and self._pg_ctl, "only a cluster started by start() can be restarted"
        subprocess.run(
            [
                *self._prefix,
                self._pg_ctl,
                "-D",
                str(self.data_dir),
                "-o",
                self._options,
                "-l",
                str(self._log),
                "-w",
                "-t",
                "60",
                "start",
            ],
            capture_output=True,
            check=True,
        )


def _find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} was not found. Install the server (Debian: apt-get install postgresql) "
        "or set SEQBRIDGE_TEST_PG_URL to a running server. The suite does not skip PostgreSQL."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(base_dir: Path, *, durable: bool = False) -> PgServer:
    """Initialise and start a cluster under ``base_dir`` on a free loopback port.

    The suite's cluster trades durability for speed (no fsync, asynchronous commit): a crash may
    lose commits it acknowledged. ``durable`` keeps PostgreSQL's defaults, for tests that crash
    the server and count what survived."""
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        prefix = ("runuser", "-u", "postgres", "--")
        base_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(base_dir, "postgres", "postgres")
        os.chmod(base_dir, 0o700)
    data_dir = base_dir / "data"
    log_file = base_dir / "server.log"

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = log_file.read_text() if log_file.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}\n{log}")

    run(
        initdb,
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
    )
    port = _free_port()
    options = f"-p {port} -k {base_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    run(pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(log_file), "-w", "-t", "60", "start")
    return PgServer("127.0.0.1", port, "postgres", None, data_dir, prefix, pg_ctl, options, log_file)


def from_url(url: str) -> PgServer:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return PgServer(
        parsed.host or "127.0.0.1", parsed.port or 5432, parsed.username or "postgres", parsed.password
    )
