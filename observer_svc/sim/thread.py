"""A :class:`~observer_svc.sim.server.SimServer` hosted on its own event-loop thread, for sync code
(observer tests, the demo): ``with SimServerThread(driver) as st: st.url``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from observer_svc.sim.core import Driver
from observer_svc.sim.server import SimServer


class SimServerThread:
    """A :class:`SimServer` on its own event loop thread, for sync code: ``start()`` / ``stop()``."""

    def __init__(self, driver: Driver, host: str = "127.0.0.1", port: int = 0, **kw: Any) -> None:
        self.driver, self._args = driver, (host, port, kw)
        self.server: SimServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> SimServerThread:
        ready = threading.Event()
        err: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                host, port, kw = self._args
                self.server = loop.run_until_complete(SimServer(self.driver, host, port, **kw).start())
            except BaseException as e:
                err.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-server", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        if err:
            raise err[0]
        return self

    def call(self, fn: Any, *a: Any) -> Any:
        """Run ``fn(*a)`` on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_call(fn, *a), self._loop).result(10)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> SimServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Any, *a: Any) -> Any:
    return fn(*a)
