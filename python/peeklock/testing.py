"""pytest plugin: a Service Bus REST emulator for your tests.

Registered as the ``peeklock`` pytest plugin when the package is installed; from a source
tree use ``-p peeklock.testing`` (or import the fixtures in a conftest.py).

Fixtures
--------
``emulator`` (session scope)
    One emulator process for the whole test session, on a free loopback port, SAS on.
``fresh_emulator`` (function scope)
    The session emulator after :meth:`Emulator.reset` (entities kept, messages, faults and
    counters cleared).
``emulator_factory`` (function scope)
    ``emulator_factory(*cli_args, auth=True, data_dir=None, tls=False)`` starts extra emulators
    (for restarts, other flags); all are stopped at the end of the test.
``tls_emulator`` (session scope)
    A second session emulator serving HTTPS (``--tls``) with a self-signed certificate:
    ``.cert_path`` is the file to trust (Python SDK ``connection_verify=``, Node
    ``NODE_EXTRA_CA_CERTS``, peeklock ``ca_file=``), ``.connection_string`` has no
    ``UseDevelopmentEmulator`` (clients speak https). Needs the ``cryptography`` package.

The :class:`Emulator` handle
----------------------------
``.connection_string``, ``.endpoint`` (``http://127.0.0.1:PORT``, ``https://`` with TLS), ``.host``, ``.port``,
``.tls``, ``.cert_path`` (the certificate to trust, with TLS),
``.key_name``, ``.key``; ``.advance(seconds)``, ``.clock()``, ``.fault(**rule)`` -> id,
``.clear_faults()``, ``.state()``, ``.entity_state(path)``, ``.messages(path)``,
``.create_queue(name, **opts)``, ``.create_topic(name, **opts)``,
``.create_subscription(topic, name, **opts)``, ``.delete_entity(path)``, ``.reset()``,
``.sas_token(path="")``, ``.request(method, path, body=b"", headers=None, auth=True)``,
``.client()`` (same process, own connection, for threads), ``.stop()``, ``.kill()``, ``.restart()``.

Options (``**opts``) are the JSON fields of ``PUT /$admin/entities/{path}``:
``lock_duration``, ``max_delivery_count``, ``default_message_time_to_live``,
``dead_lettering_on_message_expiration``, ``max_message_size``. See docs/emulator.md.

The handle needs only the standard library, so it also works outside pytest::

    with Emulator.start("--queue", "orders") as emu:
        print(emu.connection_string)
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, cast

from .emulator.sas import make_token as make_sas_token  # the one SAS signer of the test tools

# The tokens of the test tools: they only have to outlive a test. Not the client's token
# lifetime (the core's PL_DEFAULT_TOKEN_LIFETIME_S, which the client reads): this module
# serves the emulator's own suites too, which run without the extension.
_TEST_TOKEN_LIFETIME_S = 86400

READY_PREFIX = "peeklock emulator ready: "
CERT_PREFIX = "peeklock emulator certificate: "
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EmulatorError(RuntimeError):
    pass


def parse_connection_string(conn: str) -> Dict[str, str]:
    out = {}
    for part in conn.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class Emulator:
    """A running ``python -m peeklock.emulator`` process and its test controls."""

    def __init__(
        self,
        args: List[str],
        auth: bool = True,
        data_dir: Optional[str] = None,
        startup_timeout: float = 20.0,
        tls: bool = False,
    ):
        self.args = list(args)
        self.auth = auth
        self.data_dir = data_dir
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.connection_string = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.key_name = ""
        self.key = ""
        self.tls = tls
        self.cert_path: Optional[str] = None
        self._tls_dir: Optional[str] = None
        self._conn: Optional[http.client.HTTPConnection] = None
        self._stderr = tempfile.TemporaryFile()

    # ----- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls, *args: str, auth: bool = True, data_dir: Optional[str] = None, port: int = 0, tls: bool = False
    ) -> "Emulator":
        """Start an emulator; ``tls=True`` serves HTTPS with a certificate made for it (kept
        across restarts of this handle)."""
        emu = cls(list(args), auth=auth, data_dir=data_dir, tls=tls)
        emu._launch(port)
        return emu

    def command(self, port: int = 0) -> List[str]:
        cmd = [sys.executable, "-m", "peeklock.emulator", "--port", str(port)] + self.args
        if not self.auth:
            cmd.append("--no-auth")
        if self.data_dir:
            cmd += ["--data-dir", self.data_dir]
        if self.tls:
            if self._tls_dir is None:
                self._tls_dir = tempfile.mkdtemp(prefix="peeklock-test-tls-")
            cmd += ["--tls", "--tls-dir", self._tls_dir]
        return cmd

    def _launch(self, port: int = 0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._stderr.seek(0)
        self._stderr.truncate()
        self.proc = subprocess.Popen(
            self.command(port), stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        assert self.proc.stdout is not None
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self._fail_start(
                    "no ready line within %.0f s" % self.startup_timeout
                    if left <= 0
                    else "exited with status %s" % self.proc.returncode
                )
            r, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if r:
                ch = os.read(self.proc.stdout.fileno(), 4096)
                if not ch:
                    self.proc.wait(5)
                    self._fail_start("exited with status %s" % self.proc.returncode)
                line += ch
        text = line.decode().strip()
        if READY_PREFIX not in text:
            self._fail_start("unexpected first line %r" % text[:200])
        self.connection_string = text.split(READY_PREFIX, 1)[1]
        cs = parse_connection_string(self.connection_string)
        hostport = cs["Endpoint"].split("://", 1)[1].rstrip("/")
        self.host, port_s = hostport.rsplit(":", 1)
        self.port = int(port_s)
        self.key_name = cs.get("SharedAccessKeyName", "")
        self.key = cs.get("SharedAccessKey", "")
        self.cert_path = None
        if cs.get("UseDevelopmentEmulator", "").lower() != "true":
            for ln in self.stderr_text().splitlines():  # written before the ready line
                if ln.startswith(CERT_PREFIX):
                    self.cert_path = ln[len(CERT_PREFIX) :].strip()

    def _fail_start(self, why: str) -> None:
        err = b""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._stderr.seek(0)
            err = self._stderr.read()[-4000:]
        finally:
            raise EmulatorError("emulator did not start: %s\n%s" % (why, err.decode("utf-8", "replace")))

    @property
    def scheme(self) -> str:
        return "https" if self.cert_path else "http"

    @property
    def endpoint(self) -> str:
        return "%s://%s:%d" % (self.scheme, self.host, self.port)

    def ssl_context(self) -> "ssl.SSLContext":
        """A client context that trusts this emulator's certificate (and only it)."""
        return ssl.create_default_context(cafile=self.cert_path)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0, keep_tls: bool = False) -> int:
        """SIGTERM and wait; returns the exit status. The certificate made for a TLS emulator
        is removed unless ``keep_tls`` (restart keeps it)."""
        self._close_conn()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._tls_dir is not None and not keep_tls:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the abrupt stop that persistence must survive."""
        self._close_conn()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def restart(self, same_port: bool = True) -> None:
        """Stop (if running) and start again with the same arguments (and data dir)."""
        port = self.port if same_port else 0
        if self.running:
            self.stop(keep_tls=True)
        for attempt in range(50):
            try:
                self._launch(port)
                return
            except EmulatorError:
                if attempt == 49 or not same_port:
                    raise
                time.sleep(0.1)  # the port may linger briefly

    def client(self) -> "Emulator":
        """A handle on the same process with its own HTTP connection (for another thread).
        Use it for requests only; stop the original handle."""
        other = object.__new__(Emulator)
        other.__dict__.update(self.__dict__)
        other._conn = None
        return other

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----- HTTP ------------------------------------------------------------------------------

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def sas_token(self, path: str = "", lifetime: int = _TEST_TOKEN_LIFETIME_S) -> str:
        """A SAS token for ``path``, valid ``lifetime`` seconds from now."""
        uri = "%s/%s" % (self.endpoint, path.lstrip("/"))
        return make_sas_token(uri, self.key_name, self.key, int(time.time()) + lifetime)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Optional[Dict[str, str]] = None,
        auth: bool = True,
        timeout: float = 30.0,
    ) -> Tuple[int, "http.client.HTTPMessage", bytes]:
        """One HTTP request to the emulator; returns (status, headers, body)."""
        h = dict(headers or {})
        if auth and self.auth and not any(k.lower() == "authorization" for k in h):
            h["Authorization"] = self.sas_token("")
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                if self.cert_path:
                    self._conn = http.client.HTTPSConnection(
                        self.host, self.port, timeout=timeout, context=self.ssl_context()
                    )
                else:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            try:
                self._conn.request(method, path, body=body, headers=h)
                resp = self._conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._close_conn()
                return resp.status, resp.headers, data
            except (ConnectionError, http.client.HTTPException, BrokenPipeError):
                self._close_conn()
                # retry once, only when a kept-alive connection had gone stale
                if attempt or not reused:
                    raise
        raise AssertionError("unreachable")

    def admin(self, method: str, path: str, obj: Any = None) -> Any:
        body = json.dumps(obj).encode() if obj is not None else b""
        status, _, data = self.request(
            method, "/$admin/" + path.lstrip("/"), body, {"Content-Type": "application/json"}, auth=False
        )
        result = json.loads(data) if data else None
        if status >= 400 and not (method == "DELETE" and status == 404):
            raise EmulatorError("admin %s %s: %d %s" % (method, path, status, result))
        return result

    # ----- test controls ---------------------------------------------------------------------

    def clock(self) -> Dict[str, float]:
        return cast(Dict[str, float], self.admin("GET", "clock"))

    def advance(self, seconds: float) -> float:
        """Move the emulator clock forward; locks, TTLs and long polls follow. Returns new now."""
        return float(self.admin("POST", "clock/advance", {"seconds": seconds})["now"])

    def fault(self, **rule: Any) -> str:
        """Add a fault rule (operation=, entity=, status=, retry_after=, delay_ms=, drop=,
        probability=, count=, seed=, after=); returns its id."""
        return str(self.admin("POST", "faults", rule)["id"])

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def faults(self) -> List[Dict[str, Any]]:
        return cast(List[Dict[str, Any]], self.admin("GET", "faults")["faults"])

    def state(self) -> Dict[str, Any]:
        return cast(Dict[str, Any], self.admin("GET", "state"))

    def entity_state(self, path: str) -> Dict[str, Any]:
        return cast(Dict[str, Any], self.admin("GET", "entities/" + path))

    def messages(self, path: str) -> List[Dict[str, Any]]:
        return cast(List[Dict[str, Any]], self.entity_state(path)["messages"])

    def reset(self) -> None:
        self.admin("POST", "reset")

    def _put_entity(self, path: str, kind: str, opts: Dict[str, Any]) -> Dict[str, Any]:
        body = dict(opts)
        body["kind"] = kind
        return cast(Dict[str, Any], self.admin("PUT", "entities/" + path, body))

    def create_queue(self, name: str, **opts: Any) -> Dict[str, Any]:
        return self._put_entity(name, "queue", opts)

    def create_topic(self, name: str, **opts: Any) -> Dict[str, Any]:
        return self._put_entity(name, "topic", opts)

    def create_subscription(self, topic: str, name: str, **opts: Any) -> Dict[str, Any]:
        return self._put_entity("%s/subscriptions/%s" % (topic, name), "subscription", opts)

    def delete_entity(self, path: str) -> bool:
        status, _, _ = self.request("DELETE", "/$admin/entities/" + path, auth=False)
        return status == 200


try:
    import pytest
except ImportError:  # pragma: no cover - the handle works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def emulator() -> Iterator[Emulator]:
        """One emulator (SAS on, no entities) for the whole session."""
        emu = Emulator.start()
        try:
            yield emu
        finally:
            emu.stop()

    @pytest.fixture(scope="session")
    def tls_emulator() -> Iterator[Emulator]:
        """One emulator serving HTTPS with a self-signed certificate (``.cert_path``)."""
        emu = Emulator.start(tls=True)
        try:
            yield emu
        finally:
            emu.stop()

    @pytest.fixture
    def fresh_emulator(emulator: Emulator) -> Iterator[Emulator]:
        """The session emulator, emptied (entities kept) and with no faults."""
        emulator.reset()
        yield emulator

    @pytest.fixture
    def emulator_factory(tmp_path: Any) -> Iterator[Callable[..., Emulator]]:
        """Start extra emulators: ``emulator_factory("--queue", "q", auth=False, data_dir=...)``."""
        started: List[Emulator] = []

        def make(*args: str, auth: bool = True, data_dir: Optional[str] = None, tls: bool = False) -> Emulator:
            emu = Emulator.start(*args, auth=auth, data_dir=data_dir, tls=tls)
            started.append(emu)
            return emu

        yield make
        for emu in started:
            emu.stop()
