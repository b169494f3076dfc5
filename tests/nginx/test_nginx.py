"""nginx + lua-nginx-module + peeklock.resty against the emulator.

Starts the emulator and nginx (own prefix, own config, free port on 127.0.0.1),
checks that a location peek-locks, keeps a 5 s lock across several lock durations
through renewal and completes exactly once; that a second location answers promptly
while a request long-polls (the worker is not blocked); abandon, handler failure and
empty receives. Tears everything down. Prints 'N passed, N failed'.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def faulted(emu, **rule):
    """The emulator's fault rule (operation=, entity=, status=, ...) for the block; every
    rule is cleared after it, however the block ends."""
    emu.fault(**rule)
    try:
        yield
    finally:
        emu.clear_faults()


class Nginx:
    def __init__(self, root, build, conn, template="tests/nginx/nginx.conf.in", extra_vars=None, extra_env=None):
        self.prefix = tempfile.mkdtemp(prefix="peeklock-nginx-")
        for d in ("logs", "tmp", "conf"):
            os.makedirs(os.path.join(self.prefix, d))
        self.port = free_port()
        with open(os.path.join(root, template)) as f:
            conf = f.read()
        for k, v in {
            "@PREFIX@": self.prefix,
            "@ROOT@": root,
            "@BUILD@": build,
            "@PORT@": str(self.port),
            **(extra_vars or {}),
        }.items():
            conf = conf.replace(k, v)
        self.conf = os.path.join(self.prefix, "conf", "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=conn, **(extra_env or {}))
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.prefix, "-c", self.conf], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + self.proc.stderr.read().decode() + self.log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("nginx did not listen")

    def get(self, path, http_timeout=30, **args):
        url = f"http://127.0.0.1:{self.port}{path}"
        if args:
            url += "?" + urllib.parse.urlencode(args)
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=http_timeout) as r:
            body = r.read().decode()
        dt = time.monotonic() - t0
        try:
            return json.loads(body), dt
        except ValueError:
            return body, dt

    def log(self):
        try:
            with open(os.path.join(self.prefix, "logs", "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def scrape(ngx):
    """The samples of ngx's /metrics, read by prometheus_client's parser (which checks the
    text format): {(sample name, frozenset of (label, value))): value}, and the families'
    types by name."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{ngx.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        text = r.read().decode()
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for smp in fam.samples:
            samples[(smp.name, frozenset(smp.labels.items()))] = smp.value
    return samples, types


def total(samples, name, **labels):
    """The sum of name's samples whose labels include labels (a label given as None: absent)."""
    out = 0.0
    for (n, lbl), v in samples.items():
        d = dict(lbl)
        if n == name and all(d.get(k) == v2 for k, v2 in labels.items()):
            out += v
    return out


def log_entries(log):
    """The error log's entries: one per line starting with a date (tracebacks span lines)."""
    entries = []
    for line in log.splitlines():
        if re.match(r"\d{4}/\d\d/\d\d ", line) or not entries:
            entries.append(line)
        else:
            entries[-1] += "\n" + line
    return entries


