"""The ``peeklock`` command line.

peeklock emulator --queue orders            # start a local emulator, prints a connection string
export PEEKLOCK_CONNECTION_STRING='Endpoint=sb://127.0.0.1:PORT;...'
peeklock ls                                 # queues, topics, subscriptions with counts
peeklock send orders 'hello' -p Priority=High -p Attempt:int=3
peeklock peek orders                        # lock one message, show it, release it
peeklock receive orders -n 10               # lock, show and complete up to 10 messages
peeklock dlq orders                         # dead letters with reasons (left in place)
peeklock dlq resubmit orders --max 100      # send copies back, then remove the dead letters
peeklock purge orders --yes                 # delete every message
peeklock export orders > orders.ndjson      # every message as NDJSON (left in place)
peeklock send orders --from orders.ndjson   # send them again
peeklock token https://ns.servicebus.windows.net/orders
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import os
import select
import signal
import stat
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, TextIO

from . import errors as _errors
from .errors import Error

ENV = "PEEKLOCK_CONNECTION_STRING"
CA_ENV = "PEEKLOCK_CA_FILE"

# Exit codes (documented in --help and docs/python.md).
EXIT_OK = 0
EXIT_ERROR = 1  # any other failure (service error, server error, bad reply)
EXIT_USAGE = 2  # bad arguments or input (argparse uses 2 as well)
EXIT_AUTH = 3  # authentication or authorization refused (401, 403)
EXIT_NOT_FOUND = 4  # the entity does not exist
EXIT_CONNECTION = 5  # could not connect (refused, DNS, TLS)
EXIT_TIMEOUT = 6  # no answer in time
EXIT_NOTHING = 7  # nothing received within the timeout
EXIT_UNKNOWN = 8  # the outcome of an operation could not be known
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = """\
Exit codes:
  0  done                          5  could not connect
  1  other failure                 6  timed out
  2  usage or bad input            7  nothing received within the timeout
  3  authentication refused        8  outcome unknown (see the message)
  4  entity not found            130  interrupted
