"""The real relay for the client's tests: built by ``cargo build`` (or named by
``NOTIFY_RELAY_BIN``), started on a free loopback port, stopped with its process group."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator, List

import pytest

#: How long any awaited condition may take before the test fails (seconds).
DEADLINE_S = 15.0
#: How often a condition is checked (seconds).
POLL_S = 0.02

ROOT = Path(__file__).resolve().parents[3]
RELAY_BIN = os.environ.get("NOTIFY_RELAY_BIN", str(ROOT / "target" / "debug" / "notify-relay"))


def eventually(what: str, condition: Callable[[], bool]) -> None:
    """Returns once ``condition()`` is true; fails at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(POLL_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Relay:
    """One relay process on a fixed port, which can be stopped and started again."""

    def __init__(self, port: int, args: Iterable[str] = ()) -> None:
        self.port = port
        self.args = list(args)
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/"
        self.process: "subprocess.Popen[str] | None" = None
        self.log: List[str] = []

    def start(self) -> None:
        assert Path(RELAY_BIN).exists(), f"no relay at {RELAY_BIN}: run cargo build"
        self.log = []
        self.process = subprocess.Popen(
            [RELAY_BIN, "--host", "127.0.0.1", str(self.port), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": "info"},
        )
        listening = threading.Event()
        stderr = self.process.stderr

        def read() -> None:
            assert stderr is not None
            for line in stderr:
                self.log.append(line)
                if "listening on" in line:
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(DEADLINE_S):
            self.stop()
            pytest.fail("relay did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        """SIGTERM (the relay drains and exits 0); the whole group is killed if it hangs."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("relay did not drain")
        assert code == 0, f"relay exited {code}:\n" + "".join(self.log)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=DEADLINE_S) as response:
            return response.read().decode()

    def metric(self, series: str) -> float:
        """The value of one series of /metrics (0 when absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def connections(self, key: str, token: str = "") -> int:
        """Live connections under ``key`` (GET /presence/<key>, with ``token`` if given)."""
        query = f"?token={token}" if token else ""
        url = f"{self.http}/presence/{key}{query}"
        with urllib.request.urlopen(url, timeout=DEADLINE_S) as response:
            return int(json.load(response)["connections"])


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay(free_port())
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


#: The registration secret and publisher token of ``secured_relay``.
AUTH_SECRET = "python client test secret"
PUBLISH_TOKEN = "python client publisher"


def registration_token(key: str, secret: str = AUTH_SECRET, ttl_s: int = 3600) -> str:
    """An HS256 JWT for ``key``, as a web app would mint it (here with the standard
    library; the docs show the same with PyJWT)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": key, "exp": int(time.time()) + ttl_s}).encode())
    signed = f"{header}.{claims}"
    signature = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(signature)}"


@pytest.fixture
def secured_relay() -> Iterator[Relay]:
    """A relay with --auth-secret and --publish-token (Part 5 access control)."""
    relay = Relay(free_port(), ["--auth-secret", AUTH_SECRET, "--publish-token", PUBLISH_TOKEN])
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
