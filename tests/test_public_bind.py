"""A service on a public address needs keys, or an explicit CLIPSPACE_ALLOW_ANONYMOUS=1; anonymous clients are
rate-limited per address. Started as `python -m app` (Makefile, Dockerfile) and as a bare `uvicorn app.main:app`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.launcher import REPO_ROOT, free_port, launched


def public_address() -> str | None:
    """An address of this machine that is not loopback (the one its default route leaves by), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel only picks a source address
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def start_front_door(env: dict[str, str], *args: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def test_python_m_app_refuses_a_public_address_without_keys_and_says_how_to_go_on(tmp_path):
    env = {"CLIPSPACE_INDEX_DIR": str(tmp_path / "index"), "CLIPSPACE_API_KEYS_FILE": "",
           "CLIPSPACE_ALLOW_ANONYMOUS": "0"}
    run = subprocess.run([sys.executable, "-m", "app", "--host", "0.0.0.0", "--port", str(free_port())],
                         cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    for advice in ("CLIPSPACE_API_KEYS_FILE", "python -m app.keys add", "CLIPSPACE_ALLOW_ANONYMOUS=1", "127.0.0.1"):
        assert advice in run.stderr
    bad_keys = tmp_path / "keys.txt"
    bad_keys.write_text("a-key-in-plain-text\n")
    run = subprocess.run([sys.executable, "-m", "app", "--host", "127.0.0.1"], cwd=REPO_ROOT, timeout=60,
                         env={**os.environ, **env, "CLIPSPACE_API_KEYS_FILE": str(bad_keys)},
                         capture_output=True, text=True)
    assert run.returncode == 2 and "hashes, never keys" in run.stderr
    run = subprocess.run([sys.executable, "-m", "app"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env, "CLIPSPACE_RATE_LIMIT": "lots"})
    assert run.returncode == 2 and "20/s,burst=40" in run.stderr


@contextlib.contextmanager
def anonymous_front_door(tmp_path) -> Iterator[str]:
    port = free_port()
    env = {"CLIPSPACE_INDEX_DIR": str(tmp_path / "index"), "CLIPSPACE_ALLOW_ANONYMOUS": "1",
           "CLIPSPACE_RATE_LIMIT": "1/s,burst=5"}
    with open(tmp_path / "app.log", "w") as log:
        process = start_front_door(env, "--host", "0.0.0.0", "--port", str(port), log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz", timeout=10).status_code == 200:
                    break
            time.sleep(0.2)
        assert process.poll() is None, (tmp_path / "app.log").read_text()
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_allow_anonymous_serves_a_public_address_and_limits_each_client_address(tmp_path):
    with anonymous_front_door(tmp_path) as url:
        codes = [httpx.get(url + "/info", timeout=10).status_code for _ in range(6)]
        assert codes == [503] * 5 + [429]  # no index yet: 503 until the bucket of 5 is empty
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # probes are never limited
        address = public_address()
        if address:  # another client address has its own bucket
            assert httpx.get(f"http://{address}:{url.rsplit(':', 1)[1]}/info", timeout=10).status_code == 503


def test_a_bare_uvicorn_on_a_public_address_without_keys_answers_503_there_and_serves_loopback(tmp_path):
    address = public_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback to send a request to")
    env = {"CLIPSPACE_INDEX_DIR": str(tmp_path / "index")}
    with launched(env, tmp_path / "uvicorn.log", uvicorn_args=("--host", "0.0.0.0")) as service:
        service.wait_for("/healthz", timeout=180)
        for _ in range(2):
            refused = httpx.get(f"http://{address}:{service.port}/healthz", timeout=10)
            assert refused.status_code == 503
            assert "CLIPSPACE_API_KEYS_FILE" in refused.json()["detail"]
            assert "CLIPSPACE_ALLOW_ANONYMOUS=1" in refused.json()["detail"]
        assert service.log_tail().count("refusing requests on") == 1  # said once, not per request
