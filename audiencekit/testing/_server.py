"""Serving the emulators over real loopback sockets, from a background thread.

The server runs its own asyncio loop in a thread, so tests that use it may run under asyncio or
trio alike, and the requests cross a real TCP connection (timeouts, dropped connections and
connection pools behave as they do against the providers).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import attrs
import uvicorn

from ..providers import providers
from ._app import EmulatorApp

if TYPE_CHECKING:
    from ._batch import BatchEmulator
    from ._dexatel import DexatelEmulator

__all__ = ["EmulatorServer", "Endpoint", "Endpoints"]


def _read_only(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


@attrs.frozen
class Endpoint:
    """Where one provider's emulator listens, and the options a backend connects with
    (``open_backend(endpoint.provider, **endpoint.options)``)."""

    provider: str
    url: str
    options: Mapping[str, Any] = attrs.field(converter=_read_only)


class Endpoints(Mapping[str, Endpoint]):
    """Every emulator's :class:`Endpoint`, by provider name; the built-in providers' URLs and
    keys are attributes too (``endpoints.batch_url``)."""

    def __init__(self, endpoints: Mapping[str, Endpoint]) -> None:
        self._endpoints = dict(endpoints)

    def __getitem__(self, provider: str) -> Endpoint:
        return self._endpoints[provider]

    def __iter__(self) -> Iterator[str]:
        return iter(self._endpoints)

    def __len__(self) -> int:
        return len(self._endpoints)

    def __repr__(self) -> str:
        return f"Endpoints({', '.join(f'{k}={e.url}' for k, e in self._endpoints.items())})"

    @property
    def dexatel_url(self) -> str:
        return self["dexatel"].url

    @property
    def dexatel_key(self) -> str:
        return str(self["dexatel"].options["api_key"])

    @property
    def batch_url(self) -> str:
        return self["batch"].url

    @property
    def batch_key(self) -> str:
        return str(self["batch"].options["api_key"])

    @property
    def batch_project(self) -> str:
        return str(self["batch"].options["project_key"])


class EmulatorServer:
    """An emulator of every registered provider that has one, on 127.0.0.1 (ephemeral ports
    unless given), served by uvicorn.

    Use it as a context manager (``with EmulatorServer() as server: ...``) or call
    :meth:`start` and :meth:`stop`. ``server.emulators[name]`` (``server.dexatel``,
    ``server.batch`` for the built-ins) are the emulator objects, for configuration, fault
    plans and inspection from Python. Pass ``emulators`` (by provider name) to use your own;
    ``ports`` to fix their ports.
    """

    def __init__(
        self,
        *,
        dexatel: DexatelEmulator | None = None,
        batch: BatchEmulator | None = None,
        host: str = "127.0.0.1",
        dexatel_port: int = 0,
        batch_port: int = 0,
        emulators: Mapping[str, EmulatorApp] | None = None,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        given: dict[str, EmulatorApp] = dict(emulators or {})
        if dexatel is not None:
            given["dexatel"] = dexatel
        if batch is not None:
            given["batch"] = batch
        self.emulators: dict[str, EmulatorApp] = {}
        for provider in providers():
            if provider.name in given:
                self.emulators[provider.name] = given.pop(provider.name)
            elif provider.emulator is not None:
                self.emulators[provider.name] = provider.build_emulator()
        self.emulators.update(given)  # emulators of providers that are not registered
        wanted = {"dexatel": dexatel_port, "batch": batch_port} | dict(ports or {})
        self.host = host
        self._ports = tuple(wanted.get(name, 0) for name in self.emulators)
        self._sockets: list[socket.socket] = []
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<EmulatorServer {state} {self.host} {', '.join(self.emulators)}>"

    @property
    def dexatel(self) -> DexatelEmulator:
        return self.emulators["dexatel"]  # type: ignore[return-value]

    @property
    def batch(self) -> BatchEmulator:
        return self.emulators["batch"]  # type: ignore[return-value]

    @property
    def endpoints(self) -> Endpoints:
        """Where each emulator listens and how to connect to it, by provider name."""
        if not self._sockets:
            raise RuntimeError("the emulator server is not running")
        found: dict[str, Endpoint] = {}
        for (name, app), sock in zip(self.emulators.items(), self._sockets, strict=True):
            url = f"http://{self.host}:{sock.getsockname()[1]}{app.url_path}"
            found[name] = Endpoint(name, url, app.connection(url))
        return Endpoints(found)

    def reset(self) -> None:
        """Every emulator empty and in its default configuration: no state, no logged
        requests, no faults."""
        from ._faults import FaultPlan

        for app in self.emulators.values():
            app.restore_defaults()
            app.set_faults(FaultPlan())
            app.log_bodies = True
            app.reset()

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Bind every emulator's port, start serving, and return once all accept connections."""
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
        self._servers = [self._uvicorn(app) for app in self.emulators.values()]
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
