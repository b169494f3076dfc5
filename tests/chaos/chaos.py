#!/usr/bin/env python3
"""At-least-once chaos run: proves that peek-lock with auto-renewal loses no
message and completes none twice while workers die, the network fails and the
emulator is killed and restarted on the same data folder.

    python tests/chaos/chaos.py --messages 10000 --workers 4 --concurrency 8

1. starts the emulator (``--data-dir``, short lock duration) and sends M
   uniquely identified messages, each carrying how long its handler works;
2. runs K worker processes (tests/chaos/worker.py: ``Client.process`` with
   auto-renewal) that log every execution durably (fsync) before returning;
3. meanwhile SIGKILLs workers at random and starts new ones, injects faults
   (503 with Retry-After, 500, delays, dropped connections before and after
   the operation) and SIGKILLs the emulator once or twice, restarting it on the
   same port and data folder;
4. at the end proves, from the emulator's state and the workers' logs, the
   checks listed in docs/chaos.md, prints the figures and a last line
   ``chaos: N passed, M failed``; exits 1 when any check failed.

Every random choice comes from ``--seed``. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ENTITY = "chaos"


def positive(kind):
    def conv(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s!r}")
        return v

    return conv


def non_negative(kind):
    def conv(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}")
        if v < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {s!r}")
        return v

    return conv


def probability(s: str) -> float:
    v = non_negative(float)(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {s!r}")
    return v


def downtimes(s: str) -> List[float]:
    try:
        vals = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of seconds, got {s!r}")
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"a comma-separated list of seconds >= 0, got {s!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chaos.py",
        description="peeklock at-least-once chaos run (see docs/chaos.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("load")
    g.add_argument("--messages", type=positive(int), default=10000, help="messages sent (M)")
    g.add_argument("--workers", type=positive(int), default=4, help="worker processes alive at a time (K)")
    g.add_argument("--concurrency", type=positive(int), default=8, help="handler threads per worker")
    g.add_argument("--lock-duration", type=positive(float), default=5.0, help="queue lock duration, seconds")
    g.add_argument(
        "--max-delivery-count",
        type=positive(int),
        default=50,
        help="queue MaxDeliveryCount (high: chaos redeliveries must not dead-letter)",
    )
    g.add_argument("--short-ms", type=non_negative(int), default=100, help="short handlers: 0..N ms")
    g.add_argument("--medium-fraction", type=probability, default=0.25, help="fraction of handlers working 0.5..3 s")
    g.add_argument(
        "--long-fraction", type=probability, default=0.04, help="fraction of handlers working 1.5..3 lock durations"
    )
    g.add_argument(
        "--poison",
        type=non_negative(int),
        default=0,
        help="messages whose handler always fails (must end in the dead-letter queue)",
    )
    g = p.add_argument_group("chaos")
    g.add_argument("--seed", type=int, default=7, help="seed of every random choice")
    g.add_argument(
        "--kill-interval",
        type=non_negative(float),
        default=3.0,
        help="mean seconds between worker SIGKILLs (exponential; 0: no kills)",
    )
    g.add_argument(
        "--term-fraction",
        type=probability,
        default=0.25,
        help="fraction of the worker stops that are a graceful SIGTERM (drain) instead of a SIGKILL",
    )
    g.add_argument(
        "--drain-timeout",
        type=non_negative(float),
        default=3.0,
        help="workers' drain timeout on SIGTERM; handlers still running then are abandoned",
    )
    g.add_argument(
        "--calm-at",
        type=probability,
        default=0.9,
        help="stop killing workers once this fraction is completed, so long handlers can finish (faults go on)",
    )
    g.add_argument(
        "--emulator-restarts",
        type=non_negative(int),
        default=2,
        help="emulator SIGKILL + restart cycles, spread over the run",
    )
    g.add_argument(
        "--restart-downtime",
        type=downtimes,
        default=[1.0, 7.0],
        help="seconds the emulator stays down, per restart (cycled); more than the "
        "lock duration makes every held lock expire",
    )
    g.add_argument("--fault-503", type=probability, default=0.05, help="503 ServerBusy with Retry-After")
    g.add_argument("--retry-after", type=non_negative(float), default=1, help="Retry-After of the 503s")
    g.add_argument("--fault-500", type=probability, default=0.02, help="500 internal error")
    g.add_argument(
        "--fault-delay",
        type=probability,
        default=0.08,
        help="added delay (long enough to hold a renew past the lock's expiry)",
    )
    g.add_argument("--delay-ms", type=non_negative(int), default=2500, help="size of the added delay")
    g.add_argument("--fault-drop", type=probability, default=0.01, help="connection dropped before the operation")
    g.add_argument(
        "--fault-drop-after",
        type=probability,
        default=0.005,
        help="connection dropped after the operation took effect (answer lost)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--duration",
        type=positive(float),
        default=900.0,
        help="give up (and fail) when not everything is completed after this many seconds",
    )
    g.add_argument(
        "--poll-interval",
        type=positive(float),
        default=1.0,
        help="seconds between progress polls of the emulator state",
    )
    g.add_argument(
        "--overlap-tolerance",
        type=non_negative(float),
        default=0.25,
        help="seconds two executions may seem to overlap (handler polling, clock reads)",
    )
    g.add_argument("--workdir", help="keep the data folder and logs here (default: a temp dir, removed)")
    g.add_argument("--keep", action="store_true", help="keep the temp dir")
    g.add_argument("--json", metavar="FILE", help="also write the figures and checks as JSON")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


# ---------------------------------------------------------------------------------------------
# emulator
# ---------------------------------------------------------------------------------------------


class Emulator:
    def __init__(self, a: argparse.Namespace, data_dir: str, log_path: str) -> None:
        self.a = a
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.conn = ""
        self.lifetimes = 0
        self.fault_hits_done = 0  # hits of earlier lifetimes
        self.fault_hits_now = 0  # last reading of this lifetime
        self.renews_done = 0
        self.renews_now = 0

    def start(self, timeout: float = 30.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "peeklock.emulator",
            "--port",
            str(self.port),
            "--queue",
            ENTITY,
            "--lock-duration",
            str(self.a.lock_duration),
            "--max-delivery-count",
            str(self.a.max_delivery_count),
            # the exactly-once checks read every message's completion count
            "--completions-kept",
            str(max(100000, 2 * self.a.messages)),
            "--data-dir",
            self.data_dir,
        ]
        err = open(self.log_path, "ab")
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            if "ready: " in line:
                break
            self.proc.wait()
            if time.monotonic() > deadline or self.port == 0:
                raise SystemExit(f"chaos: the emulator did not start (see {self.log_path})")
            time.sleep(0.2)  # the port may still be held for a moment after a SIGKILL
        err.close()
        self.conn = line.split("ready: ", 1)[1].strip()
        if self.port == 0:
            self.port = int(self.conn.split("sb://", 1)[1].split(";", 1)[0].rsplit(":", 1)[1])
        self.lifetimes += 1
        self.fault_hits_now = 0
        self.renews_now = 0

    def kill(self) -> None:
        self.sample()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.fault_hits_done += self.fault_hits_now
        self.renews_done += self.renews_now
        self.fault_hits_now = self.renews_now = 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/$admin/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def state(self) -> Dict[str, Any]:
        return self.admin("GET", "state")

    def sample(self) -> None:
        """Reads the fault hits and renew count of this lifetime (lost on SIGKILL)."""
        try:
            st = self.admin("GET", "faults", timeout=5)
            self.fault_hits_now = sum(r.get("hits", 0) for r in st.get("faults", []))
        except (OSError, ValueError):
            pass

    def note_counters(self, st: Dict[str, Any]) -> None:
        self.renews_now = int(st.get("counters", {}).get("requests.renew", 0))

    def arm_faults(self, seed: int) -> None:
        a = self.a
        rules = []
        if a.fault_drop:
            rules.append({"operation": "any", "drop": True, "probability": a.fault_drop})
        if a.fault_drop_after:
            rules.append({"operation": "any", "drop": True, "after": True, "probability": a.fault_drop_after})
        if a.fault_503:
            rules.append({"operation": "any", "status": 503, "retry_after": a.retry_after, "probability": a.fault_503})
        if a.fault_500:
            rules.append({"operation": "any", "status": 500, "probability": a.fault_500})
        if a.fault_delay and a.delay_ms:
            rules.append({"operation": "any", "delay_ms": a.delay_ms, "probability": a.fault_delay})
        for i, r in enumerate(rules):
            r["entity"] = ENTITY
            r["seed"] = seed * 1000 + i
            self.admin("POST", "faults", r)


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


class Workers:
    def __init__(self, a: argparse.Namespace, logdir: str) -> None:
        self.a = a
        self.logdir = logdir
        self.n = 0
        self.alive: Dict[str, subprocess.Popen] = {}
        self.killed: Dict[str, float] = {}  # worker -> time of its SIGKILL
        self.termed: Dict[str, float] = {}  # worker -> time of its SIGTERM (graceful stop)
        self.exited: Dict[str, float] = {}  # worker -> when its exit was seen
        self.stopping: Dict[str, Tuple[subprocess.Popen, float]] = {}
        self.crashed: Dict[str, int] = {}  # worker -> exit status, exits nobody asked for

    def spawn(self, conn: str) -> str:
        self.n += 1
        wid = f"w{self.n}"
        err = open(os.path.join(self.logdir, f"{wid}.stderr"), "wb")
        cmd = [
            sys.executable,
            os.path.join(HERE, "worker.py"),
            "--conn",
            conn,
            "--entity",
            ENTITY,
            "--log",
            os.path.join(self.logdir, f"{wid}.jsonl"),
            "--worker",
            wid,
            "--concurrency",
            str(self.a.concurrency),
            "--max-renew",
            str(max(600.0, self.a.lock_duration * 20)),
            "--drain-timeout",
            str(self.a.drain_timeout),
        ]
        self.alive[wid] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        return wid

    def kill(self, wid: str) -> None:
        p = self.alive.pop(wid)
        self.killed[wid] = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait()

    def terminate(self, wid: str) -> None:
        p = self.alive.pop(wid)
        self.termed[wid] = time.time()
        p.send_signal(signal.SIGTERM)
        self.stopping[wid] = (p, time.monotonic() + self.a.drain_timeout + 20)

    def reap(self) -> List[str]:
        for wid, (p, deadline) in list(self.stopping.items()):
            rc = p.poll()
            if rc is None and time.monotonic() > deadline:
                p.kill()
                rc = p.wait()
                self.crashed[wid] = rc  # did not stop on SIGTERM
            if rc is not None:
                del self.stopping[wid]
                self.exited[wid] = time.time()
                if rc != 0:
                    self.crashed[wid] = rc
        gone = []
        for wid, p in list(self.alive.items()):
            rc = p.poll()
            if rc is not None:
                del self.alive[wid]
                self.crashed[wid] = rc
                gone.append(wid)
        return gone

    def stop_all(self, timeout: float = 60.0) -> None:
        for wid, p in self.alive.items():
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for wid, (p, _) in self.stopping.items():
            self.alive[wid] = p
        self.stopping.clear()
        for wid, p in list(self.alive.items()):
            try:
                rc = p.wait(max(0.1, deadline - time.monotonic()))
                if rc != 0:
                    self.crashed[wid] = rc
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.crashed[wid] = -9
        self.alive.clear()


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def make_messages(a: argparse.Namespace, rng: random.Random) -> List[Tuple[str, int, bool]]:
    out = []
    poison = set(rng.sample(range(a.messages), min(a.poison, a.messages)))
    ld = a.lock_duration
    for i in range(a.messages):
        r = rng.random()
        if r < a.long_fraction:
            work = int(rng.uniform(1.5 * ld, 3.0 * ld) * 1000)
        elif r < a.long_fraction + a.medium_fraction:
            work = rng.randint(500, 3000)
        else:
            work = rng.randint(0, a.short_ms)
        out.append((f"m{i:06d}", 0 if i in poison else work, i in poison))
    return out


def send_all(conn: str, msgs: List[Tuple[str, int, bool]]) -> None:
    import peeklock
    from peeklock import OutgoingMessage

    with peeklock.Client.from_connection_string(conn) as c:
        for i in range(0, len(msgs), 100):
            c.send_batch(
                ENTITY,
                [
                    OutgoingMessage(f"chaos {mid}", message_id=mid, properties={"work_ms": work, "poison": poison})
                    for mid, work, poison in msgs[i : i + 100]
                ],
            )


SEND_ENTITY, RD_ENTITY = "chaos-send", "chaos-rd"


def outcome_proof(emu: "Emulator", seed: int, n: int) -> Tuple[List[Tuple[str, bool, str]], Dict[str, Any]]:
    """Answers dropped after the server acted, on reused keep-alive connections: a send
    (single and batch) or a receive-and-delete must never succeed silently twice or lose
    a message silently. Counts the stored copies of every sent message id; each copy
    beyond one, and each message removed but not delivered, must be explained by an
    OutcomeUnknownError the caller saw."""
    import peeklock
    from peeklock import OutgoingMessage

    for ent in (SEND_ENTITY, RD_ENTITY):
        emu.admin("PUT", f"entities/{ent}", {"kind": "queue", "lock_duration": 5})
    rules = [
        {"operation": "send", "entity": SEND_ENTITY, "drop": True, "after": True, "probability": 0.15},
        {"operation": "send", "entity": SEND_ENTITY, "drop": True, "probability": 0.05},
        {"operation": "receive_and_delete", "entity": RD_ENTITY, "drop": True, "after": True, "probability": 0.15},
    ]
    for i, r in enumerate(rules):
        r["seed"] = seed * 7919 + i
    unknown_send: set = set()
    ok_send: set = set()
    delivered: Counter = Counter()
    unknown_rd = 0
    with peeklock.Client.from_connection_string(emu.conn) as c:
        for i in range(n // 10):  # the receive-and-delete stock, unfaulted
            c.send_batch(RD_ENTITY, [OutgoingMessage(b"r", message_id=f"r{i:04d}-{j}") for j in range(10)])
        emu.admin("POST", "faults", rules)
        for i in range(n):
            ids = [f"s{i:05d}"] if i % 4 else [f"s{i:05d}a", f"s{i:05d}b"]
            try:
                if len(ids) == 1:
                    c.send(SEND_ENTITY, b"s", message_id=ids[0])
                else:
                    c.send_batch(SEND_ENTITY, [OutgoingMessage(b"s", message_id=x) for x in ids])
                ok_send.update(ids)
            except peeklock.OutcomeUnknownError:
                unknown_send.update(ids)
        for _ in range(4 * n):
            try:
                m = c.receive_and_delete(RD_ENTITY, timeout=0)
            except peeklock.OutcomeUnknownError:
                unknown_rd += 1
                continue
            if m is None:
                break
            delivered[m.message_id] += 1
        stats = c.stats()
    hits = sum(r.get("hits", 0) for r in emu.admin("GET", "faults").get("faults", []))
    emu.admin("DELETE", "faults")
    st = emu.state()["entities"]
    copies = Counter(m["message_id"] for m in st[SEND_ENTITY]["messages"])
    left_rd = st[RD_ENTITY]["message_count"]
    sent = ok_send | unknown_send
    dup = sorted(x for x, k in copies.items() if k > 1)
    dup_unexplained = [x for x in dup if x not in unknown_send]
    ok_not_once = sorted(x for x in ok_send if copies.get(x, 0) != 1)
    rd_missing = n - left_rd - sum(delivered.values())
    rd_twice = sorted(x for x, k in delivered.items() if k > 1)
    figures = {
        "sends": len(sent),
        "send_unknown": len(unknown_send),
        "send_duplicates": len(dup),
        "rd_delivered": sum(delivered.values()),
        "rd_unknown": unknown_rd,
        "rd_removed_undelivered": rd_missing,
        "fault_hits": hits,
        "reused_connections": stats["reused_connections"],
    }
    checks = [
        (
            "answers dropped after the server acted, on reused connections (sends and receives)",
            hits > 0 and stats["reused_connections"] > 0 and bool(unknown_send) and unknown_rd > 0,
            f"fault hits {hits}, reused {stats['reused_connections']}, unknown sends {len(unknown_send)}, "
            f"unknown receives {unknown_rd}",
        ),
        ("every send reported OK stored exactly once", not ok_not_once, f"{ok_not_once[:5]}"),
        (
            "every stored duplicate explained by an OutcomeUnknownError the sender saw",
            not dup_unexplained and not (set(copies) - sent),
            f"{dup_unexplained[:5]}",
        ),
        (
            "every message removed by receive-and-delete delivered once, or an OutcomeUnknownError said so",
            0 <= rd_missing <= unknown_rd and not rd_twice,
            f"undelivered {rd_missing}, unknown {unknown_rd}, twice {rd_twice[:5]}",
        ),
    ]
    return checks, figures


def run(a: argparse.Namespace, workdir: str) -> Dict[str, Any]:
    rng = random.Random(a.seed)
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    emu = Emulator(a, os.path.join(workdir, "data"), os.path.join(workdir, "emulator.stderr"))
    workers = Workers(a, logdir)
    msgs = make_messages(a, rng)
    poison_ids = {mid for mid, _, p in msgs if p}
    expected = a.messages - len(poison_ids)
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    f: Dict[str, Any] = {"seed": a.seed, "workdir": workdir}
    try:
        emu.start()
        f["outcome_checks"], f["outcome_figures"] = outcome_proof(emu, a.seed, 200)
        say(f"chaos: outcome proof {f['outcome_figures']}")
        t_send = time.monotonic()
        send_all(emu.conn, msgs)
        f["send_seconds"] = time.monotonic() - t_send
        st = emu.state()
        f["accepted"] = st["entities"][ENTITY]["message_count"]
        say(
            f"chaos: sent {a.messages} messages in {f['send_seconds']:.1f} s "
            f"(emulator holds {f['accepted']}); port {emu.port}, workdir {workdir}"
        )

        emu.arm_faults(a.seed)
        t0 = time.monotonic()
        for _ in range(a.workers):
            workers.spawn(emu.conn)
        restart_at = sorted(
            (i + 1) / (a.emulator_restarts + 1) + rng.uniform(-0.08, 0.08) for i in range(a.emulator_restarts)
        )
        restarts: List[Dict[str, float]] = []
        next_kill = t0 + (rng.expovariate(1 / a.kill_interval) if a.kill_interval else float("inf"))
        next_poll = t0
        done = completed = 0
        timed_out = False
        while True:
            now = time.monotonic()
            if now - t0 > a.duration:
                timed_out = True
                break
            for wid in workers.reap():
                say(f"chaos: worker {wid} exited on its own (status {workers.crashed[wid]}); replacing it")
                workers.spawn(emu.conn)
            if now >= next_poll:
                next_poll = now + a.poll_interval
                try:
                    st = emu.state()
                except (OSError, ValueError):
                    st = None
                if st is not None:
                    emu.note_counters(st)
                    ent = st["entities"][ENTITY]
                    completed = sum(1 for mid, n in ent["completed"].items() if n > 0)
                    dlq = len(ent.get("dead_letter", []))
                    frac = completed / expected if expected else 1.0
                    if restart_at and frac >= restart_at[0]:
                        restart_at.pop(0)
                        down = a.restart_downtime[len(restarts) % len(a.restart_downtime)]
                        say(f"chaos: SIGKILL emulator at {completed}/{expected} completed, down {down:.1f} s")
                        t_k = time.time()
                        emu.kill()
                        time.sleep(down)  # the outage itself, not a wait for an event
                        emu.start()
                        emu.arm_faults(a.seed + len(restarts) + 1)
                        restarts.append(
                            {"at_completed": completed, "down_s": down, "killed_at": t_k, "back_at": time.time()}
                        )
                        continue
                    if not a.quiet:
                        print(
                            f"chaos: t={now - t0:5.1f}s completed {completed}/{expected} "
                            f"dlq {dlq} left {ent['message_count']} kills {len(workers.killed)} "
                            f"restarts {len(restarts)}",
                            flush=True,
                        )
                    if (
                        completed >= expected
                        and ent["message_count"] == 0
                        and not restart_at
                        and dlq == len(poison_ids)
                    ):
                        done = 1
                        break
            if now >= next_kill and workers.alive and completed < a.calm_at * expected:
                wid = rng.choice(sorted(workers.alive))
                if rng.random() < a.term_fraction:
                    workers.terminate(wid)
                else:
                    workers.kill(wid)
                workers.spawn(emu.conn)
                next_kill = now + rng.expovariate(1 / a.kill_interval)
            time.sleep(0.05)
        t_end = time.monotonic()
        emu.sample()
        f["processing_seconds"] = t_end - t0
        f["timed_out"] = timed_out
        f["finished"] = bool(done)
        # stop cleanly: no faults, workers drain (nothing should be in flight)
        try:
            emu.admin("DELETE", "faults")
        except (OSError, ValueError):
            pass
        emu.fault_hits_done += emu.fault_hits_now
        emu.fault_hits_now = 0
        workers.stop_all()
        st = emu.state()
        emu.note_counters(st)
        emu.renews_done += emu.renews_now
        f["restarts"] = restarts
        f["fault_hits"] = emu.fault_hits_done
        f["server_renews"] = emu.renews_done
    finally:
        workers.stop_all(timeout=10)
        emu.stop()
    return analyse(a, f, st, logdir, workers, {mid for mid, _, _ in msgs}, poison_ids)


# ---------------------------------------------------------------------------------------------
# the proof
# ---------------------------------------------------------------------------------------------

EXPLAINED = {
    "worker killed",
    "lock reported lost",
    "lock expired while settling",
    "settle failed (reported error)",
    "handler failed",
    "abandoned by a graceful stop",
}


def analyse(
    a: argparse.Namespace,
    f: Dict[str, Any],
    st: Dict[str, Any],
    logdir: str,
    workers: Workers,
    sent: set,
    poison_ids: set,
) -> Dict[str, Any]:
    execs: Dict[str, Dict[str, Any]] = {}
    stats_last: Dict[str, Dict[str, Any]] = {}
    bye: Dict[str, float] = {}
    for name in sorted(os.listdir(logdir)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(logdir, name), "rb") as fh:
            for raw in fh:
                try:
                    r = json.loads(raw)
                except ValueError:
                    continue  # a SIGKILL can only cut the very last line
                ev = r.get("ev")
                if ev == "stats":
                    stats_last[r["w"]] = r
                elif ev == "bye":
                    bye[r["w"]] = r["t"]
                elif ev in ("start", "end", "outcome"):
                    x = execs.setdefault(r["x"], {"w": r["w"], "mid": r["mid"]})
                    x[ev] = r
    ent = st["entities"][ENTITY]
    completed: Dict[str, int] = ent["completed"]
    dlq_ids = [m["message_id"] for m in ent.get("dead_letter", [])]
    by_mid: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for x in execs.values():
        if "start" in x:
            by_mid[x["mid"]].append(x)
    for lst in by_mid.values():
        lst.sort(key=lambda x: x["start"]["t"])

    def reason(x: Dict[str, Any]) -> str:
        o = x.get("outcome")
        if o is not None:
            oc = o["outcome"]
            if oc == "completed":
                return "completed"
            if oc == "lost":
                return "lock reported lost"
            if oc == "lost-at-settle":
                # the client stopped renewing when the handler returned; the lock may run
                # out while complete is retried (503 Retry-After, emulator down)
                if o.get("remaining", 0) <= o.get("settle_s", 0) + a.overlap_tolerance:
                    return "lock expired while settling"
                return "silent lock loss"
            if oc == "settle-error":
                return "settle failed (reported error)"
            if oc == "abandoned":
                return "handler failed"
            if oc == "drained":
                return "abandoned by a graceful stop"
            return "unexplained: " + oc
        kt = workers.killed.get(x["w"])
        if kt is not None and kt >= x["start"]["t"]:
            return "worker killed"
        tt = workers.termed.get(x["w"])
        if tt is not None and x["w"] in bye:
            return "abandoned by a graceful stop"
        return "unexplained: no outcome, worker alive"

    lost = [m for m in sent - poison_ids if completed.get(m, 0) == 0]
    twice = [m for m in sent if completed.get(m, 0) > 1]
    foreign = [m for m in completed if m not in sent]
    poison_completed = [m for m in poison_ids if completed.get(m, 0)]
    no_handler = []  # completed without a handler run that finished normally
    why: Counter = Counter()
    unexplained: List[str] = []
    silent: List[str] = []
    overlaps: List[str] = []
    client_double: List[str] = []
    dc_bad: List[str] = []
    handovers: List[float] = []  # next execution's start - previous one's end of work
    multi = 0
    executions = 0
    for mid in sorted(sent):
        lst = by_mid.get(mid, [])
        executions += len(lst)
        if completed.get(mid, 0) and not any("end" in x and x["end"]["lost_at"] is None for x in lst):
            no_handler.append(mid)
        dcs = [x["start"]["dc"] for x in lst]
        if any(b <= a_ for a_, b in zip(dcs, dcs[1:])):
            dc_bad.append(f"{mid}: delivery counts {dcs} in start order")
        oks = [x for x in lst if x.get("outcome", {}).get("outcome") == "completed"]
        if len(oks) > 1:
            client_double.append(mid)
        # overlap: an execution may start only after the previous one stopped working
        for i, e1 in enumerate(lst):
            end = e1["end"]["t1"] if "end" in e1 else workers.killed.get(e1["w"], bye.get(e1["w"], float("inf")))
            if i + 1 < len(lst) and end != float("inf"):
                handovers.append(lst[i + 1]["start"]["t"] - end)
            for e2 in lst[i + 1 :]:
                if e2["start"]["t"] < end - a.overlap_tolerance:
                    overlaps.append(
                        f"{mid}: {e1['start']['x']} worked until {end:.3f}, "
                        f"{e2['start']['x']} started at {e2['start']['t']:.3f}"
                    )
        if mid in poison_ids or len(lst) <= 1:
            continue
        multi += 1
        final = oks[0] if oks else lst[-1]
        for x in lst:
            if x is final:
                continue
            r = reason(x)
            why[r] += 1
            if r == "silent lock loss":
                silent.append(f"{mid} {x['start']['x']}: {x['outcome']}")
            elif r not in EXPLAINED:
                unexplained.append(f"{mid} {x['start']['x']}: {r}")

    renewals = sum(int(s.get("renewals", 0)) for s in stats_last.values())
    lost_events = sum(int(s.get("events", {}).get("lost", 0)) for s in stats_last.values())
    outcomes = Counter(x["outcome"]["outcome"] for x in execs.values() if "outcome" in x)
    f.update(
        {
            "messages_sent": len(sent),
            "poison": len(poison_ids),
            "completed": sum(1 for m in sent if completed.get(m, 0) > 0),
            "lost": len(lost),
            "completed_twice": len(twice),
            "executions": executions,
            "executed_more_than_once": multi,
            "extra_executions": sum(why.values()),
            "extra_execution_reasons": dict(why),
            "renewals": renewals,
            "locks_reported_lost": lost_events,
            "outcomes": dict(outcomes),
            "worker_kills": len(workers.killed),
            "worker_graceful_stops": len(workers.termed),
            "worker_crashes": dict(workers.crashed),
            "emulator_restarts": len(f.get("restarts", [])),
            "dead_letter": len(dlq_ids),
            "left_in_queue": ent["message_count"],
            "min_handover_s": min(handovers) if handovers else None,
            "throughput": (
                sum(1 for m in sent if completed.get(m, 0) > 0) / f["processing_seconds"]
                if f.get("processing_seconds")
                else 0.0
            ),
        }
    )
    checks: List[Tuple[str, bool, str]] = [
        ("every sent message accepted by the emulator", f["accepted"] == len(sent), f"{f['accepted']} of {len(sent)}"),
        ("lost = 0 (every message completed)", not lost, f"lost {len(lost)}: {lost[:5]}"),
        ("no message completed twice", not twice and not foreign, f"twice {twice[:5]}, unknown ids {foreign[:5]}"),
        ("no completion without a finished handler run", not no_handler, f"{no_handler[:5]}"),
        ("the client never reported two completions of one message", not client_double, f"{client_double[:5]}"),
        (
            "every duplicate execution explained (worker died / lock reported lost)",
            not unexplained,
            f"{unexplained[:5]}",
        ),
        (
            "no silent lock loss (complete found the lock gone while the client thought it held)",
            not silent,
            f"{silent[:5]}",
        ),
        ("no two executions of a message overlapped", not overlaps, f"{overlaps[:5]}"),
        ("each execution of a message had a higher delivery count than the one before", not dc_bad, f"{dc_bad[:5]}"),
        (
            "dead-letter queue holds exactly the poison messages",
            sorted(dlq_ids) == sorted(poison_ids) and not poison_completed,
            f"dead-lettered {len(dlq_ids)}, poison {len(poison_ids)}",
        ),
        ("queue empty at the end", ent["message_count"] == 0, f"{ent['message_count']} left"),
        ("no worker exited on its own", not workers.crashed, f"{workers.crashed}"),
        (
            "the chaos happened (kills, restarts, faults as asked)",
            (len(workers.killed) > 0 or not a.kill_interval)
            and len(f.get("restarts", [])) == a.emulator_restarts
            and (
                f.get("fault_hits", 0) > 0
                or not (a.fault_503 or a.fault_500 or a.fault_drop or a.fault_delay or a.fault_drop_after)
            ),
            f"kills {len(workers.killed)}, restarts {len(f.get('restarts', []))}, faults {f.get('fault_hits', 0)}",
        ),
    ]
    checks += f.get("outcome_checks", [])
    f["checks"] = [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]
    return f


def report(f: Dict[str, Any]) -> Tuple[int, int]:
    print("chaos figures:")
    rows = [
        ("messages sent", f["messages_sent"]),
        ("poison messages (expected in the dead-letter queue)", f["poison"]),
        ("completed", f["completed"]),
        ("lost", f["lost"]),
        ("completed twice", f["completed_twice"]),
        ("handler executions", f["executions"]),
        ("messages executed more than once", f["executed_more_than_once"]),
        ("extra executions", f["extra_executions"]),
    ]
    for k, v in rows:
        print(f"  {k:52s} {v}")
    for k, v in sorted(f["extra_execution_reasons"].items(), key=lambda kv: -kv[1]):
        print(f"    why: {k:47s} {v}")
    for k, v in [
        ("settlement outcomes", ", ".join(f"{k} {v}" for k, v in sorted(f["outcomes"].items()))),
        ("renewals (clients' renewers)", f["renewals"]),
        ("renew requests seen by the emulator", f["server_renews"]),
        ("locks reported lost (renewer events)", f["locks_reported_lost"]),
        ("worker kills (SIGKILL)", f["worker_kills"]),
        ("worker graceful stops (SIGTERM, drain)", f["worker_graceful_stops"]),
        ("emulator restarts (SIGKILL)", f["emulator_restarts"]),
        ("injected faults", f["fault_hits"]),
        ("dead-lettered", f["dead_letter"]),
        (
            "closest hand-over between two executions, s",
            "-" if f["min_handover_s"] is None else f"{f['min_handover_s']:.3f}",
        ),
        ("processing time, s", f"{f['processing_seconds']:.1f}"),
        ("throughput, messages/s", f"{f['throughput']:.1f}"),
    ]:
        print(f"  {k:52s} {v}")
    passed = failed = 0
    for c in f["checks"]:
        if c["ok"]:
            passed += 1
            print(f"  PASS {c['check']}")
        else:
            failed += 1
            print(f"  FAIL {c['check']}: {c['detail']}")
    return passed, failed


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.poison and a.poison > a.messages:
        print("chaos.py: error: --poison must not exceed --messages", file=sys.stderr)
        return 2
    if a.poison and a.max_delivery_count > 20:
        print(
            "chaos.py: note: poison messages need max-delivery-count deliveries each "
            f"({a.max_delivery_count}); consider --max-delivery-count 10",
            file=sys.stderr,
        )
    tmp = None
    if a.workdir:
        workdir = a.workdir
        if os.path.exists(os.path.join(workdir, "data")):
            print(f"chaos.py: error: --workdir {workdir} already holds a data folder", file=sys.stderr)
            return 2
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tmp = tempfile.mkdtemp(prefix="peeklock-chaos-")

    def tidy(ok: bool) -> None:
        if tmp and not a.keep and ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"chaos: logs and data kept in {workdir}", flush=True)

    try:
        f = run(a, workdir)
    except (Exception, SystemExit) as e:
        # the harness itself broke (emulator would not start, state unreadable, ...):
        # no proof, so one failed check
        print(f"chaos: the run could not finish: {e}", flush=True)
        tidy(False)
        print("chaos: 0 passed, 1 failed")
        return 1
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(f, fh, indent=2, default=str)
    passed, failed = report(f)
    tidy(failed == 0)
    print(f"chaos: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
