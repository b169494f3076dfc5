"""nginx + lua-nginx-module + peeklock.resty against the emulator.

Starts the emulator and nginx (own prefix, own config, free port on 127.0.0.1),
checks that a location peek-locks, keeps a 5 s lock across several lock durations
through renewal and completes exactly once; that a second location answers promptly
while a request long-polls (the worker is not blocked); abandon, handler failure and
empty receives. Tears everything down. Prints 'N passed, N failed'.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root, build, conn, template="tests/nginx/nginx.conf.in"):
        self.prefix = tempfile.mkdtemp(prefix="peeklock-nginx-")
        for d in ("logs", "tmp", "conf"):
            os.makedirs(os.path.join(self.prefix, d))
        self.port = free_port()
        with open(os.path.join(root, template)) as f:
            conf = f.read()
        for k, v in {"@PREFIX@": self.prefix, "@ROOT@": root, "@BUILD@": build,
                     "@PORT@": str(self.port)}.items():
            conf = conf.replace(k, v)
        self.conf = os.path.join(self.prefix, "conf", "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=conn)
        self.proc = subprocess.Popen(["nginx", "-p", self.prefix, "-c", self.conf],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    opts = ap.parse_args()
    sys.path.insert(0, os.path.join(opts.root, "python"))   # the source tree's emulator launcher
    from peeklock.testing import Emulator
    emu = Emulator.start("--queue", "orders")
    ngx = None
    results = []

    def check(name, fn):
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
        ngx = Nginx(opts.root, opts.build, emu.connection_string)

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
            emu.admin("POST", "faults", {"operation": "send", "entity": "flaky", "status": 503,
                                         "retry_after": 0, "count": 2})
            r, _ = ngx.get("/send", entity="flaky", body="after two 503s", id="f-1")
            assert r["ok"], r
            assert len(emu.entity_state("flaky")["messages"]) == 1
            emu.admin("POST", "faults", {"operation": "complete", "entity": "flaky", "drop": True,
                                         "count": 1})
            r, _ = ngx.get("/peek", entity="flaky", timeout=5, complete=1)
            # the dropped answer is retried: completed, or honestly reported as unknown
            assert r["ok"] or r.get("err_code") == "unknown_outcome", r
            assert emu.entity_state("flaky")["completed"].get("f-1") == 1
            emu.admin("POST", "faults", {"operation": "peek_lock", "entity": "flaky", "status": 503,
                                         "retry_after": 0, "count": 10})
            r, _ = ngx.get("/peek", entity="flaky", timeout=0)
            assert r["ok"] is False and r["err_code"] == "throttled" and r["err_status"] == 503, r
            emu.admin("DELETE", "faults")

        def requests(op):
            return emu.admin("GET", "state")["counters"].get("requests." + op, 0)

        def receive_and_delete_500_after_delete_is_reported_not_retried():
            emu.admin("PUT", "entities/rd", {"kind": "queue", "lock_duration": 30})
            r, _ = ngx.get("/send", entity="rd", body="only once", id="rd-1")
            assert r["ok"], r
            before = requests("receive_and_delete")
            # the server deletes the message, then answers 500
            emu.admin("POST", "faults", {"operation": "receive_and_delete", "entity": "rd",
                                         "status": 500, "after": True, "count": 1})
            r, _ = ngx.get("/rd", entity="rd", timeout=0)
            emu.admin("DELETE", "faults")
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
            emu.admin("POST", "faults", {"operation": "send", "entity": "sq", "status": 500,
                                         "after": True, "count": 1})
            r, _ = ngx.get("/send", entity="sq", body="enqueued, then 500", id="sq-1")
            emu.admin("DELETE", "faults")
            assert r["ok"] is False and r["err_code"] == "unknown_outcome" and r["err_status"] == 500, r
            assert requests("send") - before == 1
            assert len(emu.entity_state("sq")["messages"]) == 1, emu.entity_state("sq")  # no duplicate
            # send_batch: the same
            before = requests("send")
            emu.admin("POST", "faults", {"operation": "send", "entity": "sq", "status": 500,
                                         "after": True, "count": 1})
            r, _ = ngx.get("/batch", entity="sq")
            emu.admin("DELETE", "faults")
            assert r["ok"] is False and r["step"] == "send_batch" and r["err_status"] == 500, r
            assert r["err_code"] == "unknown_outcome", r
            assert requests("send") - before == 1
            assert len(emu.entity_state("sq")["messages"]) == 3, emu.entity_state("sq")
            # a 503 (throttled, not applied) is retried
            before = requests("send")
            emu.admin("POST", "faults", {"operation": "send", "entity": "sq", "status": 503,
                                         "retry_after": 0, "count": 1})
            r, _ = ngx.get("/send", entity="sq", body="after a 503", id="sq-2")
            emu.admin("DELETE", "faults")
            assert r["ok"], r
            assert requests("send") - before == 2
            ids = [m["message_id"] for m in emu.entity_state("sq")["messages"]]
            assert ids.count("sq-2") == 1, ids
            # a 500 on a complete (idempotent on its lock) is retried
            emu.admin("PUT", "entities/sqc", {"kind": "queue", "lock_duration": 30})
            r, _ = ngx.get("/send", entity="sqc", body="complete after a 500", id="sq-3")
            assert r["ok"], r
            emu.admin("POST", "faults", {"operation": "complete", "entity": "sqc", "status": 500,
                                         "count": 1})
            r, _ = ngx.get("/race", entity="sqc", ops="complete")
            emu.admin("DELETE", "faults")
            assert r["r1_ok"], r
            assert emu.entity_state("sqc")["completed"].get("sq-3") == 1
            # past max_retries (3), a complete keeps trying while its lock is valid
            r, _ = ngx.get("/send", entity="sqc", body="complete after five 503s", id="sq-4")
            assert r["ok"], r
            emu.admin("POST", "faults", {"operation": "complete", "entity": "sqc", "status": 503,
                                         "retry_after": 0, "count": 5})
            r, _ = ngx.get("/race", entity="sqc", ops="complete")
            emu.admin("DELETE", "faults")
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
                emu.admin("POST", "faults", {"operation": "complete" if op == "complete" else "unlock",
                                             "entity": "unk", "drop": True, "after": True, "count": 1})
                r, _ = ngx.get("/race", entity="unk", ops=op, again=1)
                emu.admin("DELETE", "faults")
                assert r["r1_ok"] is False and r["r1_code"] == "unknown_outcome", r
                assert "may or may not" in r["r1_err"], r
                assert r["state"] == "unknown", r            # remembered on the message
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
            emu.admin("POST", "faults", {"operation": "complete", "entity": "unk", "status": 500,
                                         "after": True, "count": 1})
            r, _ = ngx.get("/race", entity="unk", ops="complete", again=1)
            emu.admin("DELETE", "faults")
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
                        if "rule" in spec:
                            rule = dict(spec["rule"], operation="send" if op == "send_batch" else op,
                                        entity=q, count=1)
                            emu.admin("POST", "faults", rule)
                        elif "proxy" in spec:
                            proxy.arm(op, spec["proxy"])
                        if spec.get("endpoint") == "refused":
                            s = socket.socket()
                            s.bind(("127.0.0.1", 0))
                            port = s.getsockname()[1]
                            s.close()
                        else:
                            port = proxy.port
                        r, _ = ngx.get("/matrix", op=op, entity=q, port=port, warm=f"{q}-warm",
                                       settle=1 if op in ("renew", "unlock", "complete") else 0)
                        emu.admin("DELETE", "faults")
                        outcome, _, extra = want.partition(" ")
                        code = {"unknown": "unknown_outcome", "protocol": "protocol",
                                "connection": "connection"}.get(outcome)
                        good = r.get("ok") if outcome == "ok" else r.get("err_code") == code
                        if extra == "orphaned":
                            good = good and r.get("orphaned", 0) >= 1
                        copies = [m["message_id"] for m in emu.entity_state(q)["messages"]]
                        if op in ("send", "send_batch") and fault != "stall":
                            ids = ["s1"] if op == "send" else ["b1", "b2"]
                            good = good and all(copies.count(i) == (1 if outcome == "ok" else copies.count(i))
                                                and copies.count(i) <= 1 for i in ids)
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
                c.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 419430400\r\n"
                          b"BrokerProperties: {}\r\n\r\n" + b"x" * 1024)
                held.append(c)                          # and nothing more
            lsock = loopback_server(announce_huge)
            try:
                emu.admin("PUT", "entities/huge", {"kind": "queue", "lock_duration": 5})
                t0 = time.monotonic()
                r, _ = ngx.get("/matrix", op="peek_lock", entity="huge", port=lsock.getsockname()[1], warm="")
                took = time.monotonic() - t0
                assert r["ok"] is False and r["err_code"] == "protocol", r
                assert "size limit" in r["err"], r
                assert took < 1.0, took                 # not after the 1 s read timeout
            finally:
                lsock.close()
                for c in held:
                    c.close()

        def errors_come_back_as_tables():
            r, _ = ngx.get("/send", entity="no-such-queue", body="x")
            assert r["ok"] is False and r["err_code"] == "entity_not_found" and r["err_status"] == 410, r

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

        def lost_lock_completes_nothing():
            emu.admin("PUT", "entities/lossy", {"kind": "queue", "lock_duration": 5})
            r, _ = ngx.get("/send", entity="lossy", body="will expire", id="l-1")
            assert r["ok"], r
            box = {}
            t = threading.Thread(target=lambda: box.update(r=ngx.get("/lock", 90, entity="lossy",
                                                                        until_lost=1)[0]))
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

        check("a second location answers", ping_answers)
        check("send, peek-lock, renew, abandon, complete over cosockets", send_and_peek)
        check("send_batch and receive_and_delete over cosockets", batch_and_receive_and_delete)
        check("errors come back as tables", errors_come_back_as_tables)
        check("503s and a dropped answer are retried over cosockets", retries_over_cosockets)
        check("a 500 after a receive-and-delete is an unknown outcome, not retried into a lost message",
              receive_and_delete_500_after_delete_is_reported_not_retried)
        check("a 500 on send/send_batch is an unknown outcome, not retried (no duplicate); a 503 is; "
              "a complete retries 500s "
              "and 503s past max_retries",
              send_500_is_not_retried_503_is)
        check("two light threads settling one message: one request, the other 'being settled'",
              two_light_threads_settle_once)
        check("a settle whose answer was lost and whose retry finds no lock: unknown_outcome",
              complete_with_lost_answer_is_unknown_outcome)
        check("the fault matrix (tests/faults/matrix.json) over cosockets", fault_matrix_over_cosockets)
        check("an answer over the size limit is refused as it streams in", huge_answer_is_refused_as_it_streams_in)
        check("long poll does not block the worker; a 5 s lock is renewed across lock durations "
              "and completed once", long_poll_does_not_block_and_renewal_spans_lock_durations)
        check("three handlers hold locks at once in one worker", concurrent_handlers_share_the_renewer)
        check("handler failure abandons", handler_failure_abandons)
        # last: it advances the emulator clock
        check("a lock lost while the handler runs completes nothing", lost_lock_completes_nothing)
        log = ngx.log()
        check("no Lua errors in the nginx log",
              lambda: (_ for _ in ()).throw(AssertionError(log[-3000:]))
              if any(bad in log for bad in ("lua entry thread aborted", "runtime error",
                                            "writing a global Lua variable", "[alert]", "[crit]",
                                            "[emerg]")) else None)
    finally:
        if ngx:
            ngx.stop()
        emu.stop()
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"nginx: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
