#!/usr/bin/env python3
"""Runs a test program against a fresh emulator.

Starts `python3 -m peeklock.emulator --port 0` (PYTHONPATH=<repo>/python) on
127.0.0.1, waits for its ready line, exports PEEKLOCK_CONNECTION_STRING, runs
the program given on the command line, then stops the emulator (SIGTERM, then
SIGKILL) whatever happened. Extra emulator flags may be given in
PEEKLOCK_EMULATOR_ARGS. Exit status: the program's.
"""

import os
import shlex
import signal
import subprocess
import sys
import threading

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
READY = "peeklock emulator ready: "


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: with_emulator.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The emulator runs in a clean environment: no sanitizer runtime preloads.
    emu_env = {k: v for k, v in env.items() if not k.startswith(("ASAN_", "UBSAN_", "TSAN_", "LD_PRELOAD"))}
    args = [sys.executable, "-m", "peeklock.emulator", "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
    args += shlex.split(env.get("PEEKLOCK_EMULATOR_ARGS", ""))
    emu = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=None, text=True, env=emu_env, cwd=ROOT, start_new_session=True
    )
    conn = None
    timer = threading.Timer(30, emu.kill)  # never wait forever for the ready line
    timer.start()
    try:
        for line in emu.stdout:
            if line.startswith(READY):
                conn = line[len(READY) :].strip()
                break
    finally:
        timer.cancel()
    if not conn:
        emu.kill()
        emu.wait()
        print("with_emulator.py: the emulator did not become ready", file=sys.stderr)
        return 2
    # Keep draining stdout so the emulator never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in emu.stdout], daemon=True).start()
    env["PEEKLOCK_CONNECTION_STRING"] = conn
    try:
        rc = subprocess.call(sys.argv[1:], env=env)
    finally:
        emu.send_signal(signal.SIGTERM)
        try:
            emu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emu.kill()
            emu.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main())
