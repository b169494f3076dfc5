"""Bad input and abrupt clients never crash the emulator or corrupt state; HTTP details
(Expect: 100-continue, keep-alive, HTTP/1.0, TCP_NODELAY behaviour) are right."""

import socket
import time

import pytest

from conftest import SB, in_thread, raw_exchange


def fix(emu, data):
    return data.replace(b"HOSTPORT", b"%s:%d" % (emu.host.encode(), emu.port))


def raw(emu, data, read=True, timeout=5.0):
    return raw_exchange(emu, fix(emu, data), read=read, timeout=timeout)


def read_chunked_answer(s, closed_ok=True):
    """One chunked answer, up to its last chunk; or what came before the server closed
    (which fails the test unless closed_ok)."""
    resp = b""
    while b"\r\n0\r\n\r\n" not in resp:
        chunk = s.recv(4096)
        if not chunk:
            assert closed_ok, "connection closed"
            break
        resp += chunk
    return resp


def still_serving(emu, queue):
    sb = SB(emu)
    sb.send_ok(queue, b"ok")
    m = sb.receive_and_delete(queue)
    return m.status == 200 and m.body == b"ok"


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /x HTTP/9.9\r\n\r\n",
        b"POST /q/messages HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /q/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\r\n" * 1000,
    ],
)
def test_garbage_requests(fresh_emulator, queue, junk):
    raw(fresh_emulator, junk, timeout=2)
    assert still_serving(fresh_emulator, queue)


def test_oversized_header_is_rejected_and_server_survives(fresh_emulator, queue):
    req = (
        (b'POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nbig: "' % queue.encode())
        + b"a" * 200000
        + b'"\r\nContent-Length: 1\r\n\r\nx'
    )
    out = raw(fresh_emulator, req, timeout=3)
    assert out == b"" or out.split(b" ")[1][:1] == b"4"
    assert fresh_emulator.messages(queue) == []
    assert still_serving(fresh_emulator, queue)


def test_large_but_allowed_custom_property(sb, queue):
    value = '"%s"' % ("v" * 30000)
    sb.send_ok(queue, b"x", headers={"big": value})
    assert sb.peek_lock(queue).headers["big"] == value


