"""A throw-away redis-server of the tests' own (no persistence, loopback, a free port), started and waited
for, failing at once with the server's log when it exits. Knows nothing about the service."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One redis-server on `port`; `extra` options are appended (e.g. cluster mode). Can be killed and
    started again on the same port."""

    def __init__(self, port: int, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.port, self.workdir, self.extra = port, workdir, extra
        self.log = workdir / f"redis-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (make redis installs it)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*args, "--dir", str(self.workdir), *self.extra], stdout=log, stderr=subprocess.STDOUT
            )
        no_retry = Retry(NoBackoff(), 0)  # the default retries with backoff take ~4 s per refused ping
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.2, retry=no_retry)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    pytest.fail(f"redis-server on port {self.port} exited ({self.proc.returncode}):\n{tail}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.kill()  # a server that never answered is not left running
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