"""

EPILOG = f"""\
Every command except `emulator` needs a connection string: pass
--connection-string, or set the environment variable {ENV}.
A local emulator prints one:  peeklock emulator --queue orders
Over https with a certificate of your own (the emulator's --tls): --ca-file PEM, or set
{CA_ENV}.

Examples:
  peeklock emulator --queue orders --lock-duration 30
  peeklock ls                          queues, topics and subscriptions with message counts
  peeklock send orders '{{"id": 17}}' --content-type application/json -p Priority=High -p Attempt:int=3
  peeklock peek orders                 lock one message, print it, release it (it stays queued)
  peeklock receive orders -n 10        lock, print and complete up to 10 messages
  peeklock receive orders --delete     receive-and-delete (no lock)
  peeklock dlq orders                  dead-lettered messages of queue orders, with reasons
  peeklock dlq resubmit orders --dry-run   what would be sent back to orders
  peeklock purge orders/$DeadLetterQueue --yes
  peeklock export orders -o orders.ndjson
  peeklock send orders --from orders.ndjson
  peeklock token https://myns.servicebus.windows.net/orders --expiry 3600

{EXIT_CODES_HELP}"""


class UsageError(Exception):
    """Bad arguments or input: exit code 2."""


class OutputClosed(Exception):
    """Standard output was closed by its reader (``| head -1``)."""


def exit_code(e: BaseException) -> int:
    if isinstance(e, _errors.AuthError):
        return EXIT_AUTH
    if isinstance(e, _errors.EntityNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(e, _errors.OutcomeUnknownError):
        return EXIT_UNKNOWN
    if isinstance(e, _errors.TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(e, _errors.ConnectionError):
        return EXIT_CONNECTION
    if isinstance(e, (_errors.InvalidArgument, UsageError, ValueError, TypeError)):
        return EXIT_USAGE
    return EXIT_ERROR


def _conn(args: argparse.Namespace) -> str:
    cs = args.connection_string or os.environ.get(ENV)
    if not cs:
        raise UsageError(f"no connection string: pass --connection-string or set {ENV}")
    return str(cs)


def _ca_file(args: argparse.Namespace) -> Optional[str]:
    """The CA certificates (PEM) to trust for https: --ca-file or $PEEKLOCK_CA_FILE; None,
    the system's."""
    ca = getattr(args, "ca_file", None) or os.environ.get(CA_ENV)
    return str(ca) if ca else None


def _management(args: argparse.Namespace, timeout: float = 30.0) -> Any:
    from .management import Management

    return Management.from_connection_string(_conn(args), timeout=timeout, ca_file=_ca_file(args))


def _err(text: str) -> None:
    print(f"peeklock: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# output that knows when its reader has read
# --------------------------------------------------------------------------


class Output:
    """Writes one record at a time and returns only once it is safe to act on
    it: flushed, and when the output is a pipe, read from the pipe by the
    other end (the pipe holds no unread bytes; whether the reader then used
    it, nothing can tell). A reader that exits (``| head -1``) raises
    OutputClosed, for the record that was written but never read too, so a
    message is completed only after its reader took it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.fd: Optional[int] = None
        try:
            fd = stream.fileno()
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                self.fd = fd
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> None:
        data = text.encode("utf-8")  # whatever the locale: JSON and bodies are UTF-8
        try:
            buffer = getattr(self.stream, "buffer", None)
            if buffer is not None:
                self.stream.flush()
                buffer.write(data)
                buffer.flush()
            else:
                self.stream.write(text)
                self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None
        except ValueError as e:  # written to after it was closed
            if "closed file" not in str(e):
                raise
            raise OutputClosed() from None
        if self.fd is not None:
            self._wait_read(self.fd)

    def _reader_gone(self, fd: int) -> bool:
        p = select.poll()
        p.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))

    def _wait_read(self, fd: int) -> None:
        import fcntl
        import termios

        buf = bytearray(4)
        delay = 0.0005
        while True:
            fcntl.ioctl(fd, termios.FIONREAD, buf)
            if int.from_bytes(buf, sys.byteorder) == 0:
                return
            if self._reader_gone(fd):
                raise OutputClosed()
            time.sleep(delay)  # no event says "the reader took it": poll, backing off
            delay = min(delay * 2, 0.05)


def _silence_stdout() -> None:
    """After the reader went away: no flush at exit may raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


# --------------------------------------------------------------------------
# properties and bodies
# --------------------------------------------------------------------------


def _properties(items: Optional[List[str]]) -> Dict[str, Any]:
    """``NAME=VALUE`` is a string property; ``NAME:TYPE=VALUE`` types it
    (str, int, float, bool, datetime)."""
    from ._validate import _check_datetime_property
    from .tools import parse_typed

    out: Dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--property must look like NAME=VALUE or NAME:TYPE=VALUE, got {item!r}")
        kind = "str"
        if ":" in name:
            name, _, kind = name.rpartition(":")
            if not name:
                raise UsageError(f"--property {item!r} has no name")
        try:
            out[name] = parse_typed(name, kind, value)
            if isinstance(out[name], _dt.datetime):
                _check_datetime_property(name, out[name])
        except ValueError as e:
            raise UsageError(str(e)) from None
    return out


def _body_fields(body: bytes) -> Dict[str, Any]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def _render(msg: Any, as_json: bool, dead_letters: bool = False) -> str:
    props = msg.properties
    if as_json:
        d: Dict[str, Any] = {
            "entity": msg.entity,
            "sequence_number": msg.sequence_number,
            "message_id": msg.message_id,
            "delivery_count": msg.delivery_count,
            "enqueued_time": msg.enqueued_time.isoformat() if msg.enqueued_time else None,
            "label": msg.label,
            "content_type": msg.content_type,
            "properties": {k: (v.isoformat() if isinstance(v, _dt.datetime) else v) for k, v in props.items()},
        }
        if dead_letters:
            d["dead_letter_reason"] = props.get("DeadLetterReason")
            d["dead_letter_description"] = props.get("DeadLetterErrorDescription")
        d.update(_body_fields(msg.body))
        return json.dumps(d, ensure_ascii=False) + "\n"
    head = f"--- #{msg.sequence_number} id={msg.message_id} deliveries={msg.delivery_count}"
    for name, value in (("label", msg.label), ("content-type", msg.content_type)):
        if value is not None:  # (not set: left out, never shown as None)
            head += f" {name}={value}"
    lines = [head]
    if dead_letters:
        lines.append(f"    reason: {props.get('DeadLetterReason')}")
        lines.append(f"    description: {props.get('DeadLetterErrorDescription')}")
    for k, v in props.items():
        if not (dead_letters and k in ("DeadLetterReason", "DeadLetterErrorDescription")):
            lines.append(f"    {k}: {v!r}")
    body = _body_fields(msg.body)
    lines.append(body["body"] if "body" in body else f"(binary, {len(msg.body)} bytes, base64) " + body["body_base64"])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    return Client.from_connection_string(_conn(args), ca_file=_ca_file(args))


def cmd_send(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        if args.body is not None or args.file or args.property or args.count != 1:
            raise UsageError("--from takes its messages from the file: no BODY, --file, --property or --count with it")
        return _send_from(args)
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    props = _properties(args.property)
    if args.file:
        with open(args.file, "rb") as f:
            body = f.read()
    elif args.body is not None:
        body = args.body.encode("utf-8")
    else:
        body = sys.stdin.buffer.read()
    client = _client(args)
    kwargs: Dict[str, Any] = {}
    for k in ("message_id", "label", "content_type", "correlation_id", "session_id"):
        if getattr(args, k) is not None:
            kwargs[k] = getattr(args, k)
    if args.ttl is not None:
        kwargs["time_to_live"] = args.ttl
    for i in range(args.count):
        try:
            client.send(args.entity, body, properties=props, **kwargs)
        except Error as e:
            if i or isinstance(e, _errors.OutcomeUnknownError):
                _err(
                    f"{i} of {args.count} sent before the failure"
                    + (
                        f"; message {i + 1} may have been sent too"
                        if isinstance(e, _errors.OutcomeUnknownError)
                        else ""
                    )
                )
            raise
    print(f"sent {args.count} message{'s' if args.count != 1 else ''} to {args.entity}")
    return EXIT_OK


def _send_from(args: argparse.Namespace) -> int:
    from .tools import read_records

    f = sys.stdin if args.from_file == "-" else open(args.from_file, encoding="utf-8")
    try:
        try:
            records = list(read_records(f))  # all checked before the first send
        except ValueError as e:
            raise UsageError(f"{args.from_file}: {e}") from None
    finally:
        if f is not sys.stdin:
            f.close()
    client = _client(args)
    sent = 0
    for line, om in records:
        try:
            client.send(args.entity, om)
        except Error as e:
            _err(f"{args.from_file} line {line}: {type(e).__name__}: {e}")
            _err(
                f"{sent} of {len(records)} sent; lines before {line} were sent"
                + ("; line %d may have been sent too" % line if isinstance(e, _errors.OutcomeUnknownError) else "")
            )
            return exit_code(e)
        sent += 1
    print(f"sent {sent} message{'s' if sent != 1 else ''} to {args.entity} from {args.from_file}")
    return EXIT_OK


def _max_deliveries(args: argparse.Namespace, entity: str) -> Optional[int]:
    """The entity's MaxDeliveryCount, or None for a dead-letter queue (nothing
    is dead-lettered from there) or when the management API does not say."""
    from .tools import parent_of

    if parent_of(entity) != entity:
        return None
    info = _entity_info(args, entity)
    return info.max_delivery_count if info is not None else None


def _entity_info(args: argparse.Namespace, entity: str) -> Any:
    """The entity's management description, or None when the management API
    does not give it (best effort: a look-up only, 5 s at most)."""
    try:
        return _management(args, timeout=5).get(entity)
    except Exception:
        return None


def _receive_loop(
    args: argparse.Namespace, entity: str, settle: str, render: Callable[[Any], str], nothing_is_failure: bool = True
) -> int:
    """Receives up to args.count messages and writes each once.

    settle="complete": each message is completed only after its output was
    written, flushed and (on a pipe) read; if the reader went away, the
    message is released instead and the loop stops.
    settle="delete": receive-and-delete; a message whose output cannot be
    written is printed to standard error as an NDJSON record, so it is not lost.
    settle="release" (peek, dlq, export): a peek-locked message that is
    released comes straight back as the next one, so every lock is held (and
    renewed in the background) until the loop ends, then released one by one."""
    client = _client(args)
    out = Output(sys.stdout)
    n = 0
    held: List[Any] = []  # released at the end, so the loop does not see them again
    seen: Set[int] = set()  # sequence numbers already shown
    closed = False
    last_chance = 0
    max_deliveries = _max_deliveries(args, entity) if settle == "release" else None
    try:
        while args.count is None or n < args.count:
            if settle == "delete":
                msg = client.receive_and_delete(entity, timeout=args.timeout)
            else:
                msg = client.peek_lock(entity, timeout=args.timeout)
            if msg is None:
                break
            if settle != "delete":
                msg._start_renewing()
            if settle == "release":
                held.append(msg)
                if msg.sequence_number in seen:  # its earlier lock expired
                    continue
                seen.add(msg.sequence_number)
                if max_deliveries is not None and msg.delivery_count >= max_deliveries:
                    last_chance += 1
                    _err(
                        f"message #{msg.sequence_number} was on its last delivery (delivery "
                        f"count {msg.delivery_count} of {max_deliveries}): releasing it moves "
                        "it to the dead-letter queue"
                    )
            n += 1
            try:
                out.write(render(msg))
            except OutputClosed:
                closed = True
                if settle == "complete":
                    held.append(msg)  # not read by anyone: released below
                elif settle == "delete":
                    from .tools import message_to_record

                    _err(f"output closed; this message was already removed from {entity} and is written here instead:")
                    print(json.dumps(message_to_record(msg)), file=sys.stderr, flush=True)
                break
            if settle == "complete":
                msg.complete()
    finally:
        from .tools import release_held

        failed = release_held(held, _err)
        client.close()
    if closed:
        _silence_stdout()
        return EXIT_ERROR if settle == "delete" else (EXIT_ERROR if failed else EXIT_OK)
    if failed:
        return EXIT_ERROR
    if last_chance:
        _err(f"{last_chance} message{'s' if last_chance != 1 else ''} moved to the dead-letter queue by this read")
    if n == 0:
        _err(f"no message in {entity} within {args.timeout} s")
        return EXIT_NOTHING if nothing_is_failure else EXIT_OK
    return EXIT_OK


_PEEK_NOTE = (
    "peek locks each message and releases it when done: its delivery count goes up "
    "by one, and a message on its last delivery moves to the dead-letter queue"
)


def cmd_peek(args: argparse.Namespace) -> int:
    if not args.quiet:
        _err(_PEEK_NOTE)
    return _receive_loop(args, args.entity, "release", lambda m: _render(m, args.json))


def cmd_receive(args: argparse.Namespace) -> int:
    return _receive_loop(args, args.entity, "delete" if args.delete else "complete", lambda m: _render(m, args.json))


def cmd_dlq(args: argparse.Namespace) -> int:
    from .tools import dead_letter_path

    return _receive_loop(
        args,
        dead_letter_path(args.entity),
        "complete" if args.purge else "release",
        lambda m: _render(m, args.json, dead_letters=True),
        nothing_is_failure=False,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from .tools import dead_letter_path, message_to_record

    entity = dead_letter_path(args.entity) if args.dlq else args.entity
    if not args.quiet:
        _err(_PEEK_NOTE.replace("peek", "export"))
    if args.output and args.output != "-":
        stream = open(args.output, "w", encoding="utf-8")
        saved, sys.stdout = sys.stdout, stream
        try:
            return _receive_loop(
                args, entity, "release", lambda m: json.dumps(message_to_record(m)) + "\n", nothing_is_failure=False
            )
        finally:
            sys.stdout = saved
            stream.close()
    return _receive_loop(
        args, entity, "release", lambda m: json.dumps(message_to_record(m)) + "\n", nothing_is_failure=False
    )


def cmd_resubmit(args: argparse.Namespace) -> int:
    from .tools import check_resubmit_limits, parse_filters, resubmit_dead_letters

    try:
        filters = parse_filters(args.filter or [])
        check_resubmit_limits(args.max, args.rate, ("--max", "--rate"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    from .tools import dead_letter_path, parent_of

    target = args.to or parent_of(dead_letter_path(args.entity))
    target_info = None if args.new_message_id or args.dry_run else _entity_info(args, target)
    client = _client(args)
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        # the message in hand is finished (sent and removed, or listed), then the run
        # stops; a second Ctrl-C interrupts at once
        _err("stopping after the current message (Ctrl-C again to interrupt now)")
        signal.signal(signal.SIGINT, old)
        stop.set()

    old = signal.getsignal(signal.SIGINT)
    if old is not signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)

    def show(what: str, info: Dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(dict(info, action=what)), flush=True)
        else:
            print(
                f"{what}: #{info['sequence_number']} id={info['message_id']} "
                f"reason={info['reason']}" + (f" ({info['error']})" if "error" in info else ""),
                flush=True,
            )

    try:
        report = resubmit_dead_letters(
            client,
            args.entity,
            to=args.to,
            filters=filters,
            max_messages=args.max,
            rate=args.rate,
            keep_message_id=not args.new_message_id,
            dry_run=args.dry_run,
            timeout=args.timeout,
            stop=stop,
            on_message=show,
            warn=_err,
            target_info=target_info,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        if threading.current_thread() is threading.main_thread() and old is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, old)
        client.close()
    verb = "would move" if report.dry_run else "moved"
    _err(
        f"{verb} {len(report.moved)}, skipped {report.skipped} (filter), failed "
        f"{len(report.failed)}, outcome unknown {len(report.unknown)}, sent but dead letter "
        f"kept {len(report.duplicates_possible)}"
    )
    if report.unknown or report.duplicates_possible:
        _err("a later run may send those again: each possible duplicate is listed above")
        return EXIT_UNKNOWN
    return EXIT_ERROR if report.failed else EXIT_OK


def _parse_time(text: str) -> _dt.datetime:
    from .tools import parse_typed

    try:
        d = parse_typed("--enqueued-before", "datetime", text)
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01T00:00:00Z)") from None
    assert isinstance(d, _dt.datetime)
    return d


def cmd_purge(args: argparse.Namespace) -> int:
    from .tools import PurgeReport, check_purge_concurrency, dead_letter_path, purge

    entity = dead_letter_path(args.entity) if args.dlq else args.entity
    before = _parse_time(args.enqueued_before) if args.enqueued_before else None
    try:
        check_purge_concurrency(args.concurrency, "--concurrency")
    except ValueError as e:
        raise UsageError(str(e)) from None
    max_deliveries = _max_deliveries(args, entity) if before else None
    if not args.yes:
        what = f"messages enqueued before {before.isoformat()}" if before else "every message"
        if before:
            what += (
                " (the others are locked and released: their delivery counts go up by "
                "one, and one on its last delivery moves to the dead-letter queue)"
            )
        if not sys.stdin.isatty():
            raise UsageError(
                f"purge deletes {what} of {entity}: pass --yes to confirm (standard input is not a terminal to ask on)"
            )
        answer = input(f"Delete {what} of {entity}? Type the entity name to confirm: ")
        if answer.strip() != entity:
            _err("not confirmed; nothing deleted")
            return EXIT_USAGE
    client = _client(args)
    report = PurgeReport()
    try:
        purge(
            client,
            entity,
            enqueued_before=before,
            concurrency=args.concurrency,
            timeout=args.timeout,
            warn=_err,
            max_deliveries=max_deliveries,
            report=report,
        )
    except BaseException as e:
        if report.deleted or not isinstance(e, Exception):  # (the error's own line says the rest)
            _err(f"stopped: {report.deleted} deleted before that")
        raise
    finally:
        client.close()
    print(
        f"deleted {report.deleted} message{'s' if report.deleted != 1 else ''} from {entity}"
        + (f", kept {report.kept}" if before else "")
    )
    if report.unknown:
        _err(
            f"{report.unknown} more receive{'s' if report.unknown != 1 else ''} lost the "
            "answer: a message may have been removed each time"
        )
        return EXIT_UNKNOWN
    if report.dead_lettered:
        _err(f"{len(report.dead_lettered)} kept message(s) moved to the dead-letter queue by this purge (named above)")
        return EXIT_ERROR
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    ents = _management(args).entities()
    if args.json:
        for e in ents:
            print(json.dumps(asdict(e)), flush=True)
        return EXIT_OK

    def c(v: Any) -> str:
        return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    rows = [("ENTITY", "KIND", "ACTIVE", "DEAD-LETTER", "SCHEDULED", "LOCK(S)", "MAX-DELIVERIES")]
    rows += [
        (e.path, e.kind, c(e.active), c(e.dead_letter), c(e.scheduled), c(e.lock_duration), c(e.max_delivery_count))
        for e in ents
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from ._auth import lifetime_expiry, parse_connection_string, sas_token

    key_name, key = args.key_name, args.key
    uri = args.uri
    if key is None or key_name is None or uri is None:
        cs = parse_connection_string(_conn(args))
        key_name = key_name or cs.key_name
        key = key or cs.key
        if uri is None:
            uri = cs.endpoint + "/" + (cs.entity_path or "")
    split = urllib.parse.urlsplit(uri)
    if split.scheme.lower() not in ("sb", "http", "https") or not split.netloc:
        raise UsageError(
            "token signs a resource URI (sb://, https:// or http://NAMESPACE/ENTITY), and the one given "
            "is not one (not shown: it may hold a key): the service checks the token against the URL "
            "it was sent to"
        )
    if not key or not key_name:
        raise UsageError(
            "token needs a key: --key-name and --key, or a connection "
            "string with SharedAccessKeyName and SharedAccessKey"
        )
    try:  # sas_token's rule for a lifetime, told by the flag's name
        token = sas_token(uri, key_name, key, lifetime_expiry(args.expiry, "--expiry"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(token)
    return EXIT_OK


def cmd_emulator(args: argparse.Namespace) -> int:
    import runpy

    # (without aiohttp the emulator's main says what to install, exit 2)
    sys.argv = ["peeklock emulator"] + list(args.emulator_args)
    runpy.run_module("peeklock.emulator", run_name="__main__", alter_sys=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import _core

    p = argparse.ArgumentParser(
        prog="peeklock",
        description="Azure Service Bus REST message locks from the command line: list entities, "
        "send, peek-lock, receive, repair dead letters, purge, export and import, "
        "make SAS tokens, run an emulator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version="peeklock 0.1.0")
    ca_help = f"CA certificates (PEM) to trust for https, e.g. the emulator's --tls certificate (default: ${CA_ENV})"
    p.add_argument("--ca-file", metavar="PEM", help=ca_help)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--connection-string", "-c", metavar="CS", help=f"Service Bus connection string (default: ${ENV})"
        )
        # also after the command; a value given before it stays when this one is not given
        sp.add_argument("--ca-file", metavar="PEM", default=argparse.SUPPRESS, help=ca_help)

    def receiving(sp: argparse.ArgumentParser, default_count: Optional[int]) -> None:
        sp.add_argument("entity", help="queue, topic/subscriptions/SUB, or a $DeadLetterQueue path")
        sp.add_argument(
            "-n",
            "--count",
            type=int,
            default=default_count,
            help="stop after this many messages (default: %(default)s; none = until the queue is empty)",
        )
        sp.add_argument(
            "-t", "--timeout", type=int, default=5, help="seconds to wait for each message (default: %(default)s)"
        )
        sp.add_argument(
            "--json",
            action="store_true",
            help="one JSON object per message (a body that is not UTF-8 comes as body_base64)",
        )
        common(sp)

    s = parser(
        "ls",
        "list queues, topics and subscriptions with message counts",
        "List every queue, topic and subscription of the namespace with its active, "
        "dead-letter and scheduled message counts, lock duration and maximum delivery "
        "count (Atom management API).",
    )
    s.add_argument("--json", action="store_true", help="one JSON object per entity")
    common(s)
    s.set_defaults(func=cmd_ls)

    s = parser(
        "send",
        "send a message (or NDJSON records) to a queue or topic",
        "Send a message. The body is the BODY argument, --file, or standard input. "
        "With --from, send every record of an NDJSON file as written by "
        "`peeklock export` (bodies in base64, properties typed).",
    )
    s.add_argument("entity", help="queue or topic name")
    s.add_argument("body", nargs="?", help="message body (text); default: read standard input")
    s.add_argument("--file", "-f", help="read the body from this file")
    s.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE.ndjson",
        help="send the messages of this NDJSON file (- for standard input)",
    )
    s.add_argument(
        "--property",
        "-p",
        action="append",
        metavar="NAME[:TYPE]=VALUE",
        help="custom property (repeatable); a string unless a TYPE is given: str, "
        "int, float, bool (true/false), datetime (ISO 8601, UTC if no offset)",
    )
    s.add_argument("--message-id")
    s.add_argument("--label")
    s.add_argument("--content-type")
    s.add_argument("--correlation-id")
    s.add_argument("--session-id")
    s.add_argument("--ttl", type=float, help="time to live in seconds")
    s.add_argument("--count", type=int, default=1, help="send this many copies (default: 1)")
    common(s)
    s.set_defaults(func=cmd_send)

    s = parser(
        "peek",
        "lock a message, print it, release it (it stays queued)",
        "Peek-lock messages, print them and release them: they stay in the queue, but "
        "REST has no other way to read a message, so each one's delivery count goes up "
        "by one, and a message on its last delivery moves to the dead-letter queue when "
        "released (each such message is named on standard error). Each message is "
        "printed once: locks are held and renewed until the last message is read, then "
        "released.",
    )
    receiving(s, 1)
    s.add_argument("-q", "--quiet", action="store_true", help="no note about delivery counts")
    s.set_defaults(func=cmd_peek)

    s = parser(
        "receive",
        "lock, print and complete messages (removes them)",
        "Receive messages: peek-lock, print, complete. A message is completed only "
        "after it was written out and, on a pipe, read from the pipe by the other end: "
        "with `--json | head -1` one message is removed and the next one released "
        "(head reads the whole of a multi-line message, so with the text format "
        "`head -1` shows its first line only). With --delete, "
        "receive-and-delete instead (no lock; a message that cannot be written out is "
        "printed on standard error as an NDJSON record).",
    )
    receiving(s, None)
    s.add_argument("--delete", action="store_true", help="receive-and-delete instead of peek-lock")
    s.set_defaults(func=cmd_receive)

    s = parser(
        "dlq",
        "print the dead-letter queue of an entity, with reasons",
        "Print dead-lettered messages of ENTITY (a queue or topic/subscriptions/SUB), "
        "each once, with the dead-letter reason and description. They are left in place "
        "(peek-locked, renewed while reading, released at the end) unless --purge is "
        "given. To send them back: peeklock dlq resubmit ENTITY.",
    )
    receiving(s, None)
    s.add_argument("--purge", action="store_true", help="complete (delete) what is printed")
    s.set_defaults(func=cmd_dlq)

    s = parser(
        "dlq-resubmit",
        "(peeklock dlq resubmit) send dead letters back",
        "peeklock dlq resubmit ENTITY: for each dead-lettered message of ENTITY, send a "
        "copy (body, content type, broker and custom properties; the dead-letter reason "
        "and description removed) to ENTITY or --to, then remove the dead letter. "
        "Stopping at any point loses nothing; a copy whose send had an unknown outcome, "
        "or whose dead letter could not be removed, is listed, since a later run sends "
        "it again.",
    )
    s.prog = "peeklock dlq resubmit"
    s.add_argument("entity", help="queue or topic/subscriptions/SUB whose dead letters to move")
    s.add_argument("--to", help="send the copies here instead (a queue or topic)")
    s.add_argument(
        "--filter",
        action="append",
        metavar="NAME=PATTERN",
        help="only messages whose field matches the glob PATTERN (repeatable, all "
        "must match): reason, description, label, message_id, content_type, "
        "correlation_id or a custom property name",
    )
    s.add_argument("--max", type=int, help="move at most this many")
    s.add_argument("--rate", type=float, help="at most this many messages per second")
    s.add_argument(
        "--new-message-id",
        action="store_true",
        help="let the service give each copy a new MessageId (default: keep it)",
    )
    s.add_argument("--dry-run", action="store_true", help="list what would move; move nothing")
    s.add_argument(
        "-t", "--timeout", type=int, default=5, help="seconds to wait for each dead letter (default: %(default)s)"
    )
    s.add_argument("--json", action="store_true", help="one JSON object per message")
    common(s)
    s.set_defaults(func=cmd_resubmit)

    s = parser(
        "purge",
        "delete messages of an entity",
        "Delete every message of ENTITY (receive-and-delete from --concurrency "
        "threads), or only those enqueued before --enqueued-before (peek-lock, "
        "complete the old ones, release the rest). Asks for confirmation unless --yes.",
    )
    s.add_argument("entity", help="queue, topic/subscriptions/SUB, or a $DeadLetterQueue path")
    s.add_argument("--dlq", action="store_true", help="purge ENTITY's dead-letter queue")
    s.add_argument(
        "--enqueued-before", metavar="TIME", help="only messages enqueued before TIME (ISO 8601, UTC if no offset)"
    )
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--concurrency", type=int, default=4, help="receivers (default: %(default)s)")
    s.add_argument(
        "-t",
        "--timeout",
        type=int,
        default=1,
        help="stop when nothing arrives for this many seconds (default: %(default)s)",
    )
    common(s)
    s.set_defaults(func=cmd_purge)

    s = parser(
        "export",
        "write messages as NDJSON (left in place)",
        "Write every message of ENTITY as one NDJSON record per line: body in base64, "
        "every broker field, custom properties with their types. `peeklock send ENTITY "
        "--from FILE` sends them again, byte for byte. Messages are read as peek reads "
        "them (locked, then released: delivery counts go up by one).",
    )
    receiving(s, None)
    s.add_argument("--dlq", action="store_true", help="export ENTITY's dead-letter queue")
    s.add_argument("-o", "--output", help="write to this file (default: standard output)")
    s.add_argument("-q", "--quiet", action="store_true", help="no note about delivery counts")
    s.set_defaults(func=cmd_export)

    s = parser(
        "token",
        "print a SAS token",
        "Print a SharedAccessSignature token for URI (default: the connection string's "
        "endpoint), signed with --key-name/--key or the connection string's key.",
    )
    s.add_argument(
        "uri", nargs="?", help="resource URI (sb://, https:// or http://), e.g. https://ns.servicebus.windows.net/q"
    )
    s.add_argument("--key-name")
    s.add_argument("--key")
    s.add_argument(
        "--expiry",
        type=int,
        default=_core.PL_DEFAULT_TOKEN_LIFETIME_S,  # the core's token lifetime
        help="lifetime in seconds from now (default: %(default)s)",
    )
    common(s)
    s.set_defaults(func=cmd_token)

    s = sub.add_parser(
        "emulator",
        help="run the local Service Bus emulator",
        description="Run the local emulator (python -m peeklock.emulator); all "
        "arguments are passed on, e.g. --port 0 --queue orders "
        "--lock-duration 30. It prints a ready line with the "
        "connection string.",
        add_help=False,
    )
    s.add_argument("emulator_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_emulator)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # everything after `emulator` belongs to the emulator's own parser
        if argv[1:2] in (["-h"], ["--help"]):
            print(
                "usage: peeklock emulator [EMULATOR OPTIONS]\n\nRuns the local emulator "
                "(python -m peeklock.emulator); its options follow:\n",
                flush=True,
            )
        return cmd_emulator(argparse.Namespace(emulator_args=argv[1:]))
    if argv[:2] == ["dlq", "resubmit"]:
        argv = ["dlq-resubmit"] + argv[2:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except (Error, ValueError, TypeError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
            return EXIT_OK
        name = type(e).__name__ if isinstance(e, Error) else "error"
        _err(f"{name}: {e}")
        return exit_code(e)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