def test_disconnect_mid_body_stores_nothing(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    raw(
        fresh_emulator,
        b"POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nAuthorization: %s\r\nContent-Length: 1000\r\n\r\npartial"
        % (queue.encode(), tok),
        read=False,
    )
    time.sleep(0.2)
    assert fresh_emulator.messages(queue) == []
    assert still_serving(fresh_emulator, queue)


def test_abandoned_long_poll_does_not_swallow_messages(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    s = socket.create_connection((fresh_emulator.host, fresh_emulator.port))
    s.sendall(
        fix(
            fresh_emulator,
            b"POST /%s/messages/head?timeout=60 HTTP/1.1\r\nHost: HOSTPORT\r\n"
            b"Authorization: %s\r\nContent-Length: 0\r\n\r\n" % (queue.encode(), tok),
        )
    )
    deadline = time.monotonic() + 5
    while fresh_emulator.state()["counters"].get("requests.peek_lock", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    s.close()  # the client goes away while waiting
    other = fresh_emulator.client()
    t, out = in_thread(lambda: SB(other).peek_lock(queue, timeout=60))
    deadline = time.monotonic() + 5
    while fresh_emulator.state()["counters"].get("requests.peek_lock", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    SB(fresh_emulator).send_ok(queue, b"for the live one")
    t.join(20)
    assert not t.is_alive() and out["value"].status == 201 and out["value"].body == b"for the live one"
    assert fresh_emulator.messages(queue)[0]["delivery_count"] == 1


def test_expect_100_continue(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    s = socket.create_connection((fresh_emulator.host, fresh_emulator.port), timeout=5)
    s.sendall(
        fix(
            fresh_emulator,
            b"POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nAuthorization: %s\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n" % (queue.encode(), tok),
        )
    )
    interim = s.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    s.sendall(b"hello")
    resp = read_chunked_answer(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 201")
    assert SB(fresh_emulator).receive_and_delete(queue).body == b"hello"


def test_keep_alive_many_requests_one_connection(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    s = socket.create_connection((fresh_emulator.host, fresh_emulator.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = b"POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nAuthorization: %s\r\nContent-Length: 1\r\n\r\nx" % (
        queue.encode(),
        tok,
    )
    req = fix(fresh_emulator, req)
    for _ in range(20):
        s.sendall(req)
        resp = read_chunked_answer(s, closed_ok=False)
        assert resp.startswith(b"HTTP/1.1 201") and b"Connection: close" not in resp
    s.close()
    assert len(fresh_emulator.messages(queue)) == 20


def test_http_10_request(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    out = raw(
        fresh_emulator,
        b"POST /%s/messages HTTP/1.0\r\nHost: HOSTPORT\r\nAuthorization: %s\r\nContent-Length: 2\r\n\r\nhi"
        % (queue.encode(), tok),
    )
    assert out.startswith(b"HTTP/1.0 201") or out.startswith(b"HTTP/1.1 201")
    assert SB(fresh_emulator).receive_and_delete(queue).body == b"hi"


def test_unsupported_methods_and_paths(fresh_emulator, queue):
    emu = fresh_emulator
    assert emu.request("PATCH", "/%s/messages" % queue)[0] in (400, 405)
    assert emu.request("GET", "/%s/messages/head" % queue)[0] in (400, 405)
    assert emu.request("POST", "/%s/messages/1/2/3" % queue)[0] in (400, 405)
    assert emu.request("GET", "/")[0] == 404
    assert still_serving(emu, queue)


def test_non_utf8_and_odd_bytes_in_values(fresh_emulator, queue):
    tok = fresh_emulator.sas_token().encode()
    out = raw(
        fresh_emulator,
        b'POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nAuthorization: %s\r\nodd: "\xff\xfe"\r\n'
        b'BrokerProperties: {"Label": "\xc3\xa9t\xc3\xa9"}\r\nContent-Length: 1\r\n\r\nx' % (queue.encode(), tok),
    )
    assert out.split(b" ")[1] in (b"201", b"400")
    sb = SB(fresh_emulator)
    while sb.receive_and_delete(queue).status == 200:
        pass
    assert still_serving(fresh_emulator, queue)


def test_many_concurrent_clients(fresh_emulator, queue):
    def worker(n):
        c = SB(fresh_emulator.client())
        for i in range(20):
            c.send_ok(queue, b"%d-%d" % (n, i))
        got = 0
        for _ in range(20):
            m = c.peek_lock(queue, timeout=5)
            if m.status == 201:
                assert c.complete(m) == 200
                got += 1
        return got

    threads = [in_thread(worker, n) for n in range(8)]
    total = 0
    for t, out in threads:
        t.join(60)
        assert "error" not in out, out.get("error")
        total += out["value"]
    assert total == 160
    st = fresh_emulator.entity_state(queue)
    assert st["messages"] == [] and sum(st["completed"].values()) == 160


def test_sigterm_with_pending_long_poll_stops_cleanly(emulator_factory):
    emu = emulator_factory("--queue", "q")
    other = emu.client()
    t, out = in_thread(lambda: SB(other).peek_lock("q", timeout=120))
    deadline = time.monotonic() + 10
    while emu.state()["counters"].get("requests.peek_lock", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.stop(timeout=20) == 0  # SIGTERM honoured without waiting for the poll
    t.join(10)
    assert out["value"].status == 503 and out["value"].headers["Retry-After"] == "1"


def test_expect_100_continue_refused_before_body_when_unauthorized(fresh_emulator, queue):
    s = socket.create_connection((fresh_emulator.host, fresh_emulator.port), timeout=5)
    s.sendall(
        fix(
            fresh_emulator,
            b"POST /%s/messages HTTP/1.1\r\nHost: HOSTPORT\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n" % queue.encode(),
        )
    )
    resp = read_chunked_answer(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 401")  # final answer, no "100 Continue" first
    assert fresh_emulator.messages(queue) == []


def test_client_gone_before_a_delayed_answer_is_not_an_error(emulator_factory):
    """A client that times out during an injected delay leaves no traceback in the log."""
    emu = emulator_factory("--queue", "q", auth=False)
    emu.fault(operation="send", delay_ms=200, count=1)
    raw(emu, b"POST /q/messages HTTP/1.1\r\nHost: HOSTPORT\r\nContent-Length: 1\r\n\r\nx", read=False)
    # a 1 s long poll answered after the delayed answer was due (and failed to be written)
    assert SB(emu).peek_lock("q", timeout=1).status in (201, 204)
    assert emu.stop(timeout=20) == 0
    log = emu.stderr_text()
    assert "Traceback" not in log and "Cannot write" not in log, log[-2000:]
