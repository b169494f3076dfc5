"""The ``peeklock`` command line.

    peeklock emulator --queue orders            # start a local emulator, prints a connection string
    export PEEKLOCK_CONNECTION_STRING='Endpoint=sb://127.0.0.1:PORT;...'
    peeklock send orders 'hello' -p Priority=High
    peeklock peek orders                        # lock one message, show it, abandon it
    peeklock receive orders -n 10               # lock, show and complete up to 10 messages
    peeklock dlq orders                         # show dead-lettered messages (left in place)
    peeklock token https://ns.servicebus.windows.net/orders
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Set

from .errors import Error, LockLostError

ENV = "PEEKLOCK_CONNECTION_STRING"

EPILOG = f"""\
Every command except `emulator` needs a connection string: pass
--connection-string, or set the environment variable {ENV}.
A local emulator prints one:  peeklock emulator --queue orders

Examples:
  peeklock emulator --queue orders --lock-duration 30
  peeklock send orders '{{"id": 17}}' --content-type application/json -p Priority=High -p Attempt=3
  peeklock peek orders                 lock one message, print it, abandon it (it stays queued)
  peeklock receive orders -n 10        lock, print and complete up to 10 messages
  peeklock receive orders --delete     receive-and-delete (no lock)
  peeklock dlq orders                  print dead-lettered messages of queue orders
  peeklock token https://myns.servicebus.windows.net/orders --expiry 3600
