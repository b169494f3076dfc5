"""Hand a locked message over to another process: the receiver peek-locks, the
worker renews and completes. Over REST a lock is a URL that any holder of a token
for the namespace may renew or settle, so the work can move to a subprocess or a
job pool while the lock stays safe.

    .venv/bin/python examples/handoff.py          # starts its own emulator

The handle is a secret (it carries the lock token): pass it over a pipe, never a
log or a command line.
"""

import subprocess
import sys
import time

import peeklock
from peeklock.testing import Emulator

WORKER = """
import sys, time, peeklock
client = peeklock.Client.from_connection_string(sys.argv[1])
with client.attach(sys.stdin.readline().strip()) as msg:   # renewed here now
    time.sleep(float(sys.argv[2]))                           # the long work
    print(f"worker {msg.message_id}: done", flush=True)
client.close()                                               # completed on leaving the block
"""


def main() -> int:
    work_seconds = 7.0  # longer than the 5 s lock: the worker's renewer keeps it
    with Emulator.start("--queue", "jobs", "--lock-duration", "5") as emu:
        with peeklock.Client.from_connection_string(emu.connection_string) as receiver:
            receiver.send("jobs", b"resize image 17", message_id="job-17")
            msg = receiver.peek_lock("jobs", timeout=5)
            assert msg is not None
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, emu.connection_string, str(work_seconds)],
                stdin=subprocess.PIPE,
                text=True,
            )
            assert worker.stdin is not None
            worker.stdin.write(msg.lock_handle() + "\n")
            worker.stdin.close()
            msg.release()  # the receiver lets go: no renewing from here
            t0 = time.monotonic()
            rc = worker.wait(60)
            print(f"receiver: worker exited {rc} after {time.monotonic() - t0:.1f} s")
        done = emu.entity_state("jobs")["completed"]
        print(f"completed per the emulator: {done}")
        return 0 if rc == 0 and done == {"job-17": 1} else 1


if __name__ == "__main__":
    sys.exit(main())
