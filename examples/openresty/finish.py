"""Finish in Python a job whose lock an OpenResty worker took.

examples/openresty/nginx.conf's ``/handoff`` location peek-locks a message of
``PEEKLOCK_HANDOFF_ENTITY`` and answers its lock handle; this process attaches
it, keeps it renewed while it works, and completes it (or abandons it when the
work raises). Over REST a lock is a URL that any holder of a credential for the
namespace may renew or settle, so the lock moves with the job.

    PEEKLOCK_CONNECTION_STRING="$CONN" .venv/bin/python examples/openresty/finish.py \\
        "http://127.0.0.1:$PORT/handoff"      # PORT: the example's @PORT@

The handle is a secret (it carries the lock token): fetch it from your own
worker only, never print or log it.
"""

import os
import sys
import urllib.request

import peeklock


def work(msg: peeklock.Message) -> None:
    """The long job (the message's body stays with the queue: attach gives its entity,
    sequence number and MessageId; fetch the job's data by those)."""
    print(f"finishing job {msg.message_id} (sequence number {msg.sequence_number}) in Python")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=30) as r:
        if r.status == 204:
            print("no job waiting")
            return 0
        handle = r.read().decode().strip()
    with peeklock.Client.from_connection_string(os.environ["PEEKLOCK_CONNECTION_STRING"]) as client:
        with client.attach(handle) as msg:  # renewed while the block runs, completed when it ends
            work(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
