"""The stubs and inline types check with mypy (--strict), and a user's code
typed against the public surface checks too."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("mypy")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

USER_CODE = """
import peeklock
import peeklock.aio
from typing import Optional

def handle(client: peeklock.Client) -> int:
    msg: Optional[peeklock.Message] = client.peek_lock("orders", timeout=1)
    if msg is None:
        return 0
    with msg:
        body: bytes = msg.body
    return len(body)

def readme(client: peeklock.Client) -> None:
    with client.lock("orders", timeout=30) as m:
        if m is not None:
            print(m.body, m.dead_letter_reason)
    client.send("orders", b"x", message_id="o-1", time_to_live=60)
    client.process("orders", lambda m: None, concurrency=2, retry_delay=None)

def bad(client: peeklock.Client) -> None:
    client.peek_lock(42)
    client.send("orders", b"x", mesage_id="o-1")
    client.send("orders", b"x", message_id="1", ttl=3)
    peeklock.OutgoingMessage(b"x", message_id="1", ttl=3, resend=True)
    client.process("orders", print, concurency=4)
    peeklock.Client.from_connection_string("Endpoint=sb://x/", max_retrie=3)


async def bad_async(aclient: peeklock.aio.Client) -> None:
    await aclient.send("orders", b"x", lable="l")
    await aclient.send("orders", b"x", message_id="1", time_to_live="60")
    peeklock.aio.Client.from_connection_string("Endpoint=sb://x/", pool_sise=2)
"""


def test_package_passes_mypy_strict():
    pkg = os.path.join(ROOT, "python")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "-p",
            "peeklock.client",
            "-p",
            "peeklock.processor",
            "-p",
            "peeklock.errors",
            "-p",
            "peeklock.cli",
            "-p",
            "peeklock.management",
            "-p",
            "peeklock.tools",
            "-p",
            "peeklock.telemetry",
            "-p",
            "peeklock.aio",
            "-p",
            "peeklock.testing",
        ],
        cwd=pkg,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": pkg},
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_user_code_is_checked_against_the_stubs(tmp_path):
    f = tmp_path / "user.py"
    f.write_text(USER_CODE)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(f)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # the installed package (py.typed) is used; only the deliberate mistake is reported
    assert 'Argument 1 to "peek_lock" of "Client" has incompatible type "int"' in r.stdout, r.stdout
    assert 'Unexpected keyword argument "mesage_id"' in r.stdout, r.stdout
    assert 'Unexpected keyword argument "concurency"' in r.stdout, r.stdout
    for typo in ("max_retrie", "lable", "pool_sise"):  # no **kwargs: Any on public calls
        assert f'Unexpected keyword argument "{typo}"' in r.stdout, r.stdout
    # send's keywords (one TypedDict) are checked by name and type, sync, async and OutgoingMessage
    assert 'Unexpected keyword argument "ttl" for "send" of "Client"' in r.stdout, r.stdout
    assert 'Unexpected keyword argument "ttl" for "OutgoingMessage"' in r.stdout, r.stdout
    assert 'Argument "time_to_live" to "send" of "Client" has incompatible type "str"' in r.stdout, r.stdout
    assert r.stdout.count("error:") == 9, r.stdout


def test_emulator_passes_mypy():
    """The emulator is type-checked with the project's configuration (strict, except
    that every function need not be annotated: pyproject.toml)."""
    pkg = os.path.join(ROOT, "python")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            os.path.join(ROOT, "pyproject.toml"),
            "--no-incremental",
            "-p",
            "peeklock.emulator",
        ],
        cwd=pkg,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": pkg},
    )
    assert r.returncode == 0, r.stdout + r.stderr


ASYNC_USER_CODE = """
from typing import Dict, List
import peeklock.aio

async def handle(client: peeklock.aio.Client) -> int:
    await client.send("orders", b"x", message_id="a")
    async with client.peek_lock("orders", timeout=1) as msg:
        if msg is None:
            return 0
        body: bytes = msg.body
    got = await client.peek_lock("orders")
    if got is not None:
        await got.complete()
    async for m in client.messages("orders"):
        async with m:
            pass
    return len(body)

async def batches(client: peeklock.aio.Client) -> int:
    async def handler(msgs: List[peeklock.aio.Message]) -> Dict[int, str]:
        return {m.sequence_number: "complete" for m in msgs}
    s = await client.process("orders", handler, batch=10, max_wait=2, retry_delay=None)
    return s.processed

async def bad(client: peeklock.aio.Client) -> None:
    await client.send(42)
"""


def test_async_user_code_is_checked(tmp_path):
    f = tmp_path / "user_aio.py"
    f.write_text(ASYNC_USER_CODE)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(f)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert 'Argument 1 to "send" of "Client" has incompatible type "int"' in r.stdout, r.stdout
    assert r.stdout.count("error:") == 1, r.stdout


def test_every_broker_field_of_the_core_is_a_typed_read_only_message_property(tmp_path):
    """Message's BrokerProperties getters are made at import from the core's table;
    each is typed for a user (Optional[str], read-only) and reads its field."""
    import peeklock
    from peeklock.client import _BROKER_FIELDS

    args = list(_BROKER_FIELDS)
    assert "reply_to_session_id" in args and all(isinstance(getattr(peeklock.Message, a), property) for a in args)
    lines = ["import peeklock", "from typing import Optional", "def f(m: peeklock.Message) -> None:"]
    lines += [f"    v{i}: Optional[str] = m.{a}" for i, a in enumerate(args)]
    lines += [f"    m.{a} = 'x'" for a in args]  # each a mistake: read-only
    f = tmp_path / "fields.py"
    f.write_text("\n".join(lines) + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(f)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.stdout.count("error:") == len(args), r.stdout
    assert r.stdout.count("is read-only") == len(args), r.stdout
