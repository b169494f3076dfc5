"""HTTPS serving: --tls makes (and on a data dir keeps) a certificate, --cert/--cert-key serve a
given one, Location and Atom ids say https, the ready line drops UseDevelopmentEmulator."""

import os
import ssl
import subprocess
import sys

import pytest

from conftest import SB
from peeklock.testing import CERT_PREFIX, Emulator

pytest.importorskip("cryptography", reason="--tls needs the cryptography package (scripts/deps/emulator.pip)")


def test_tls_emulator_fixture_serves_https(tls_emulator):
    emu = tls_emulator
    emu.reset()
    assert emu.endpoint.startswith("https://") and os.path.isfile(emu.cert_path)
    emu.create_queue("tlsq")
    sb = SB(emu)
    sb.send_ok("tlsq", b"secret payload")
    m = sb.peek_lock("tlsq")
    assert m.location.startswith("https://%s:%d/tlsq/messages/1/" % (emu.host, emu.port))
    assert sb.complete(m) == 200
    _, _, data = emu.request("GET", "/tlsq")
    assert b"<id>https://" in data
    # plain http to the TLS port gets no HTTP answer (the handshake fails, the connection closes)
    import http.client

    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/$admin/clock")
        conn.getresponse()
    conn.close()


def test_tls_on_a_data_dir_keeps_its_certificate(emulator_factory, tmp_path):
    data = str(tmp_path / "d")
    emu = emulator_factory("--queue", "q", "--tls", data_dir=data)
    cert = os.path.join(data, "tls", "peeklock-emulator-cert.pem")
    assert emu.cert_path == cert
    first = open(cert).read()
    SB(emu).send_ok("q", b"kept")
    emu.restart()
    assert emu.cert_path == cert and open(cert).read() == first
    assert SB(emu).receive_and_delete("q").body == b"kept"
    ctx = ssl.create_default_context(cafile=cert)
    assert ctx.cert_store_stats()["x509_ca"] == 1  # the file is a CA a client can trust


def test_cert_and_key_given(emulator_factory, tmp_path):
    from peeklock.emulator.tls import make_self_signed

    cert, key = make_self_signed(str(tmp_path / "mine"), ["127.0.0.1"])
    emu = emulator_factory("--queue", "q", "--cert", cert, "--cert-key", key)
    assert emu.cert_path == os.path.abspath(cert) and emu.endpoint.startswith("https://")
    assert SB(emu).send_ok("q")
    # the folder that holds the peeklock package under test (python/ in a source tree)
    env = dict(os.environ, PYTHONPATH=sys.modules["peeklock.testing"]._PKG_PARENT)
    r = subprocess.run(
        [sys.executable, "-m", "peeklock.emulator", "--cert", cert], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 2 and "--cert and --cert-key go together" in r.stderr and r.stdout == ""
    r = subprocess.run(
        [sys.executable, "-m", "peeklock.emulator", "--cert", key, "--cert-key", key],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2 and "cannot use the certificate" in r.stderr


def test_certificate_line_comes_before_the_ready_line(tmp_path):
    with Emulator.start("--tls", "--tls-dir", str(tmp_path / "t")) as emu:
        lines = emu.stderr_text().splitlines()
        assert [ln for ln in lines if ln.startswith(CERT_PREFIX)] == [
            CERT_PREFIX + os.path.join(str(tmp_path / "t"), "peeklock-emulator-cert.pem")
        ]
        assert "UseDevelopmentEmulator" not in emu.connection_string
