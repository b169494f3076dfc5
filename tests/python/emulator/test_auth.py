"""SAS checking (protocol.md section 4): the signing conventions of the real clients pass,
everything else is 401 with an <Error> body that shows no secret."""

import base64
import hashlib
import hmac
import time
import urllib.parse

import pytest

from peeklock.emulator.sas import SasValidator, AuthError, make_token, sign


def _sig(sr, se, key):
    return base64.b64encode(hmac.new(key.encode(), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256).digest()).decode()


def test_published_vector():
    assert (
        urllib.parse.quote(sign("audience", 1578099723, "key"), safe="")
        == "8UM0iIfFCfeBSqxSdBMW8pUbhAm7mnjSUaIZTZx8V0g%3D"
    )


@pytest.mark.parametrize(
    "sr,expected",
    [
        ("https%3A%2F%2Fcontoso.servicebus.windows.net%2F", "e7iRjghEhQr1bicFUtjwOr%2BfYU7BMGFyx04SJuOraGA%3D"),
        ("https%3a%2f%2fcontoso.servicebus.windows.net%2f", "cFbJuErGZiTbiVnfEe39QbiTLW0xxAsmAim%2BICuH8%2FU%3D"),
        (
            "https%3a%2f%2fcontoso.servicebus.windows.net%3a443%2fmyqueue%2fmessages%2fhead%3ftimeout%3d60",
            "vPrpgw1sT%2FpFQ9JbQSOSwgxH9oaDR%2Bk9Z8Z7%2BjEImFo%3D",
        ),
    ],
)
def test_protocol_vectors_key_used_as_text(sr, expected):
    key = "SGVsbG9Xb3JsZEtleVZhbHVlMTIzNDU2Nzg5MGFiY2Q="
    assert urllib.parse.quote(sign(sr, 1700000000, key), safe="") == expected


def test_validator_scope_rules():
    v = SasValidator({"k": "secret"})
    far = int(time.time()) + 600
    tok = make_token("https://ns.example:443/orders", "k", "secret", far)
    v.check(tok, "ns.example", "/orders/messages/head?timeout=5")
    v.check(tok, "NS.example:443", "/Orders/Messages")
    with pytest.raises(AuthError):
        v.check(tok, "ns.example", "/orders2/messages")  # prefix only on a path boundary
    with pytest.raises(AuthError):
        v.check(tok, "other.example", "/orders/messages")
    ns_tok = make_token("sb://ns.example/", "k", "secret", far)
    v.check(ns_tok, "ns.example", "/anything/messages")


def test_validator_scope_of_a_percent_encoded_name():
    # The request path arrives encoded (/caf%C3%A9 q/...) and is checked decoded; a token may
    # sign the name decoded or as its encoded URL (the C core does the latter): both cover it.
    v = SasValidator({"k": "secret"})
    far = int(time.time()) + 600
    for uri in ("http://ns.example/caf\u00e9 q", "http://ns.example/caf%C3%A9%20q"):
        v.check(make_token(uri, "k", "secret", far), "ns.example", "/caf\u00e9 q/messages/head")
        with pytest.raises(AuthError):
            v.check(make_token(uri, "k", "secret", far), "ns.example", "/cafe q/messages/head")


def _send(emu, token, path="/authq/messages", body=b"x"):
    return emu.request("POST", path, body, {"Authorization": token} if token is not None else {}, auth=False)


@pytest.fixture
def authq(fresh_emulator):
    fresh_emulator.create_queue("authq")
    return fresh_emulator


def test_python_legacy_style_token(authq):
    emu = authq
    se = int(time.time()) + 300
    uri = "http://%s:%d/authq/messages" % (emu.host, emu.port)
    sr = urllib.parse.quote(uri, safe="").lower()
    tok = "SharedAccessSignature sig=%s&se=%d&skn=%s&sr=%s" % (
        urllib.parse.quote(_sig(sr, se, emu.key)),
        se,
        emu.key_name,
        sr,
    )
    assert _send(emu, tok)[0] == 201


def test_node_style_token_signs_query(authq):
    emu = authq
    se = int(time.time()) + 300
    url = ("http://%s:%d/authq/messages/head?timeout=0&api-version=2013-07" % (emu.host, emu.port)).lower()
    sr = urllib.parse.quote(url, safe="-_.!~*'()").lower()
    tok = "SharedAccessSignature sig=%s&se=%d&skn=%s&sr=%s" % (
        urllib.parse.quote(_sig(sr, se, emu.key), safe=""),
        se,
        emu.key_name,
        sr,
    )
    status, _, _ = emu.request(
        "POST", "/authq/messages/head?timeout=0&api-version=2013-07", b"", {"Authorization": tok}, auth=False
    )
    assert status == 204


