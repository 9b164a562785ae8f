"""The service as its own process: `uvicorn` on a free loopback port, for the tests and the benchmarks alike."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "app.main:app"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """`uvicorn APP` on 127.0.0.1, configured only through CLIPSPACE_* variables as in production.

    `app` names the ASGI app (`module:attribute`); its output goes to `log`, which every error message quotes.
    """

    def __init__(self, env: dict[str, str], log: Path, app: str = APP, uvicorn_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port), *uvicorn_args],
                cwd=REPO_ROOT, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, path: str, timeout: float) -> None:
        """Poll GET `path` until it answers 200; fail early, with the log, if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = httpx.get(self.url + path, timeout=10)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.TransportError as error:
                last = repr(error)
            time.sleep(0.2)
        raise RuntimeError(f"GET {path} did not answer 200 within {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def memory_mb(self) -> dict[str, float]:
        """Resident memory of the service process (Linux): all of it, its private part, and mapped files."""
        fields = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb", "VmHWM": "peak_rss_mb"}
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                found[fields[key]] = round(int(value.split()[0]) / 1024, 1)
        return found

    def reset_peak_memory(self) -> None:
        """Restart the peak (VmHWM) at the present resident memory (Linux's clear_refs "5"): `peak_rss_mb` then
        measures one phase, such as a model switch, not the start-up that loaded and fingerprinted a model."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def launched(env: dict[str, str], log: Path, app: str = APP,
             uvicorn_args: tuple[str, ...] = ()) -> Iterator[ServiceProcess]:
    """A ServiceProcess that is stopped on the way out, whatever happened inside."""
    service = ServiceProcess(env, log, app, uvicorn_args)
    try:
        yield service
    finally:
        service.stop()
