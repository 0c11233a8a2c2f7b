"""A throwaway PostgreSQL server, for tests and benchmarks: ``initdb`` and ``pg_ctl`` in a
temporary folder, on a free loopback port, with a password. ``initdb`` refuses to run as root:
as root, the server runs as the ``postgres`` system user, in a folder that user owns.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from urllib.parse import urlsplit

__all__ = ["USER", "PostgresServer", "ServerUnavailable", "database_url"]

#: The superuser of a throwaway server (its password is made afresh for each server).
USER = "audiencekit"

#: Settings of a throwaway server: loopback only, fast, nothing kept.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class ServerUnavailable(Exception):
    """No server could be started: the reason, from initdb or pg_ctl."""


def _as_postgres(command: list[str]) -> list[str]:
    """``command`` as the ``postgres`` system user when run as root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server in a temporary folder, on a free loopback port, that takes a
    password: ``url`` is its superuser's URL (password included), ``stop()`` removes it."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="ak-pg-")
        self.data = os.path.join(self.folder, "data")
        self.password = secrets.token_hex(16)
        self.port = 0
        self.url = ""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _run(self, *command: str) -> None:
        try:
            done = subprocess.run(
                _as_postgres(list(command)),
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerUnavailable(f"{command[0]}: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ServerUnavailable(f"{command[0]} failed: {' '.join(detail[-3:])}")

    def _start(self) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise ServerUnavailable("initdb and pg_ctl are not on the PATH")
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        pwfile = os.path.join(self.folder, "pwfile")
        with open(pwfile, "w") as file:
            file.write(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "--pgdata", self.data, "--username", USER, "--pwfile", pwfile,
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        os.remove(pwfile)
        for attempt in range(3):  # another process may take the free port before the server
            self.port = _free_port()
            try:
                self.resume()
            except ServerUnavailable:
                if attempt == 2:
                    raise
            else:
                break
        self.url = f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def resume(self) -> None:
        """Start the server (again, after :meth:`halt`), on its port."""
        options = " ".join(f"-c {name}={value}" for name, value in _SETTINGS.items())
        self._run(
            "pg_ctl", "start", "--wait", "--pgdata", self.data,
            "--log", os.path.join(self.folder, "server.log"),
            "-o", f"{options} -p {self.port} -k {self.folder}",
        )  # fmt: skip

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: its connections are cut, what was committed is kept, as
        in a restart; ``immediate``: at once, as a crash)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "stop", "--pgdata", self.data, "-m", mode)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        try:
            self.halt("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()