def test_dotnet_style_namespace_token_uppercase_escapes(authq):
    emu = authq
    se = int(time.time()) + 1800
    sr = urllib.parse.quote("http://%s:%d/" % (emu.host, emu.port), safe="")
    assert "%3A" in sr
    tok = "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (
        sr,
        urllib.parse.quote(_sig(sr, se, emu.key), safe=""),
        se,
        emu.key_name,
    )
    assert _send(emu, tok)[0] == 201


@pytest.mark.parametrize(
    "case",
    ["missing", "expired", "wrong-key", "unknown-name", "other-entity", "tampered-sr", "wrap", "garbage", "no-sig"],
)
def test_bad_tokens_are_401_without_secrets(authq, case):
    emu = authq
    far = int(time.time()) + 600
    base = "http://%s:%d/" % (emu.host, emu.port)
    tokens = {
        "missing": None,
        "expired": make_token(base, emu.key_name, emu.key, int(time.time()) - 5),
        "wrong-key": make_token(base, emu.key_name, "not-the-key", far),
        "unknown-name": make_token(base, "SomeoneElse", emu.key, far),
        "other-entity": make_token(base + "otherq", emu.key_name, emu.key, far),
        "tampered-sr": make_token(base + "otherq", emu.key_name, emu.key, far).replace("otherq", "authq"),
        "wrap": 'WRAP access_token="net.windows.servicebus.action=Send&ExpiresOn=1"',
        "garbage": "SharedAccessSignature %%%",
        "no-sig": "SharedAccessSignature sr=x&se=%d&skn=%s" % (far, emu.key_name),
    }
    tok = tokens[case]
    status, headers, body = _send(emu, tok)
    assert status == 401
    assert body.startswith(b"<Error><Code>401</Code>")
    assert headers["Content-Type"] == "application/xml; charset=utf-8"
    assert emu.key.encode() not in body
    if tok and "sig=" in tok:
        sig = tok.split("sig=")[1].split("&")[0]
        assert sig.encode() not in body and urllib.parse.unquote(sig).encode() not in body
    assert emu.messages("authq") == []


def test_clock_advance_does_not_expire_client_tokens(authq):
    authq.advance(3600)
    assert (
        _send(
            authq,
            make_token("http://%s:%d/" % (authq.host, authq.port), authq.key_name, authq.key, int(time.time()) + 300),
        )[0]
        == 201
    )


def test_custom_key_and_no_auth(emulator_factory):
    emu = emulator_factory("--queue", "q", "--key-name", "Sender", "--key", "s3cr3t+/=")
    assert emu.key_name == "Sender" and emu.key == "s3cr3t+/="
    assert emu.request("POST", "/q/messages", b"x")[0] == 201
    open_emu = emulator_factory("--queue", "q", auth=False)
    assert open_emu.request("POST", "/q/messages", b"x", auth=False)[0] == 201


def test_admin_needs_no_token(authq):
    status, _, _ = authq.request("GET", "/$admin/state", auth=False)
    assert status == 200


def test_extra_keys(emulator_factory):
    emu = emulator_factory("--queue", "q", "--extra-key", "Listen=listen-key")
    base = "http://%s:%d/" % (emu.host, emu.port)
    far = int(time.time()) + 600
    assert _send(emu, make_token(base, "Listen", "listen-key", far), "/q/messages")[0] == 201
    assert _send(emu, make_token(base, emu.key_name, emu.key, far), "/q/messages")[0] == 201
    assert _send(emu, make_token(base, "Listen", emu.key, far), "/q/messages")[0] == 401


def test_lock_tokens_never_reach_the_log(emulator_factory):
    """A settle URL carries the lock token; with debug logging on, a token whose scope does not
    cover it is refused and logged without the lock token."""
    from conftest import SB

    emu = emulator_factory("--queue", "q", "--queue", "other", "--log-level", "DEBUG")
    sb = SB(emu)
    sb.send_ok("q", b"x")
    m = sb.peek_lock("q")
    token = m.bp["LockToken"]
    wrong_scope = {"Authorization": emu.sas_token("other")}
    assert emu.request("DELETE", m.lock_path, headers=wrong_scope)[0] == 401
    assert sb.complete(m) == 200
    assert emu.stop(timeout=20) == 0
    log = emu.stderr_text()
    assert "does not cover" in log  # the refusal was logged...
    assert token not in log  # ...without the lock token
    assert "<lock-token>" in log


def test_loggable_path():
    from peeklock.emulator.sas import loggable_path

    tok = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert loggable_path("/q/messages/3/%s?api-version=2013-07" % tok) == "/q/messages/3/<lock-token>"
    assert loggable_path("/t/Subscriptions/s/Messages/12/%s" % tok) == "/t/Subscriptions/s/Messages/12/<lock-token>"
    assert loggable_path("/q/messages/head?timeout=5") == "/q/messages/head"
