"""Fixtures for the emulator suites: the peeklock.testing plugin plus a small REST helper."""

import json
import os
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

from peeklock.testing import Emulator, emulator, emulator_factory, fresh_emulator, tls_emulator  # noqa: F401  (fixtures)


class Received:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        bp = headers.get("BrokerProperties")
        self.bp_raw = bp
        self.bp = json.loads(bp) if bp else None
        self.location = headers.get("Location")

    @property
    def lock_path(self):
        """Path part of Location (what clients call unlock/complete/renew on)."""
        return "/" + self.location.split("/", 3)[3]


class SB:
    """Thin REST helper over an Emulator handle (raw HTTP, SAS-signed)."""

    def __init__(self, emu: Emulator):
        self.emu = emu

    def send(self, entity, body=b"x", props=None, headers=None, content_type="text/plain"):
        h = dict(headers or {})
        if content_type is not None:
            h["Content-Type"] = content_type
        if props is not None:
            h["BrokerProperties"] = props if isinstance(props, str) else json.dumps(props)
        return self.emu.request("POST", "/%s/messages" % entity, body, h)

    def send_ok(self, entity, body=b"x", **kw):
        status, _, data = self.send(entity, body, **kw)
        assert status == 201, data
        return status

    def peek_lock(self, entity, timeout=0):
        return Received(
            *self.emu.request("POST", "/%s/messages/head?timeout=%s" % (entity, timeout), timeout=timeout + 30)
        )

    def receive_and_delete(self, entity, timeout=0):
        return Received(
            *self.emu.request("DELETE", "/%s/messages/head?timeout=%s" % (entity, timeout), timeout=timeout + 30)
        )

    def unlock(self, msg):
        return self.emu.request("PUT", msg.lock_path)[0]

    def complete(self, msg):
        return self.emu.request("DELETE", msg.lock_path)[0]

    def renew(self, msg):
        return self.emu.request("POST", msg.lock_path)[0]


@pytest.fixture
def sb(fresh_emulator):
    return SB(fresh_emulator)


@pytest.fixture
def queue(fresh_emulator):
    name = "q" + uuid.uuid4().hex[:8]
    fresh_emulator.create_queue(name)
    yield name
    fresh_emulator.delete_entity(name)


def in_thread(fn, *args):
    """Run fn in a thread; returns (thread, result dict with 'value' or 'error')."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


COMPAT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "compat"))


def npm_installed(subdir: str, module: str) -> str:
    """tests/compat/<subdir> with its npm dependencies installed (npm install once, when
    node_modules/<module> is missing); skips the test when node or npm is not there."""
    where = os.path.join(COMPAT_DIR, subdir)
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    if not os.path.isdir(os.path.join(where, "node_modules", module)):
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=where, capture_output=True, text=True, timeout=900
        )
        if r.returncode != 0:
            pytest.skip("npm install in tests/compat/%s failed: %s" % (subdir, r.stderr[-500:]))
    return where


def raw_exchange(emu, data: bytes, read: bool = True, timeout: float = 5.0) -> bytes:
    """Writes data (a request as given, Host and all) on a new connection and returns
    what comes back until the server closes, the timeout passes, or a whole answer is
    in (a last chunk, an empty body, or a sized error document)."""
    s = socket.create_connection((emu.host, emu.port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if (
                b"\r\n0\r\n\r\n" in out
                or (b"Content-Length: 0" in out and out.endswith(b"\r\n\r\n"))
                or (b"Content-Length:" in out and out.count(b"\r\n\r\n") and out.endswith(b"</Error>"))
            ):
                break
        return out
    finally:
        s.close()
