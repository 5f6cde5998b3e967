"""A private ``redis-server`` process on a free port (for tests and ``fusion demo``).

The server can be killed (SIGKILL) and restarted on the same port and directory; with
``appendonly=True`` it then reloads its AOF, as a production Redis with persistence would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_or_free(port: int, host: str = "127.0.0.1") -> int:
    """``port`` when it can be bound on ``host`` now, else a free port (``0`` asks for a free one): a second stack
    or demo on the same machine gets its own dashboard instead of a UI process that dies on a taken port."""
    if port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                pass
            else:
                return port
    return free_port()


class RedisServer:
    """Start/stop/kill a local redis-server; ``url`` points at it."""

    def __init__(
        self,
        port: int | None = None,
        appendonly: bool = False,
        workdir: str | None = None,
        password: str | None = None,
        detach: bool = False,
    ) -> None:
        """``detach``: run the server in its own session, so a Ctrl-C in the terminal (SIGINT to the
        foreground process group) does not stop it before the caller has stopped its clients."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: install it (apt-get install redis-server)")
        self.exe = exe
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password  # --requirepass: clients must AUTH (the URL carries it)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="fusion-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.detach = detach

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=self.detach
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                if client.ping():
                    # AOF loading answers LOADING errors to commands; wait until ready
                    info = client.info("persistence")
                    if not info.get("loading", 0):
                        break
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL (no shutdown save)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
