"""`import peeklock` works from a source tree with no extension built: the
exceptions (their messages withheld, as nothing can scrub them) and the emulator
load; the rest (the code numbers included) explains how to build."""

import os
import subprocess
import sys

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))

CODE = r"""
import peeklock, peeklock.emulator, peeklock.testing
assert issubclass(peeklock.LockLostError, peeklock.Error)
# no redaction without the core: a message is withheld, never shown unscrubbed
e = peeklock.LockLostError("gone sig=abc", code=-5)
assert repr(e) == "LockLostError('(message withheld: redaction unavailable)', status=0, code=-5)", repr(e)
try:  # the code numbers are the core's: none is written in Python
    peeklock.errors.PL_ESTATE
except ImportError as e:
    assert "pip install ." in str(e), e
else:
    raise AssertionError("PL_ESTATE without the core")
try:
    peeklock.Client
except ImportError as e:
    assert "pip install ." in str(e), e
    print("lazy-ok")
"""


def test_source_tree_without_extension():
    assert not any(f.startswith("_core") and f.endswith(".so") for f in os.listdir(os.path.join(SRC, "peeklock"))), (
        "a built extension sits in the source tree"
    )
    r = subprocess.run(
        [sys.executable, "-c", CODE], cwd="/", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "lazy-ok"