def ip_named_certificate(directory):
    """A self-signed certificate (its own CA) for 127.0.0.1 named both as an IP address and as
    a DNS name: nginx checks the certificate's host name with X509_check_host, which reads DNS
    names only, and the test has no name server to give the emulator a real host name."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("127.0.0.1"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# A Python process that finishes a job whose lock handle it reads on stdin: attaches it with
# the installed peeklock package, renews it once, completes it, prints the MessageId.
FINISH_IN_PYTHON = """
import sys, peeklock
client = peeklock.Client.from_connection_string(sys.argv[1])
msg = client.attach(sys.stdin.readline().strip())
msg.renew_lock()
msg.complete()
print(msg.message_id, flush=True)
client.close()
"""


def python_env():
    """The environment for a Python child that imports the installed package (not the source tree)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    opts = ap.parse_args()
    sys.path.insert(0, os.path.join(opts.root, "python"))  # the source tree's emulator launcher
    from peeklock.testing import Emulator

    emu = Emulator.start("--queue", "orders")
    tls_dir = tempfile.mkdtemp(prefix="peeklock-nginx-tls-")
    os.chmod(tls_dir, 0o755)  # nginx's workers (another user when started as root) read the certificate
    cert_path, key_path = ip_named_certificate(tls_dir)
    # HTTPS with that self-signed certificate, trusted through lua_ssl_trusted_certificate
    tls_emu = Emulator.start("--cert", cert_path, "--cert-key", key_path)
    ngx = None
    results = []

    only = os.environ.get("PEEKLOCK_NGINX_ONLY")  # a part of the names of the checks to run

    def check(name, fn):
        if only and only not in name:
            return
        try:
            fn()
            results.append((name, True))
            print(f"ok   {name}", flush=True)
        except Exception:
            results.append((name, False))
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            if ngx:
                print(ngx.log()[-3000:])

    try:
        emu.admin("PUT", "entities/slow", {"kind": "queue", "lock_duration": 5})
        emu.admin("PUT", "entities/quick", {"kind": "queue", "lock_duration": 5})
        emu.admin("PUT", "entities/counted", {"kind": "queue"})
        emu.admin("PUT", "entities/perreq", {"kind": "queue"})
        tls_emu.admin("PUT", "entities/tlsq", {"kind": "queue", "lock_duration": 5})
        ngx = Nginx(
            opts.root,
            opts.build,
            emu.connection_string,
            extra_vars={"@CA_FILE@": cert_path},
            extra_env={"PEEKLOCK_TLS_CONNECTION_STRING": tls_emu.connection_string},
        )

        def ping_answers():
            body, _ = ngx.get("/ping")
            assert body.strip() == "pong", body

        def send_and_peek():
            r, _ = ngx.get("/send", entity="quick", body="hello", id="q-1")
            assert r["ok"], r
            r, _ = ngx.get("/peek", entity="quick", timeout=5)
            assert r["ok"] and r["body"] == "hello" and r["delivery_count"] == 1, r
            assert r["state"] == "settled", r
            r, _ = ngx.get("/peek", entity="quick", timeout=5, complete=1)
            assert r["ok"] and r["delivery_count"] == 2, r
            r, _ = ngx.get("/peek", entity="quick", timeout=0)
            assert r["ok"] is False and r["empty"] is True, r
            assert emu.entity_state("quick")["completed"].get("q-1") == 1

        def batch_and_receive_and_delete():
            r, _ = ngx.get("/batch", entity="quick")
            assert r["ok"] and r["bodies"] == "one,two" and r["label"] == "L2" and r["n"] == 2, r
            assert r["settle_code"] == "state", r
            assert not emu.entity_state("quick")["messages"]

        def retries_over_cosockets():
            emu.admin("PUT", "entities/flaky", {"kind": "queue", "lock_duration": 30})
            with faulted(emu, operation="send", entity="flaky", status=503, retry_after=0, count=2):
                r, _ = ngx.get("/send", entity="flaky", body="after two 503s", id="f-1")
            assert r["ok"], r
            assert len(emu.entity_state("flaky")["messages"]) == 1
            with faulted(emu, operation="complete", entity="flaky", drop=True, count=1):
                r, _ = ngx.get("/peek", entity="flaky", timeout=5, complete=1)
            # the dropped answer is retried: completed, or honestly reported as unknown
            assert r["ok"] or r.get("err_code") == "unknown_outcome", r
            assert emu.entity_state("flaky")["completed"].get("f-1") == 1
            with faulted(emu, operation="peek_lock", entity="flaky", status=503, retry_after=0, count=10):
                r, _ = ngx.get("/peek", entity="flaky", timeout=0)
            assert r["ok"] is False and r["err_code"] == "throttled" and r["err_status"] == 503, r

        def requests(op):
            return emu.admin("GET", "state")["counters"].get("requests." + op, 0)

        def receive_and_delete_500_after_delete_is_reported_not_retried():
            emu.admin("PUT", "entities/rd", {"kind": "queue", "lock_duration": 30})
            r, _ = ngx.get("/send", entity="rd", body="only once", id="rd-1")
            assert r["ok"], r
            before = requests("receive_and_delete")
            # the server deletes the message, then answers 500
            with faulted(emu, operation="receive_and_delete", entity="rd", status=500, after=True, count=1):
                r, _ = ngx.get("/rd", entity="rd", timeout=0)
            # the caller is told the outcome is unknown (not a silent "nothing there" from a
            # retry, nor a plain server error: a message may have been removed) ...
            assert r["ok"] is False and r["empty"] is False, r
            assert r["err_code"] == "unknown_outcome" and r["err_status"] == 500, r
            # ... and the message was deleted exactly once, by the one request that went out
            assert requests("receive_and_delete") - before == 1
            assert not emu.entity_state("rd")["messages"], emu.entity_state("rd")

        def send_500_is_not_retried_503_is():
            emu.admin("PUT", "entities/sq", {"kind": "queue", "lock_duration": 30})
            before = requests("send")
            with faulted(emu, operation="send", entity="sq", status=500, after=True, count=1):
                r, _ = ngx.get("/send", entity="sq", body="enqueued, then 500", id="sq-1")
            assert r["ok"] is False and r["err_code"] == "unknown_outcome" and r["err_status"] == 500, r
            assert requests("send") - before == 1
            assert len(emu.entity_state("sq")["messages"]) == 1, emu.entity_state("sq")  # no duplicate
            # send_batch: the same
            before = requests("send")
            with faulted(emu, operation="send", entity="sq", status=500, after=True, count=1):
                r, _ = ngx.get("/batch", entity="sq")
            assert r["ok"] is False and r["step"] == "send_batch" and r["err_status"] == 500, r
            assert r["err_code"] == "unknown_outcome", r
            assert requests("send") - before == 1
            assert len(emu.entity_state("sq")["messages"]) == 3, emu.entity_state("sq")
            # a 503 (throttled, not applied) is retried
            before = requests("send")
            with faulted(emu, operation="send", entity="sq", status=503, retry_after=0, count=1):
                r, _ = ngx.get("/send", entity="sq", body="after a 503", id="sq-2")
            assert r["ok"], r
            assert requests("send") - before == 2
            ids = [m["message_id"] for m in emu.entity_state("sq")["messages"]]
            assert ids.count("sq-2") == 1, ids
            # a 500 on a complete (idempotent on its lock) is retried
            emu.admin("PUT", "entities/sqc", {"kind": "queue", "lock_duration": 30})
            r, _ = ngx.get("/send", entity="sqc", body="complete after a 500", id="sq-3")
            assert r["ok"], r
            with faulted(emu, operation="complete", entity="sqc", status=500, count=1):
                r, _ = ngx.get("/race", entity="sqc", ops="complete")
            assert r["r1_ok"], r
            assert emu.entity_state("sqc")["completed"].get("sq-3") == 1
            # past max_retries (3), a complete keeps trying while its lock is valid
            r, _ = ngx.get("/send", entity="sqc", body="complete after five 503s", id="sq-4")
            assert r["ok"], r
            with faulted(emu, operation="complete", entity="sqc", status=503, retry_after=0, count=5):
                r, _ = ngx.get("/race", entity="sqc", ops="complete")
            assert r["r1_ok"], r
            assert emu.entity_state("sqc")["completed"].get("sq-4") == 1

        def two_light_threads_settle_once():
            emu.admin("PUT", "entities/race", {"kind": "queue", "lock_duration": 30})
            for ops, mid in (("complete,complete", "r-1"), ("complete,abandon", "r-2")):
                r, _ = ngx.get("/send", entity="race", body="settle me once", id=mid)
                assert r["ok"], r
                completes, unlocks = requests("complete"), requests("unlock")
                r, _ = ngx.get("/race", entity="race", ops=ops, again=1)
                assert r["ok"] and r["id"] == mid, r
                assert r["r1_ok"] is True, r
                assert r["state1"] == "settling", r  # fenced before its request went out
                # the second settle never reached the wire: "being settled" (state)
                assert r["r2_ok"] is False and r["r2_code"] == "state", r
                assert r["r2_errno"] == r["estate"] and "being settled" in r["r2_err"], r
                # a settle after the first one finished: "already settled", as in require "peeklock"
                assert r["again_ok"] is False and r["again_code"] == "state", r
                assert "already settled" in r["again_err"], r
                assert r["state"] == "settled", r
                assert requests("complete") - completes == 1
                assert requests("unlock") - unlocks == 0
                ent = emu.entity_state("race")
                assert ent["completed"].get(mid) == 1, ent
                assert not ent["messages"], ent

        def complete_with_lost_answer_is_unknown_outcome():
            emu.admin("PUT", "entities/unk", {"kind": "queue", "lock_duration": 30})
            for op, mid in (("complete", "u-1"), ("abandon", "u-2")):
                r, _ = ngx.get("/send", entity="unk", body="answer lost", id=mid)
                assert r["ok"], r
                # carried out, then the connection drops: the retry finds no lock
                wire_op = "complete" if op == "complete" else "unlock"
                with faulted(emu, operation=wire_op, entity="unk", drop=True, after=True, count=1):
                    r, _ = ngx.get("/race", entity="unk", ops=op, again=1)
                assert r["r1_ok"] is False and r["r1_code"] == "unknown_outcome", r
                assert "may or may not" in r["r1_err"], r
                assert r["state"] == "unknown", r  # remembered on the message
                assert r["again_ok"] is False and r["again_code"] == "unknown_outcome", r
                assert "unknown outcome" in r["again_err"], r
                if op == "complete":
                    assert emu.entity_state("unk")["completed"].get(mid) == 1
                else:
                    r, _ = ngx.get("/race", entity="unk", ops="complete")  # it was given back
                    assert r["r1_ok"] and r["id"] == mid, r
            # carried out, then answered 500: the retry's 404 proves nothing either
            r, _ = ngx.get("/send", entity="unk", body="answered 500", id="u-3")
            assert r["ok"], r
            with faulted(emu, operation="complete", entity="unk", status=500, after=True, count=1):
                r, _ = ngx.get("/race", entity="unk", ops="complete", again=1)
            assert r["r1_ok"] is False and r["r1_code"] == "unknown_outcome", r
            assert "earlier attempt may have been carried out" in r["r1_err"], r
            assert emu.entity_state("unk")["completed"].get("u-3") == 1

        def fault_matrix_over_cosockets():
            # every operation meets every fault once, as in tests/python/test_faults.py; the
            # worker's cosocket pool keeps connections across requests, so the "fresh" rows
            # run on a pooled connection too (their expected outcomes are the same)
            sys.path.insert(0, os.path.join(opts.root, "tests", "faults"))
            from proxy import FaultProxy

            with open(os.path.join(opts.root, "tests", "faults", "matrix.json")) as f:
                matrix = json.load(f)
            proxy = FaultProxy(emu.port)
            bad = []
            n = 0
            try:
                for op, row in sorted(matrix["expect"].items()):
                    for fault, want in sorted(row.items()):
                        if want == "n/a":
                            continue
                        n += 1
                        spec = matrix["faults"][fault]
                        q = f"mx-{n}"
                        emu.admin("PUT", f"entities/{q}", {"kind": "queue", "lock_duration": 5})
                        emu.admin("PUT", f"entities/{q}-warm", {"kind": "queue", "lock_duration": 5})
                        if op not in ("send", "send_batch"):
                            ngx.get("/send", entity=q, body="m", id="m1")
                        if op == "peek_lock":
                            ngx.get("/send", entity=q, body="m", id="m2")
                        rule = None
                        if "rule" in spec:
                            rule = dict(spec["rule"], operation="send" if op == "send_batch" else op, entity=q, count=1)
                        elif "proxy" in spec:
                            proxy.arm(op, spec["proxy"])
                        if spec.get("endpoint") == "refused":
                            s = socket.socket()
                            s.bind(("127.0.0.1", 0))
                            port = s.getsockname()[1]
                            s.close()
                        else:
                            port = proxy.port
                        with faulted(emu, **rule) if rule else contextlib.nullcontext():
                            r, _ = ngx.get(
                                "/matrix",
                                op=op,
                                entity=q,
                                port=port,
                                warm=f"{q}-warm",
                                settle=1 if op in ("renew", "unlock", "complete") else 0,
                            )
                        outcome, _, extra = want.partition(" ")
                        code = {"unknown": "unknown_outcome", "protocol": "protocol", "connection": "connection"}.get(
                            outcome
                        )
                        good = r.get("ok") if outcome == "ok" else r.get("err_code") == code
                        if extra == "orphaned":
                            good = good and r.get("orphaned", 0) >= 1
                        copies = [m["message_id"] for m in emu.entity_state(q)["messages"]]
                        if op in ("send", "send_batch") and fault != "stall":
                            ids = ["s1"] if op == "send" else ["b1", "b2"]
                            good = good and all(
                                copies.count(i) == (1 if outcome == "ok" else copies.count(i)) and copies.count(i) <= 1
                                for i in ids
                            )
                        if op == "receive_and_delete" and outcome == "ok":
                            good = good and r.get("id") == "m1" and "m1" not in copies
                        if op in ("unlock", "complete"):
                            good = good and r.get("state") == ("settled" if outcome == "ok" else "unknown")
                            if outcome == "unknown":
                                good = good and r.get("again_code") == "unknown_outcome"
                        if op == "complete" and outcome == "ok":
                            good = good and emu.entity_state(q)["completed"].get("m1") == 1
                        if not good:
                            bad.append((op, fault, want, r))
            finally:
                proxy.close()
            assert n > 80 and not bad, bad
            assert "peek_lock on mx-" in ngx.log() and "stays locked until its lock expires" in ngx.log()

        def huge_answer_is_refused_as_it_streams_in():
            # an answer announcing 400 MiB (then stalling) is refused at once, not read whole
            sys.path.insert(0, os.path.join(opts.root, "tests", "faults"))
            from proxy import loopback_server

            held = []

            def announce_huge(c):
                c.recv(65536)
                c.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 419430400\r\nBrokerProperties: {}\r\n\r\n" + b"x" * 1024
                )
                held.append(c)  # and nothing more

            lsock = loopback_server(announce_huge)
            try:
                emu.admin("PUT", "entities/huge", {"kind": "queue", "lock_duration": 5})
                t0 = time.monotonic()
                r, _ = ngx.get("/matrix", op="peek_lock", entity="huge", port=lsock.getsockname()[1], warm="")
                took = time.monotonic() - t0
                assert r["ok"] is False and r["err_code"] == "protocol", r
                assert "size limit" in r["err"], r
                assert took < 1.0, took  # not after the 1 s read timeout
            finally:
                lsock.close()
                for c in held:
                    c.close()

        def errors_come_back_as_tables():
            r, _ = ngx.get("/send", entity="no-such-queue", body="x")
            assert r["ok"] is False and r["err_code"] == "entity_not_found" and r["err_status"] == 410, r

        def errors_print_as_strings():
            body, status = ngx.get("/say", entity="no-such-queue")
            want = "peeklock: send on 'no-such-queue': HTTP 410"
            assert f"failed: {want}" in body and f"concat: {want}" in body, body
            try:
                ngx.get("/readme_assert")
                raise AssertionError("the README's assert did not raise")
            except urllib.error.HTTPError as e:
                assert e.code == 500, e
            aborted = [e for e in log_entries(ngx.log()) if "/readme_assert" in e]
            assert aborted and "peeklock: client: " in aborted[-1] and "(invalid_argument)" in aborted[-1], aborted

        def options_checked_and_requests_counted():
            before = len(emu.entity_state("counted")["messages"])
            r, _ = ngx.get("/options", entity="counted")
            assert r["refused"] and "bad option 'keepalive_ms' to 'client' (number expected, got string)" in r["err"], r
            assert r["refused_unknown"] and "unknown option 'bogus_opt'" in r["err_unknown"], r
            assert r["refused_receive"] and "unknown option 'timout' to 'peek_lock'" in r["err_receive"], r
            assert r["requests"] == 2 and r["reused"] >= 1 and r["sent"] == 2, r
            assert r["timeouts"] == "10000/30000/30000 10000/7000/7000", r
            assert r["pools"] == "32 3", r  # resty's own default (one pool per worker), or the option
            assert len(emu.entity_state("counted")["messages"]) == before + 2

        def blocking_require_warns():
            body, _ = ngx.get("/blocking")
            assert body.strip() == "made", body
            log = ngx.log()
            assert "[warn]" in log and 'require "peeklock" is the blocking client' in log, log[-2000:]

        def wait_for(fn, seconds=10.0):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                v = fn()
                if v:
                    return v
                time.sleep(0.05)
            return fn()

        def one_message(q):
            msgs = emu.entity_state(q)["messages"]
            return msgs[0] if len(msgs) == 1 else None

        def abort_path(q, trigger):
            """A message locked by a with_lock whose light thread dies is available again within
            seconds (the queue's lock lasts 60 s), not completed, and no longer renewed."""
            emu.admin("PUT", f"entities/{q}", {"kind": "queue", "lock_duration": 60})
            r, _ = ngx.get("/send", entity=q, body="abort", id=q + "-1")
            assert r["ok"], r
            trigger(q)
            t0 = time.monotonic()
            m = wait_for(lambda: (one_message(q) or {}).get("locked") is False and one_message(q), 5)
            assert m and not m["locked"], emu.entity_state(q)
            assert time.monotonic() - t0 < 5
            assert m["delivery_count"] == 1, m
            assert emu.entity_state(q)["completed"].get(q + "-1", 0) == 0
            assert wait_for(lambda: ngx.get("/held")[0]["held"] == 0, 5), ngx.get("/held")[0]

        def abort_by_ngx_exit():
            def trigger(q):
                body, _ = ngx.get("/abort_exit", entity=q)
                assert body.strip() == "exiting", body

            abort_path("ab-exit", trigger)

        def abort_by_client():
            def trigger(q):
                s = socket.create_connection(("127.0.0.1", ngx.port))
                s.sendall(f"GET /abort_client?entity={q} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                assert wait_for(lambda: (one_message(q) or {}).get("locked"), 10), emu.entity_state(q)
                s.close()

            abort_path("ab-client", trigger)

        def abort_by_killed_thread():
            def trigger(q):
                r, _ = ngx.get("/abort_kill", entity=q)
                assert r["inside"] and r["killed"], r

            abort_path("ab-kill", trigger)

        def abort_attached_left_held():
            def trigger(q):
                r, _ = ngx.get("/attach_left", entity=q)
                assert r["ok"] and r["state"] == "held" and r["held"] >= 1, r

            abort_path("ab-attach", trigger)

        def one_retry_counts_once():
            emu.admin("PUT", "entities/retried", {"kind": "queue"})
            with faulted(emu, operation="send", entity="retried", status=503, retry_after=0, count=1):
                r, _ = ngx.get("/retries", entity="retried")
            assert r["ok"] and r["retries"] == 1 and r["requests"] == 2 and r["failed"] == 0, r
            assert len(emu.entity_state("retried")["messages"]) == 1

        def tls_locks_live_past_several_durations(verify):
            def run():
                r, _ = ngx.get("/tls_lock", verify=verify, hold=12, http_timeout=60)
                assert r["ok"] and r["body"] == "over tls", r
                assert r["renewals"] >= 3, r
                print(
                    f"     renewals {r['renewals']}, the latest renewal {r['lateness_max_ms']} ms after its due time",
                    flush=True,
                )
                ent = tls_emu.entity_state("tlsq")
                assert ent["completed"].get(r["id"]) == 1 and not ent["messages"], ent

            return run

        def tls_failure_says_tls():
            r, _ = ngx.get("/tls_fail")
            assert r["ok"] is False and "TLS" in r["err"], r

        def process_runs_light_threads():
            q = "proc"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue"})
            for i in range(6):
                r, _ = ngx.get("/send", entity=q, body=f"p{i}", id=f"p-{i}")
                assert r["ok"], r
            r, _ = ngx.get("/process", entity=q, n=6)
            assert r["processed"] == 6 and r["failed"] == 0 and r["lost"] == 0, r
            assert r["most"] == 3 and r["stopped_by"] == "max_messages", r
            ent = emu.entity_state(q)
            assert not ent["messages"] and all(ent["completed"].get(f"p-{i}") == 1 for i in range(6)), ent

        def process_is_idle_only_with_nothing_in_flight():
            # r0's handler sends r1 1.5 s in and runs until r1's handler has started: with
            # idle_timeout 0.5 the other light threads keep receiving while r0 is in flight (the
            # core's rule, pl_run), so one of them takes r1 and two handlers run together; the run
            # ends idle after both
            q = "proci"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue"})
            r, _ = ngx.get("/send", entity=q, body="r0", id="pi-0")
            assert r["ok"], r
            r, _ = ngx.get("/process", entity=q, idle=0.5, relay=1, http_timeout=60)
            assert r["processed"] == 2 and r["failed"] == 0 and r["r1_started"] is True, r
            assert r["most"] == 2 and r["stopped_by"] == "idle", r
            ent = emu.entity_state(q)
            assert not ent["messages"] and ent["completed"].get("pi-0") == 1, ent

        def process_runs_batches():
            q = "procb"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue"})
            for i in range(6):
                r, _ = ngx.get("/send", entity=q, body=f"p{i}", id=f"pb-{i}")
                assert r["ok"], r
            # 7 messages in all: p0 is abandoned once (by the handler's returned table), then completed
            r, _ = ngx.get("/process", entity=q, n=7, batch=3)
            assert r["processed"] == 6 and r["failed"] == 1 and r["lost"] == 0 and r["errors"] == 0, r
            assert r["settled_by_handler"] == 0 and 2 <= r["largest"] <= 3 and r["batches"] >= 3, r
            ent = emu.entity_state(q)
            assert not ent["messages"] and all(ent["completed"].get(f"pb-{i}") == 1 for i in range(6)), ent

        def process_follows_the_receive_rule():
            # the core's rule (pl_receive_pause_ms): a missing entity ends the run at once ...
            for batch in (None, 3):
                r, _ = ngx.get("/process", entity="no-such-queue", n=1, **({"batch": batch} if batch else {}))
                assert r["error"] == "entity_not_found" and r["processed"] == 0 and r["elapsed"] < 5, r
            # ... a throttled receive (after the client's retries) pauses its light thread, which goes on
            q = "procf"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue"})
            r, _ = ngx.get("/send", entity=q, body="f", id="pf-0")
            assert r["ok"], r
            with faulted(emu, operation="peek_lock", entity=q, status=503, count=12):
                r, _ = ngx.get("/process", entity=q, n=1, http_timeout=60)
            assert r["processed"] == 1 and r.get("error") is None and r["errors"] >= 1, r
            assert r["last_error"] == "throttled" and r["elapsed"] >= 1, r
            assert emu.entity_state(q)["completed"].get("pf-0") == 1

        def process_summary_counts_as_python_does():
            # the run tests/python/test_processor.py makes, the same counts (the core's)
            q = "proct"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue"})
            for i in range(3):
                r, _ = ngx.get("/send", entity=q, body=str(i), id=f"pt-{i}")
                assert r["ok"], r
            r, _ = ngx.get("/tallies", entity=q, http_timeout=60)
            with open(os.path.join(opts.root, "tests", "tallies.json")) as f:
                run = json.load(f)
            want = dict(run["counts"], stopped_by=run["stopped_by"])
            assert {k: r.get(k) for k in want} == want and r.get("error") is None, r
            assert emu.entity_state(q)["completed"] == {f"pt-{i}": 1 for i in range(3)}
            # a client closed under the run: it ends quietly as "closed"
            r, _ = ngx.get("/send", entity=q, body="c", id="pt-c")
            assert r["ok"], r
            r, _ = ngx.get("/tallies", entity=q, closed=1, http_timeout=60)
            assert r["stopped_by"] == "closed" and r.get("error") is None, r
            assert r["processed"] == 1 and r["errors"] == 0, r

        def example_nginx(env):
            """nginx running examples/openresty (its nginx.conf and worker.lua) with env."""
            return Nginx(
                opts.root,
                opts.build,
                emu.connection_string,
                template="examples/openresty/nginx.conf",
                extra_vars={"@CA_FILE@": cert_path},
                extra_env=env,
            )

        def exit_with_polls_in_flight(cut):
            """The example worker (2 workers x 4 consumers, 10 s long polls) exits (SIGQUIT) while
            its 8 polls wait and 2 messages arrive: how long the exit takes, and in the emulator's
            state every message completed once or still in the queue, none twice."""
            q = "exit-cut" if cut else "exit-wait"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue", "lock_duration": 30})

            def polls():
                return emu.state()["counters"].get("requests.peek_lock", 0)

            base = polls()
            ex = example_nginx(
                {
                    "PEEKLOCK_ENTITY": q,
                    "PEEKLOCK_CONCURRENCY": "4",
                    "PEEKLOCK_POLL_TIMEOUT": "10",
                    "PEEKLOCK_CUT_ON_EXIT": "1" if cut else "0",
                },
            )
            sent = []
            try:
                assert wait_for(lambda: polls() >= base + 8, 15), (polls() - base, ex.log()[-2000:])

                def send(i):
                    r, _ = ngx.get("/send", entity=q, body=f"exit {i}", id=f"{q}-{i}")
                    assert r["ok"], r
                    sent.append(f"{q}-{i}")

                # 3 messages handled, their consumers back in a long poll: 8 polls wait
                for i in range(3):
                    send(i)
                assert wait_for(lambda: len(emu.entity_state(q)["completed"]) == 3 and polls() >= base + 11, 15)
                t0 = time.monotonic()
                ex.proc.send_signal(signal.SIGQUIT)
                for i in range(3, 5):  # and 2 more arrive while the workers exit
                    send(i)
                ex.proc.wait(60)
                took = time.monotonic() - t0
                log = ex.log()
            finally:
                ex.stop()
            ent = emu.entity_state(q)
            done = set(ent["completed"])
            left = {m["message_id"]: m for m in ent["messages"]}
            assert all(v == 1 for v in ent["completed"].values()), ent["completed"]
            assert done | set(left) == set(sent) and not done & set(left), (done, left)
            assert ("long poll cut at worker exit" in log) == cut, log[-3000:]
            assert not any(
                bad in log for bad in ("lua entry thread aborted", "runtime error", "[alert]", "[crit]", "[emerg]")
            ), log[-3000:]
            orphans = [k for k, m in left.items() if m["locked"]]
            print(
                f"     exit took {took:.2f} s with cut_on_exit={'true' if cut else 'false'}; "
                f"completed {len(done)}, left {len(left)} (locked by a cut poll: {len(orphans)})",
                flush=True,
            )
            return took

        exit_times = {}

        def exit_cuts_long_polls():
            exit_times[True] = exit_with_polls_in_flight(True)
            assert exit_times[True] < 3, exit_times

        def exit_waits_for_long_polls_without_cut():
            exit_times[False] = exit_with_polls_in_flight(False)
            assert exit_times[False] >= 5, exit_times

        def example_worker_logs_the_error_that_ends_it():
            # A typo'd entity ends client:process at once with summary.error (the core's
            # pl_receive_pause_ms rule); the example must say so at error level, not log a drain.
            ex = example_nginx({"PEEKLOCK_ENTITY": "no-such-entity", "PEEKLOCK_CONCURRENCY": "2"})
            try:

                def stopped():
                    return [e for e in log_entries(ex.log()) if "peeklock example: the consumers stopped" in e]

                assert wait_for(lambda: len(stopped()) == 2, 15), ex.log()[-3000:]  # one per worker
                log, entries = ex.log(), stopped()
            finally:
                ex.stop()
            assert all("[error]" in e and "no-such-entity" in e and "entity_not_found" in e for e in entries), log
            assert "peeklock example: drained" not in log, log[-3000:]
            assert "SAS_KEY_VALUE" not in log and "SharedAccessSignature" not in log, log[-3000:]

        def example_worker_across_reload():
            q = "example"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue", "lock_duration": 30})
            ex = example_nginx(
                {
                    "PEEKLOCK_ENTITY": q,
                    "PEEKLOCK_CONCURRENCY": "4",
                    "PEEKLOCK_HANDOFF_ENTITY": "example-jobs",
                },
            )
            n = 300
            try:
                for i in range(n):
                    if i == n // 2:  # a graceful reload while messages are being processed
                        ex.proc.send_signal(signal.SIGHUP)
                    r, _ = ngx.get("/send", entity=q, body=f"work {i}", id=f"ex-{i}")
                    assert r["ok"], r

                def all_done():
                    ent = emu.entity_state(q)
                    return not ent["messages"] and sum(ent["completed"].values()) >= n and ent

                ent = wait_for(all_done, 60)
                assert ent, (len(emu.entity_state(q)["messages"]), ex.log()[-3000:])
                twice = {k: v for k, v in ent["completed"].items() if v != 1}
                assert not twice and set(ent["completed"]) == {f"ex-{i}" for i in range(n)}, twice
                st, _ = ex.get("/stats")
                assert st["handled"] >= 1 and st["renewer_threads"] == 0, st

                # /metrics: every worker's counts (the replaced ones' too, synced as they drained)
                # in the shared dict, each synced within a second
                def completed():
                    samples, _ = scrape(ex)
                    done = total(
                        samples,
                        "messaging_client_operation_duration_seconds_count",
                        messaging_destination_name=q,
                        messaging_operation_name="complete",
                        error_type=None,
                    )
                    return done >= n and samples

                samples = wait_for(completed, 10)
                assert samples, scrape(ex)[0]
                assert (
                    total(
                        samples,
                        "messaging_client_operation_duration_seconds_count",
                        messaging_destination_name=q,
                        messaging_operation_name="complete",
                    )
                    == n
                )
                assert total(
                    samples, "messaging_client_consumed_messages_total", messaging_destination_name=q
                ) == n + total(
                    samples,
                    "messaging_client_operation_duration_seconds_count",
                    messaging_destination_name=q,
                    messaging_operation_name="abandon",
                    error_type=None,
                )
                assert total(samples, "messaging_client_sent_messages_total") == 0
                log = ex.log()
                # the workers the reload replaced drained and said so
                assert "peeklock example: drained: processed" in log, log[-3000:]
                assert not any(
                    bad in log for bad in ("lua entry thread aborted", "runtime error", "[alert]", "[crit]", "[emerg]")
                ), log[-3000:]
                # the hand-over: /handoff takes the lock, examples/openresty/finish.py completes it
                emu.admin("PUT", "entities/example-jobs", {"kind": "queue", "lock_duration": 5})
                r, _ = ngx.get("/send", entity="example-jobs", body="long job", id="job-1")
                assert r["ok"], r
                p = subprocess.run(
                    [
                        sys.executable,
                        os.path.join(opts.root, "examples/openresty/finish.py"),
                        f"http://127.0.0.1:{ex.port}/handoff",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    cwd=tempfile.gettempdir(),
                    env=dict(python_env(), PEEKLOCK_CONNECTION_STRING=emu.connection_string),
                )
                assert p.returncode == 0 and "finishing job job-1" in p.stdout, (p.stdout, p.stderr[-2000:])
                ent = emu.entity_state("example-jobs")
                assert ent["completed"] == {"job-1": 1} and not ent["messages"], ent
            finally:
                ex.stop()

        def metrics_count_what_happened():
            q = "metered"
            emu.admin("PUT", f"entities/{q}", {"kind": "queue", "lock_duration": 5})
            before, _ = scrape(ngx)
            for i in range(4):
                r, _ = ngx.get("/send", entity=q, body=f"metered {i}", id=f"mt-{i}")
                assert r["ok"], r
            # one handler outlives half its 5 s lock: the worker's loop renews it (real time: the
            # client schedules renewals by its own clock), then it is completed
            r, _ = ngx.get("/lock", 60, entity=q, renewals=1, hold=0)
            assert r["ok"] and r["renewals"] >= 1, r
            for complete in (1, 1, 0):  # peek-lock, renew, complete twice and abandon once
                r, _ = ngx.get("/peek", entity=q, timeout=5, **({"complete": 1} if complete else {}))
                assert r["ok"], r
            after, types = scrape(ngx)
            assert types["messaging_client_operation_duration_seconds"] == "histogram", types
            assert types["messaging_client_sent_messages"] == "counter", types

            def delta(name, **labels):
                return total(after, name, messaging_destination_name=q, **labels) - total(
                    before, name, messaging_destination_name=q, **labels
                )

            dur = "messaging_client_operation_duration_seconds_count"
            assert delta("messaging_client_sent_messages_total", error_type=None) == 4
            assert delta(dur, messaging_operation_name="send", messaging_operation_type="send") == 4
            assert delta("messaging_client_consumed_messages_total", messaging_operation_name="peek_lock") == 4
            assert delta(dur, messaging_operation_name="peek_lock", error_type=None) == 4
            assert (
                delta(dur, messaging_operation_name="complete", messaging_operation_type="settle", error_type=None)
                == 2 + 1
            )
            assert delta(dur, messaging_operation_name="abandon", error_type=None) == 1
            # timed below the millisecond: sums with fractions of one (a whole-millisecond
            # clock counts an operation under 1 ms as 0)
            for op in ("send", "peek_lock", "complete"):
                ms = (
                    delta(
                        "messaging_client_operation_duration_seconds_sum", messaging_operation_name=op, error_type=None
                    )
                    * 1000
                )
                assert ms > 0 and abs(ms - round(ms)) > 1e-6, (op, ms)
            renewals = delta("peeklock_lock_renewals_total")
            assert renewals >= 1, renewals
            # every renewal is an operation too: the loop's and the three msg:renew() calls
            assert delta(dur, messaging_operation_name="renew_message_lock", error_type=None) == renewals + 3
            assert delta("peeklock_lock_renewal_slack_seconds_count") == renewals
            # the slack of a renewal of a 5 s lock: the core's schedule renews at most half the
            # time left ahead, a lock's first renewal up to half that wait earlier (its jitter,
            # which spreads locks taken together): 2.5 to 3.75 s left when it lands
            assert (
                1.0
                <= total(after, "peeklock_lock_renewal_slack_seconds_sum", messaging_destination_name=q)
                / total(after, "peeklock_lock_renewal_slack_seconds_count", messaging_destination_name=q)
                <= 3.8
            )
            assert delta("peeklock_lock_renewal_failures_total") == 0
            # the with_lock handler's run: one, held until the loop's first renewal of its 5 s lock,
            # which the schedule sends at half the time left (2.5 s) or up to half that wait
            # earlier (its first-renewal jitter): 1.25 s at the soonest
            assert (
                delta("messaging_process_duration_seconds_count", messaging_operation_name="process", error_type=None)
                == 1
            )
            assert delta("messaging_process_duration_seconds_sum") >= 1.2
            assert delta("peeklock_lock_lost_total") == 0
            assert total(after, "peeklock_locks_held") == 0, after
            # bucket bounds as written (0.005, not 0.0050000000000000001), in increasing order
            les = [
                dict(lbl)["le"]
                for (n, lbl) in after
                if n == "messaging_client_operation_duration_seconds_bucket"
                and dict(lbl)["messaging_operation_name"] == "send"
                and dict(lbl).get("error_type") is None
                and dict(lbl)["messaging_destination_name"] == q
            ]
            assert sorted(les, key=float) == [
                "0.005",
                "0.01",
                "0.025",
                "0.05",
                "0.075",
                "0.1",
                "0.25",
                "0.5",
                "0.75",
                "1",
                "2.5",
                "5",
                "7.5",
                "10",
                "+Inf",
            ], les
            assert all(
                dict(lbl).get("server_address") == "127.0.0.1" and dict(lbl)["messaging_system"] == "servicebus"
                for (n, lbl) in after
                if n.startswith("messaging_client")
            )
            # a batch of two counts two messages sent; receive-and-delete counts what it consumed
            b0, _ = scrape(ngx)
            r, _ = ngx.get("/batch", entity=q)
            assert r["ok"], r
            b1, _ = scrape(ngx)
            assert (
                total(b1, "messaging_client_sent_messages_total", messaging_destination_name=q)
                - total(b0, "messaging_client_sent_messages_total", messaging_destination_name=q)
                == 2
            )
            assert (
                total(
                    b1,
                    "messaging_client_consumed_messages_total",
                    messaging_destination_name=q,
                    messaging_operation_name="receive_and_delete",
                )
                - total(
                    b0,
                    "messaging_client_consumed_messages_total",
                    messaging_destination_name=q,
                    messaging_operation_name="receive_and_delete",
                )
                == 2
            )
            ent = emu.entity_state(q)
            assert ent["completed"] and len(ent["messages"]) == 1, ent  # the abandoned one
            # max_renew 1 s on a 5 s lock: at the first renewal's due time (2.5 s) the cap has passed
            r, _ = ngx.get("/rd", entity=q, timeout=5)  # (the abandoned message out of the way)
            r, _ = ngx.get("/send", entity=q, body="capped", id="mt-cap")
            assert r["ok"], r
            c0, _ = scrape(ngx)
            r, _ = ngx.get("/lock", 60, entity=q, hold=3.5, max_renew=1)
            assert r["ok"] and r["renewals"] == 0, r
            c1, _ = scrape(ngx)
            for name, want in (("peeklock_lock_cap_reached_total", 1), ("peeklock_lock_renewals_total", 0)):
                got = total(c1, name, messaging_destination_name=q) - total(c0, name, messaging_destination_name=q)
                assert got == want, (name, got)

        def metrics_count_the_lost_lock():
            samples, _ = scrape(ngx)
            lossy = {k[0]: v for k, v in samples.items() if ("messaging_destination_name", "lossy") in k[1]}
            assert total(samples, "peeklock_lock_lost_total", messaging_destination_name="lossy") == 1, lossy
            # the renewal that found the lock gone failed, with the reason as error.type
            assert (
                total(
                    samples,
                    "peeklock_lock_renewal_failures_total",
                    messaging_destination_name="lossy",
                    error_type="lock_lost",
                )
                >= 1
            ), lossy
            assert total(samples, "peeklock_locks_held") == 0

        def worker_client_is_one_per_worker():
            a, _ = ngx.get("/worker_client")
            b, _ = ngx.get("/worker_client")
            assert a["same"] and a["id"] == b["id"], (a, b)

        def client_per_request_costs_no_thread():
            r, _ = ngx.get("/per_request", entity="perreq")
            assert r["ok"], r
            base = r["threads"]
            peak = base
            for _ in range(600):
                r, _ = ngx.get("/per_request", entity="perreq")
                assert r["ok"], r
                peak = max(peak, r["threads"])
            assert peak == base, (base, peak)
            assert len(emu.entity_state("perreq")["messages"]) == 0

        def long_poll_does_not_block_and_renewal_spans_lock_durations():
            box = {}

            def locker():
                try:
                    box["r"], _ = ngx.get("/lock", 90, entity="slow", renewals=3, hold=11)
                    box["held_s"] = time.monotonic() - box["sent_at"]
                except Exception as e:  # reported below
                    box["e"] = e

            t = threading.Thread(target=locker)
            t.start()
            # The /lock request is now long-polling an empty queue (up to 10 s).
            time.sleep(0.3)
            worst = 0.0
            for _ in range(20):
                _, dt = ngx.get("/ping", http_timeout=5)
                worst = max(worst, dt)
            assert t.is_alive(), "the long poll ended early"
            assert worst < 3.0, f"/ping took {worst:.3f} s while /lock long-polled (up to 10 s)"
            box["sent_at"] = time.monotonic()
            r, _ = ngx.get("/send", entity="slow", body="long job", id="s-1")
            assert r["ok"], r
            # While the handler holds the lock (renewed every few seconds), pings stay prompt.
            for _ in range(10):
                _, dt = ngx.get("/ping", http_timeout=5)
                worst = max(worst, dt)
                time.sleep(0.2)
            t.join(90)
            assert not t.is_alive()
            assert "e" not in box, box.get("e")
            r = box["r"]
            assert r["ok"] and r["body"] == "long job" and r["renewals"] >= 3, r
            # held for 11 s (over two durations of the 5 s lock), kept by renewals
            assert box["held_s"] > 10, box["held_s"]
            assert worst < 3.0, f"/ping took {worst:.3f} s while the lock was held"
            ent = emu.entity_state("slow")
            assert ent["completed"].get("s-1") == 1, ent
            assert not ent["messages"], ent

        def concurrent_handlers_share_the_renewer():
            emu.admin("PUT", "entities/many", {"kind": "queue", "lock_duration": 5})
            for i in range(3):
                r, _ = ngx.get("/send", entity="many", body=f"job {i}", id=f"m-{i}")
                assert r["ok"], r
            out = [None] * 3

            def run(i):
                out[i] = ngx.get("/lock", 60, entity="many", renewals=2, hold=6)[0]

            threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert all(r and r["ok"] for r in out), out
            assert sorted(r["body"] for r in out) == ["job 0", "job 1", "job 2"], out
            ent = emu.entity_state("many")
            assert all(ent["completed"].get(f"m-{i}") == 1 for i in range(3)), ent
            assert not ent["messages"], ent

        def handler_failure_abandons():
            r, _ = ngx.get("/send", entity="slow", body="doomed", id="s-2")
            assert r["ok"], r
            r, _ = ngx.get("/lock", entity="slow", fail=1)
            assert r["ok"] is False and r["err_code"] == "handler", r
            ent = emu.entity_state("slow")
            assert ent["completed"].get("s-2", 0) == 0, ent
            assert len(ent["messages"]) == 1 and not ent["messages"][0]["locked"], ent
            r, _ = ngx.get("/peek", entity="slow", timeout=5, complete=1)
            assert r["ok"] and r["delivery_count"] == 2, r

        def renewal_loop_wakes_only_when_something_is_due():
            # The loop waits for the next due time or for news (a lock added, a renewal
            # answered), not in fixed steps (it used to wake every 500 ms with locks held, every
            # 10 ms while a renewal was out). A 30 s lock held 2 s: its first renewal is 7.5 s
            # away at the soonest, so the loop wakes once, to start.
            emu.admin("PUT", "entities/quiet", {"kind": "queue", "lock_duration": 30})
            r, _ = ngx.get("/send", entity="quiet", body="idle", id="qt-1")
            assert r["ok"], r
            r, _ = ngx.get("/lock", 60, entity="quiet", hold=2)
            assert r["ok"] and r["held"] == 1 and r["renewals"] == 0 and r["wakeups"] <= 2, r
            # A 5 s lock whose first renewal is answered 1.5 s after it goes out: woken when it is
            # due and when it is answered.
            emu.admin("PUT", "entities/quiet5", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="quiet5", body="slow renew", id="qt-2")
            assert r["ok"], r
            with faulted(emu, operation="renew", entity="quiet5", delay_ms=1500, count=1):
                r, _ = ngx.get("/lock", 60, entity="quiet5", renewals=1)
            print(
                f"     wakeups {r['wakeups']}, the latest renewal {r['lateness_max_ms']} ms after its due time",
                flush=True,
            )
            assert r["ok"] and r["held"] == 1 and r["renewals"] == 1 and r["failures"] == 0, r
            assert r["wakeups"] <= 5, r
            for q, mid in (("quiet", "qt-1"), ("quiet5", "qt-2")):
                ent = emu.entity_state(q)
                assert ent["completed"] == {mid: 1} and not ent["messages"], ent

        def lost_lock_completes_nothing():
            emu.admin("PUT", "entities/lossy", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="lossy", body="will expire", id="l-1")
            assert r["ok"], r
            box = {}
            t = threading.Thread(target=lambda: box.update(r=ngx.get("/lock", 90, entity="lossy", until_lost=1)[0]))
            t.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msgs = emu.entity_state("lossy")["messages"]
                if msgs and msgs[0]["locked"]:
                    break
                time.sleep(0.05)
            emu.admin("POST", "clock/advance", {"seconds": 60})  # the server-side lock expires
            t.join(60)
            r = box["r"]
            assert r["ok"] is False and r["err_code"] == "lock_lost", r
            assert "nothing was completed" in r["err"], r
            ent = emu.entity_state("lossy")
            assert ent["completed"].get("l-1", 0) == 0, ent
            assert len(ent["messages"]) == 1, ent

        def failed_renewals_follow_the_core_schedule():
            # Each renewal is one attempt; a failed one is retried when the core's schedule
            # says (backoff), and a lock it gives up on is lost: every failure is one request.
            emu.admin("PUT", "entities/sched", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="sched", body="kept", id="sc-1")
            assert r["ok"], r
            with faulted(emu, operation="renew", entity="sched", status=503, count=2):
                r, _ = ngx.get("/lock", 60, entity="sched", renewals=1)
                hits = [f["hits"] for f in emu.faults()]
            assert r["ok"] and r["renewals"] == 1 and r["failures"] == 2 and hits == [2], (r, hits)
            assert emu.entity_state("sched")["completed"] == {"sc-1": 1}
            r, _ = ngx.get("/send", entity="sched", body="lost", id="sc-2")
            assert r["ok"], r
            with faulted(emu, operation="renew", entity="sched", status=503):
                t0 = time.monotonic()
                r, _ = ngx.get("/lock", 60, entity="sched", until_lost=1)
                took = time.monotonic() - t0
                hits = [f["hits"] for f in emu.faults()]
            assert r["ok"] is False and r["err_code"] == "lock_lost", r
            assert "renewals kept failing" in r["err"], r
            # backoff: a handful of attempts in the lock's 5 s, not one per loop pass
            assert r["failures"] == hits[0] and 3 <= hits[0] <= 20 and took < 10, (r, hits, took)
            ent = emu.entity_state("sched")
            assert ent["completed"].get("sc-2", 0) == 0 and len(ent["messages"]) == 1, ent

        def openresty_takes_the_lock_python_finishes():
            emu.admin("PUT", "entities/handq", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="handq", body="long job", id="h-1")
            assert r["ok"], r
            r, _ = ngx.get("/handoff", entity="handq")
            assert r["ok"] and r["id"] == "h-1" and r["handle"].startswith("plh1."), r
            handle = r["handle"]
            msgs = emu.entity_state("handq")["messages"]
            assert len(msgs) == 1 and msgs[0]["locked"], msgs  # released by nginx, still locked
            p = subprocess.run(
                [sys.executable, "-c", FINISH_IN_PYTHON, emu.connection_string],
                input=handle + "\n",
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tempfile.gettempdir(),
                env=python_env(),
            )
            assert p.returncode == 0 and p.stdout.strip() == "h-1", (p.returncode, p.stdout, p.stderr[-2000:])
            ent = emu.entity_state("handq")
            assert ent["completed"] == {"h-1": 1} and not ent["messages"], ent
            assert handle not in ngx.log() and handle not in p.stderr

        def python_takes_the_lock_openresty_renews_and_completes():
            emu.admin("PUT", "entities/handq2", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="handq2", body="long job", id="h-2")
            assert r["ok"], r
            take = (
                "import sys, peeklock\n"
                "c = peeklock.Client.from_connection_string(sys.argv[1])\n"
                "m = c.peek_lock('handq2', timeout=5)\n"
                "print(m.lock_handle(), flush=True)\n"
                "m.release()\n"
                "c.close()\n"
            )
            p = subprocess.run(
                [sys.executable, "-c", take, emu.connection_string],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tempfile.gettempdir(),
                env=python_env(),
            )
            assert p.returncode == 0, p.stderr[-2000:]
            handle = p.stdout.strip()
            # (three renewals: the lock was taken before the attach, so two can land within 5 s of it)
            req = urllib.request.Request(
                f"http://127.0.0.1:{ngx.port}/attach?renewals=3", data=handle.encode(), method="POST"
            )
            t0 = time.monotonic()
            with urllib.request.urlopen(req, timeout=90) as resp:
                r = json.loads(resp.read())
            held = time.monotonic() - t0
            # held past the 5 s lock by renewals over cosockets, then completed once
            assert r["ok"] and r["id"] == "h-2" and r["renewals"] >= 3, r
            assert held > 5, held
            ent = emu.entity_state("handq2")
            assert ent["completed"] == {"h-2": 1} and not ent["messages"], ent
            # a bad handle is refused without being quoted
            bad = "plh1.not-a-secret-handle-" + "Q" * 40
            req = urllib.request.Request(f"http://127.0.0.1:{ngx.port}/attach", data=bad.encode(), method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                r = json.loads(resp.read())
            # (raised at the caller's line in handler.lua, in the core's words, as in plain Lua)
            assert r["ok"] is False and re.match(r"^[^:]*handler\.lua:\d+: peeklock: attach: ", r["refused"]), r
            assert r["refused"].endswith("(invalid_argument)"), r
            assert "not-a-secret" not in json.dumps(r) and "not-a-secret" not in ngx.log(), r
            assert handle not in ngx.log()

        check("a second location answers", ping_answers)
        check("send, peek-lock, renew, abandon, complete over cosockets", send_and_peek)
        check("send_batch and receive_and_delete over cosockets", batch_and_receive_and_delete)
        check("errors come back as tables", errors_come_back_as_tables)
        check("errors print as strings (ngx.say, concatenation, the README's assert)", errors_print_as_strings)
        check(
            "client options are checked before a request; stats count cosocket requests",
            options_checked_and_requests_counted,
        )
        check("the blocking require inside nginx warns", blocking_require_warns)
        check("a handler that calls ngx.exit: its message is abandoned within seconds", abort_by_ngx_exit)
        check(
            "a client that goes away (lua_check_client_abort): its message is abandoned within seconds", abort_by_client
        )
        check("a killed light thread: its message is abandoned within seconds", abort_by_killed_thread)
        check("an attached message its request left held is abandoned within seconds", abort_attached_left_held)
        check("one injected 503 on a send counts one retry in stats()", one_retry_counts_once)
        check(
            "TLS through lua_ssl_trusted_certificate: a 5 s lock held for 12 s is renewed, completed once",
            tls_locks_live_past_several_durations(1),
        )
        check(
            "TLS with ssl_verify=false: a 5 s lock held for 12 s is renewed, completed once",
            tls_locks_live_past_several_durations(0),
        )
        check(
            "failed renewals follow the core's schedule: one attempt each, backoff, lost when it gives up",
            failed_renewals_follow_the_core_schedule,
        )
        check("a TLS failure says TLS", tls_failure_says_tls)
        check(
            "client:process runs handlers in 3 light threads, each message completed once", process_runs_light_threads
        )
        check(
            "client:process with idle_timeout: idle only with no message in flight",
            process_is_idle_only_with_nothing_in_flight,
        )
        check(
            "client:process with batch=3: batch handlers in light threads, a returned table abandons, "
            "each message completed once",
            process_runs_batches,
        )
        check(
            "client:process ends on a missing entity, pauses and goes on after throttled receives",
            process_follows_the_receive_rule,
        )
        check(
            "client:process summary: a processed, a handler-settled, an abandoned and a redelivered message "
            "counted as in Python; a client closed under the run ends it as closed",
            process_summary_counts_as_python_does,
        )
        check(
            "a worker exit cuts long polls in flight (cut_on_exit): prompt, none lost or completed twice",
            exit_cuts_long_polls,
        )
        check(
            "without cut_on_exit the exit waits for the long polls (none lost or completed twice)",
            exit_waits_for_long_polls_without_cut,
        )
        check(
            "examples/openresty: init_worker consumers process 300 messages across a reload, "
            "none lost or completed twice; its /handoff lock is completed by finish.py in Python",
            example_worker_across_reload,
        )
        check(
            "examples/openresty: a missing entity ends the consumers, the error logged at error level",
            example_worker_logs_the_error_that_ends_it,
        )
        check(
            "/metrics (peeklock.metrics): sends, receives, settles and the loop's renewals as they happened",
            metrics_count_what_happened,
        )
        check("peeklock.resty.worker_client gives the worker's one client", worker_client_is_one_per_worker)
        check("600 clients made per request keep the worker's thread count flat", client_per_request_costs_no_thread)
        check("503s and a dropped answer are retried over cosockets", retries_over_cosockets)
        check(
            "a 500 after a receive-and-delete is an unknown outcome, not retried into a lost message",
            receive_and_delete_500_after_delete_is_reported_not_retried,
        )
        check(
            "a 500 on send/send_batch is an unknown outcome, not retried (no duplicate); a 503 is; "
            "a complete retries 500s "
            "and 503s past max_retries",
            send_500_is_not_retried_503_is,
        )
        check(
            "two light threads settling one message: one request, the other 'being settled'",
            two_light_threads_settle_once,
        )
        check(
            "a settle whose answer was lost and whose retry finds no lock: unknown_outcome",
            complete_with_lost_answer_is_unknown_outcome,
        )
        check("the fault matrix (tests/faults/matrix.json) over cosockets", fault_matrix_over_cosockets)
        check("an answer over the size limit is refused as it streams in", huge_answer_is_refused_as_it_streams_in)
        check(
            "long poll does not block the worker; a 5 s lock is renewed across lock durations and completed once",
            long_poll_does_not_block_and_renewal_spans_lock_durations,
        )
        check("three handlers hold locks at once in one worker", concurrent_handlers_share_the_renewer)
        check("handler failure abandons", handler_failure_abandons)
        check(
            "the renewal loop wakes when a lock is due or a renewal answers, not in steps",
            renewal_loop_wakes_only_when_something_is_due,
        )
        check(
            "lock hand-over: an OpenResty location takes the lock, a Python process completes it",
            openresty_takes_the_lock_python_finishes,
        )
        check(
            "lock hand-over: Python takes the lock, peeklock.resty attaches, renews it over cosockets and completes it",
            python_takes_the_lock_openresty_renews_and_completes,
        )
        # last: it advances the emulator clock
        check("a lock lost while the handler runs completes nothing", lost_lock_completes_nothing)
        check("/metrics counts the lost lock", metrics_count_the_lost_lock)
        # (the README's assert idiom aborts its request on purpose)
        log = "\n".join(e for e in log_entries(ngx.log()) if "/readme_assert" not in e)
        check(
            "no Lua errors in the nginx log",
            lambda: (
                (_ for _ in ()).throw(AssertionError(log[-3000:]))
                if any(
                    bad in log
                    for bad in (
                        "lua entry thread aborted",
                        "runtime error",
                        "writing a global Lua variable",
                        "[alert]",
                        "[crit]",
                        "[emerg]",
                    )
                )
                else None
            ),
        )
    finally:
        if ngx:
            ngx.stop()
        emu.stop()
        tls_emu.stop()
        shutil.rmtree(tls_dir, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"nginx: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
