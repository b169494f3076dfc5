"""Attacks on the emulator: a crafted Host must not stretch a SAS scope, the clock cannot be moved
past representable dates (and a saved bad offset is dropped), request bodies are refused as soon
as they pass their limit, malformed Authorization headers are neither echoed nor logged, a
custom property with thousands of digits is a 400."""

import json
import os
import socket
import sqlite3
import time

from conftest import SB, raw_exchange
from peeklock.emulator.sas import make_token


def raw_request(emu, head: bytes, body: bytes = b"", timeout=10.0) -> bytes:
    return raw_exchange(emu, head + body, timeout=timeout)


def test_host_header_cannot_stretch_a_token_scope(emulator_factory):
    emu = emulator_factory("--queue", "q1", "--queue", "q2")
    q1_token = make_token("http://%s:%d/q1" % (emu.host, emu.port), emu.key_name, emu.key, int(time.time()) + 600)
    ok = raw_request(
        emu,
        b"POST /q1/messages HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: %s\r\n"
        b"Content-Length: 1\r\nConnection: close\r\n\r\nx" % (emu.host.encode(), emu.port, q1_token.encode()),
    )
    assert ok.startswith(b"HTTP/1.1 201"), ok[:200]
    for host in (
        b"%s:%d/q1" % (emu.host.encode(), emu.port),
        b"%s:%d/q1?" % (emu.host.encode(), emu.port),
        b"%s:%d/q1/../q2" % (emu.host.encode(), emu.port),
    ):
        got = raw_request(
            emu,
            b"POST /q2/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n"
            b"Content-Length: 1\r\nConnection: close\r\n\r\nx" % (host, q1_token.encode()),
        )
        assert got.startswith(b"HTTP/1.1 400"), got[:200]
    assert emu.messages("q2") == [] and len(emu.messages("q1")) == 1


def test_clock_refuses_unrepresentable_offsets(emulator_factory, tmp_path):
    emu = emulator_factory("--queue", "q", data_dir=str(tmp_path / "d"))
    sb = SB(emu)
    before = emu.clock()
    for seconds in (1e308, 1e13, 9e12):
        status, _, data = emu.request(
            "POST",
            "/$admin/clock/advance",
            json.dumps({"seconds": seconds}).encode(),
            {"Content-Type": "application/json"},
            auth=False,
        )
        assert status == 400 and b"can represent" in data, data
    assert emu.clock()["offset"] == before["offset"]
    emu.advance(86400 * 365 * 100)  # a century is fine
    sb.send_ok("q", b"still works")
    assert sb.peek_lock("q").status == 201
    assert emu.request("GET", "/$Resources/Queues")[0] == 200
    emu.stop()
    # an offset saved before the refusal existed is dropped at start-up, not kept forever
    db = sqlite3.connect(os.path.join(str(tmp_path / "d"), "peeklock-emulator.sqlite3"))
    db.execute("INSERT OR REPLACE INTO meta VALUES('clock_offset', ?)", (json.dumps(1e308),))
    db.commit()
    db.close()
    emu.restart()
    assert emu.clock()["offset"] < 1e12
    sb.send_ok("q", b"after restart")
    assert emu.request("GET", "/q")[0] == 200
    emu.reset()
    sb.send_ok("q", b"after reset")


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(fresh_emulator, queue):
    emu = fresh_emulator
    token = emu.sas_token("").encode()
    # 60 MB announced, 10 bytes sent: the answer comes at once and the connection is closed
    got = raw_request(
        emu,
        b"POST /%s/messages HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: %s\r\n"
        b"Content-Length: 62914560\r\n\r\n" % (queue.encode(), emu.host.encode(), emu.port, token),
        b"0123456789",
        timeout=10,
    )
    assert got.startswith(b"HTTP/1.1 403"), got[:200]
    assert b"exceeds the maximum message size" in got


def test_streamed_body_is_refused_as_soon_as_it_passes_the_limit(fresh_emulator, queue):
    """A chunked send is answered 403 once it passes the entity's 256 KB, while the client still
    has most of its 60 MB to send (it was buffered whole before)."""
    emu = fresh_emulator
    s = socket.create_connection((emu.host, emu.port), timeout=10)
    try:
        s.sendall(
            b"POST /%s/messages HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            % (queue.encode(), emu.host.encode(), emu.port, emu.sas_token("").encode())
        )
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"a" * 64 * 1024)
        for _ in range(5):  # 320 KB, then wait for the answer
            s.sendall(piece)
        answer = b""
        while b"</Error>" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 403") and b"exceeds the maximum message size" in answer, answer[:300]
    finally:
        s.close()
    assert emu.messages(queue) == []
    assert SB(emu).send_ok(queue, b"ok")


def test_batch_is_limited_like_one_message(fresh_emulator, queue):
    emu = fresh_emulator
    item = {"Body": "x" * 100 * 1024}
    batch_ct = {"Content-Type": "application/vnd.microsoft.servicebus.json"}
    status, _, data = emu.request("POST", "/%s/messages" % queue, json.dumps([item] * 4).encode(), batch_ct)
    assert status == 403 and b"size of the batch" in data, data
    assert emu.messages(queue) == []
    status, _, data = emu.request("POST", "/%s/messages" % queue, json.dumps([item] * 2).encode(), batch_ct)
    assert status == 201, data
    assert len(emu.messages(queue)) == 2


def test_malformed_authorization_is_neither_echoed_nor_logged(emulator_factory):
    emu = emulator_factory("--queue", "q", "--log-level", "DEBUG")
    secrets = []
    for n, junk in enumerate([b"\x01", b"\x7f", b"\x00", b" \r\n bad", b"\xff\xfe"]):
        secret = b"SECRETSIG%d" % n
        secrets.append(secret)
        got = raw_request(
            emu,
            b"POST /q/messages HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: SharedAccessSignature "
            b"sr=x&sig=%s%s&se=1&skn=k\r\nContent-Length: 1\r\n\r\nx" % (emu.host.encode(), emu.port, secret, junk),
        )
        assert got.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400", b"HTTP/1.1 401")), got[:200]
        assert secret not in got, got
    assert SB(emu).send_ok("q")
    assert emu.stop(timeout=20) == 0
    log = emu.stderr_text()
    assert "refused a request that is not valid HTTP" in log
    assert not [s for s in secrets if s.decode() in log], log[-2000:]


def test_custom_property_with_thousands_of_digits_is_a_400(sb, queue):
    for value in ("9" * 5000, "-" + "1" * 4400, "1" * 3000 + ".5", "1e" + "9" * 4000):
        status, _, data = sb.send(queue, b"x", headers={"big": value})
        assert status == 400 and b"'big' is invalid" in data, (status, data[:200])
    assert sb.send(queue, b"x", headers={"fine": "1" * 300})[0] == 201


def test_expect_continue_refused_at_the_entity_limit(fresh_emulator, queue):
    """A send announcing more than the entity takes gets its 403 instead of 100 Continue."""
    emu = fresh_emulator
    got = raw_request(
        emu,
        b"POST /%s/messages HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: %s\r\n"
        b"Expect: 100-continue\r\nContent-Length: 300000\r\n\r\n"
        % (queue.encode(), emu.host.encode(), emu.port, emu.sas_token("").encode()),
    )
    assert got.startswith(b"HTTP/1.1 403") and b"100 Continue" not in got, got[:200]
    assert b"exceeds the maximum message size" in got