"""


def _conn(args: argparse.Namespace) -> str:
    cs = args.connection_string or os.environ.get(ENV)
    if not cs:
        raise SystemExit(f"peeklock: no connection string: pass --connection-string or set {ENV}")
    return str(cs)


def _parse_value(text: str) -> Any:
    """Property values: true/false -> bool, integers -> int, decimals -> float,
    anything else a string (quote it, e.g. '"42"', to force a string)."""
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _properties(items: Optional[List[str]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"peeklock: --property must look like NAME=VALUE, got {item!r}")
        out[name] = _parse_value(value)
    return out


def _show(msg: Any, as_json: bool) -> None:
    if as_json:
        d = {
            "entity": msg.entity, "sequence_number": msg.sequence_number,
            "message_id": msg.message_id, "delivery_count": msg.delivery_count,
            "enqueued_time": msg.enqueued_time.isoformat() if msg.enqueued_time else None,
            "label": msg.label, "content_type": msg.content_type,
            "properties": {k: (v.isoformat() if isinstance(v, _dt.datetime) else v)
                           for k, v in msg.properties.items()},
            "body": msg.text,
        }
        print(json.dumps(d, ensure_ascii=False), flush=True)
        return
    print(f"--- #{msg.sequence_number} id={msg.message_id} deliveries={msg.delivery_count}"
          f" label={msg.label} content-type={msg.content_type}")
    for k, v in msg.properties.items():
        print(f"    {k}: {v!r}")
    print(msg.text, flush=True)


def cmd_send(args: argparse.Namespace) -> int:
    from .client import Client
    if args.file:
        with open(args.file, "rb") as f:
            body = f.read()
    elif args.body is not None:
        body = args.body.encode("utf-8")
    else:
        body = sys.stdin.buffer.read()
    client = Client.from_connection_string(_conn(args))
    kwargs: Dict[str, Any] = {}
    for k in ("message_id", "label", "content_type", "correlation_id", "session_id"):
        if getattr(args, k) is not None:
            kwargs[k] = getattr(args, k)
    if args.ttl is not None:
        kwargs["time_to_live"] = args.ttl
    props = _properties(args.property)
    for _ in range(args.count):
        client.send(args.entity, body, properties=props, **kwargs)
    print(f"sent {args.count} message{'s' if args.count != 1 else ''} to {args.entity}")
    return 0


def _receive_loop(args: argparse.Namespace, entity: str, settle: str) -> int:
    """Receives up to args.count messages and shows each once.

    settle="complete" / "delete": each message is removed right after it is shown.
    settle="abandon" (peek, dlq): a peek-locked message that is abandoned comes
    straight back as the next one, so every lock is held (and renewed in the
    background) until the loop ends, then released one by one; an error on one
    message does not keep the others locked. If a lock expires anyway and its
    message comes back, it is held again but not shown or counted twice."""
    from .client import Client
    client = Client.from_connection_string(_conn(args))
    n = 0
    held: List[Any] = []      # abandoned at the end, so the loop does not see them again
    seen: Set[int] = set()    # sequence numbers already shown
    try:
        while args.count is None or n < args.count:
            if settle == "delete":
                msg = client.receive_and_delete(entity, timeout=args.timeout)
            else:
                msg = client.peek_lock(entity, timeout=args.timeout)
            if msg is None:
                break
            if settle == "abandon":
                held.append(msg)
                msg._start_renewing()
                if msg.sequence_number in seen:     # its earlier lock expired
                    continue
                seen.add(msg.sequence_number)
            n += 1
            try:
                _show(msg, args.json)
            finally:
                if settle == "complete":
                    msg.complete()
    finally:
        failed = 0
        for msg in held:
            if msg.state != "held":           # lock already lost (expired): nothing to release
                continue
            try:
                msg.abandon()
            except LockLostError:
                pass                          # expired on the server: back in the queue already
            except Error as e:
                failed += 1
                print(f"peeklock: could not abandon message #{msg.sequence_number}: "
                      f"{type(e).__name__}: {e}; its lock expires on its own", file=sys.stderr)
        client.close()
    if n == 0 and not args.json:
        print(f"no message in {entity} within {args.timeout} s", file=sys.stderr)
    return 1 if failed else 0


def cmd_peek(args: argparse.Namespace) -> int:
    if args.count is None:
        args.count = 1
    return _receive_loop(args, args.entity, "abandon")


def cmd_receive(args: argparse.Namespace) -> int:
    return _receive_loop(args, args.entity, "delete" if args.delete else "complete")


def cmd_dlq(args: argparse.Namespace) -> int:
    entity = args.entity.rstrip("/") + "/$DeadLetterQueue"
    return _receive_loop(args, entity, "complete" if args.purge else "abandon")


def cmd_token(args: argparse.Namespace) -> int:
    import time
    from .client import parse_connection_string, sas_token
    key_name, key = args.key_name, args.key
    uri = args.uri
    if key is None or key_name is None or uri is None:
        cs = parse_connection_string(_conn(args))
        key_name = key_name or cs.key_name
        key = key or cs.key
        if uri is None:
            uri = cs.endpoint + "/" + (cs.entity_path or "")
    if not key or not key_name:
        raise SystemExit("peeklock: token needs a key: --key-name and --key, or a connection "
                         "string with SharedAccessKeyName and SharedAccessKey")
    print(sas_token(uri, key_name, key, int(time.time()) + args.expiry))
    return 0


EMULATOR_EXTRA_HINT = ("peeklock: the emulator needs aiohttp, which the base package does not "
                       "install: pip install 'peeklock[emulator]'")


def cmd_emulator(args: argparse.Namespace) -> int:
    import runpy
    try:
        import aiohttp  # noqa: F401  (the emulator's one dependency, an optional extra)
    except ImportError:
        raise SystemExit(EMULATOR_EXTRA_HINT) from None
    sys.argv = ["peeklock emulator"] + list(args.emulator_args)
    runpy.run_module("peeklock.emulator", run_name="__main__", alter_sys=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peeklock",
        description="Azure Service Bus REST message locks from the command line: send, "
                    "peek-lock, receive, read dead letters, make SAS tokens, run an emulator.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="peeklock 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--connection-string", "-c", metavar="CS",
                        help=f"Service Bus connection string (default: ${ENV})")

    def receiving(sp: argparse.ArgumentParser, default_count: Optional[int]) -> None:
        sp.add_argument("entity", help="queue, topic/subscriptions/SUB, or a $DeadLetterQueue path")
        sp.add_argument("-n", "--count", type=int, default=default_count,
                        help="stop after this many messages (default: %(default)s; "
                             "none = until the queue is empty)")
        sp.add_argument("-t", "--timeout", type=int, default=5,
                        help="seconds to wait for each message (default: %(default)s)")
        sp.add_argument("--json", action="store_true", help="one JSON object per message")
        common(sp)

    s = sub.add_parser("send", help="send a message to a queue or topic",
                       description="Send a message. The body is the BODY argument, --file, "
                                   "or standard input.")
    s.add_argument("entity", help="queue or topic name")
    s.add_argument("body", nargs="?", help="message body (text); default: read standard input")
    s.add_argument("--file", "-f", help="read the body from this file")
    s.add_argument("--property", "-p", action="append", metavar="NAME=VALUE",
                   help="custom property (repeatable); true/false, integers and decimals are "
                        "typed, anything else is a string")
    s.add_argument("--message-id")
    s.add_argument("--label")
    s.add_argument("--content-type")
    s.add_argument("--correlation-id")
    s.add_argument("--session-id")
    s.add_argument("--ttl", type=float, help="time to live in seconds")
    s.add_argument("--count", type=int, default=1, help="send this many copies (default: 1)")
    common(s)
    s.set_defaults(func=cmd_send)

    s = sub.add_parser("peek", help="lock a message, print it, abandon it (it stays queued)",
                       description="Peek-lock messages, print them and abandon them: they stay "
                                   "in the queue (their delivery count goes up by one, or more "
                                   "if a lock expires while reading). Each message is printed "
                                   "once: locks are held and renewed until the last message is "
                                   "read, then released.")
    receiving(s, 1)
    s.set_defaults(func=cmd_peek)

    s = sub.add_parser("receive", help="lock, print and complete messages (removes them)",
                       description="Receive messages: peek-lock, print, complete. With --delete, "
                                   "receive-and-delete instead (no lock).")
    receiving(s, None)
    s.add_argument("--delete", action="store_true", help="receive-and-delete instead of peek-lock")
    s.set_defaults(func=cmd_receive)

    s = sub.add_parser("dlq", help="print the dead-letter queue of an entity",
                       description="Print dead-lettered messages of ENTITY (a queue or "
                                   "topic/subscriptions/SUB), each once. They are left in place "
                                   "(peek-locked, renewed while reading, abandoned at the end) "
                                   "unless --purge is given.")
    receiving(s, None)
    s.add_argument("--purge", action="store_true", help="complete (delete) what is printed")
    s.set_defaults(func=cmd_dlq)

    s = sub.add_parser("token", help="print a SAS token",
                       description="Print a SharedAccessSignature token for URI (default: the "
                                   "connection string's endpoint), signed with --key-name/--key "
                                   "or the connection string's key.")
    s.add_argument("uri", nargs="?", help="resource URI, e.g. https://ns.servicebus.windows.net/q")
    s.add_argument("--key-name")
    s.add_argument("--key")
    s.add_argument("--expiry", type=int, default=3600,
                   help="lifetime in seconds (default: %(default)s)")
    common(s)
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("emulator", help="run the local Service Bus emulator",
                       description="Run the local emulator (python -m peeklock.emulator); all "
                                   "arguments are passed on, e.g. --port 0 --queue orders "
                                   "--lock-duration 30. It prints a ready line with the "
                                   "connection string.", add_help=False)
    s.add_argument("emulator_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_emulator)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # everything after `emulator` belongs to the emulator's own parser
        if argv[1:2] in (["-h"], ["--help"]):
            print("usage: peeklock emulator [EMULATOR OPTIONS]\n\nRuns the local emulator "
                  "(python -m peeklock.emulator); its options follow:\n", flush=True)
        return cmd_emulator(argparse.Namespace(emulator_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except Error as e:
        print(f"peeklock: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
