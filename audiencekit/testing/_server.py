"""Serving the emulators over real loopback sockets, from a background thread.

The server runs its own asyncio loop in a thread, so tests that use it may run under asyncio or
trio alike, and the requests cross a real TCP connection (timeouts, dropped connections and
connection pools behave as they do against the providers).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import attrs
import uvicorn

from ._app import EmulatorApp
from ._batch import DEFAULT_BATCH_KEY, DEFAULT_BATCH_PROJECT, BatchEmulator
from ._dexatel import DEFAULT_DEXATEL_KEY, DexatelEmulator

__all__ = ["EmulatorServer", "Endpoints"]


@attrs.frozen(kw_only=True)
class Endpoints:
    """Where the emulators listen and the keys they accept: all a client needs to connect."""

    dexatel_url: str
    dexatel_key: str
    batch_url: str
    batch_key: str
    batch_project: str


class EmulatorServer:
    """Both emulators on 127.0.0.1 (ephemeral ports unless given), served by uvicorn.

    Use it as a context manager (``with EmulatorServer() as server: ...``) or call
    :meth:`start` and :meth:`stop`. ``server.dexatel`` and ``server.batch`` are the emulator
    objects, for configuration, fault plans and inspection from Python.
    """

    def __init__(
        self,
        *,
        dexatel: DexatelEmulator | None = None,
        batch: BatchEmulator | None = None,
        host: str = "127.0.0.1",
        dexatel_port: int = 0,
        batch_port: int = 0,
    ) -> None:
        self.dexatel = dexatel or DexatelEmulator()
        self.batch = batch or BatchEmulator()
        self.host = host
        self._ports = (dexatel_port, batch_port)
        self._sockets: list[socket.socket] = []
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<EmulatorServer {state} {self.host}>"

    @property
    def endpoints(self) -> Endpoints:
        if not self._sockets:
            raise RuntimeError("the emulator server is not running")
        dex_port, batch_port = (s.getsockname()[1] for s in self._sockets)
        return Endpoints(
            dexatel_url=f"http://{self.host}:{dex_port}/v1",
            dexatel_key=next(iter(self.dexatel.config.keys), DEFAULT_DEXATEL_KEY),
            batch_url=f"http://{self.host}:{batch_port}",
            batch_key=next(iter(sorted(self.batch.config.rest_keys)), DEFAULT_BATCH_KEY),
            batch_project=next(
                iter(sorted(self.batch.config.projects or ())), DEFAULT_BATCH_PROJECT
            ),
        )

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Bind both ports, start serving, and return once both accept connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        for port in self._ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited on accept
            sock.bind((self.host, port))
            sock.listen(512)
            sock.setblocking(False)
            self._sockets.append(sock)
        self._servers = [self._uvicorn(app) for app in (self.dexatel, self.batch)]
        self._thread = threading.Thread(target=self._run, name="audiencekit-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError("the emulator server did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator server failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the sockets (idempotent)."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._servers.clear()
        self._started.clear()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _uvicorn(self, app: EmulatorApp) -> uvicorn.Server:
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_keep_alive=30,
            backlog=512,
        )
        return uvicorn.Server(config)  # in a non-main thread it leaves signal handlers alone

    def _run(self) -> None:
        async def main() -> None:
            tasks = [
                asyncio.create_task(server.serve(sockets=[sock]))
                for server, sock in zip(self._servers, self._sockets, strict=True)
            ]
            while not all(server.started for server in self._servers):
                if any(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.01)
            self._started.set()
            await asyncio.gather(*tasks)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._started.set()
