"""``python -m peeklock.emulator``: run the Service Bus REST emulator. See docs/emulator.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Dict, List, Optional

from . import DEFAULT_KEY, DEFAULT_KEY_NAME, missing_dependency
from .broker import Broker
from .model import DEFAULT_COMPLETIONS_KEPT, MAX_LOCK_DURATION, BrokerError, Settings
from .config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m peeklock.emulator", description="Local emulator of the Azure Service Bus REST API."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    p.add_argument("--queue", action="append", default=[], metavar="NAME", help="declare a queue (repeatable)")
    p.add_argument("--topic", action="append", default=[], metavar="NAME", help="declare a topic (repeatable)")
    p.add_argument(
        "--subscription",
        action="append",
        default=[],
        metavar="TOPIC/SUB",
        help="declare a subscription (repeatable); the topic is created if missing",
    )
    p.add_argument(
        "--lock-duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="lock duration of declared entities (default 60, 1..300)",
    )
    p.add_argument("--max-delivery-count", type=int, default=10, metavar="N", help="default 10")
    p.add_argument("--max-message-size", type=int, default=262144, metavar="BYTES", help="default 262144")
    p.add_argument(
        "--default-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="default message time to live of declared entities (default: unlimited)",
    )
    p.add_argument(
        "--dead-letter-on-expiration", action="store_true", help="declared entities dead-letter expired messages"
    )
    p.add_argument("--config", metavar="Config.json", help="entities in the official emulator's Config.json format")
    p.add_argument("--data-dir", metavar="DIR", help="keep all state in SQLite under DIR (default: memory)")
    p.add_argument(
        "--completions-kept",
        type=int,
        default=DEFAULT_COMPLETIONS_KEPT,
        metavar="N",
        help="per entity, the completion counts of the N most recently completed message ids "
        "shown in the state dump; older ones are only counted (default %(default)s, 0 = none)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate the emulator makes (in --tls-dir); "
        "its path is printed on stderr",
    )
    p.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="where --tls keeps its certificate and key (default: DATA_DIR/tls with --data-dir, "
        "else a new temporary directory)",
    )
    p.add_argument("--cert", metavar="PEM", help="serve HTTPS with this certificate (chain) file; needs --cert-key")
    p.add_argument("--cert-key", dest="tls_key", metavar="PEM", help="the private key of --cert")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a SAS token")
    p.add_argument("--key-name", default=DEFAULT_KEY_NAME, help="SAS key name (default %(default)s)")
    p.add_argument("--key", default=DEFAULT_KEY, help="SAS key, used as UTF-8 text (default %(default)s)")
    p.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio loop even if uvloop is installed")
    p.add_argument(
        "--extra-key",
        action="append",
        default=[],
        metavar="NAME=KEY",
        help="accept tokens signed with another key name and key too (repeatable)",
    )
    p.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return p


def settings_from_args(args) -> Settings:
    if not 1 <= args.lock_duration <= MAX_LOCK_DURATION:
        raise SystemExit("error: --lock-duration must be between 1 and %d seconds" % MAX_LOCK_DURATION)
    if args.max_delivery_count < 1:
        raise SystemExit("error: --max-delivery-count must be >= 1")
    if args.max_message_size < 1:
        raise SystemExit("error: --max-message-size must be >= 1")
    s = Settings(
        lock_duration=args.lock_duration,
        max_delivery_count=args.max_delivery_count,
        max_message_size=args.max_message_size,
        dl_on_expiration=args.dead_letter_on_expiration,
    )
    if args.default_ttl is not None:
        if args.default_ttl <= 0:
            raise SystemExit("error: --default-ttl must be > 0")
        s.default_ttl = args.default_ttl
    return s


async def serve(args) -> int:
    from aiohttp import web

    from .server import EmulatorApp
    from .store import SqliteStore

    base = settings_from_args(args)
    if args.completions_kept < 0:
        raise SystemExit("error: --completions-kept must be >= 0")
    store = SqliteStore(args.data_dir) if args.data_dir else None
    broker = Broker(store=store, completions_kept=args.completions_kept)
    if store is not None:
        broker.restore(store.load())
    namespace = "peeklock"
    declared = []
    config_rules: Dict[str, Any] = {}
    if args.config:
        try:
            ns, ents, config_rules = load_config(args.config, base)
        except ConfigError as e:
            print("error: %s" % e, file=sys.stderr)
            return 2
        namespace = ns or namespace
        declared.extend(ents)
    declared += [(q, "queue", base.copy()) for q in args.queue]
    declared += [(t, "topic", base.copy()) for t in args.topic]
    for spec in args.subscription:
        if spec.count("/") != 1 or not all(spec.split("/")):
            print("error: --subscription takes TOPIC/SUB, got %r" % spec, file=sys.stderr)
            return 2
        topic, sub = spec.split("/")
        declared.append((topic, "topic", base.copy()))
        declared.append(("%s/subscriptions/%s" % (topic, sub), "subscription", base.copy()))
    try:
        for path, kind, settings in declared:
            ent = broker.get(path.lower())
            if ent is not None and ent.kind == kind:
                continue  # already there (restart on a data dir, or topic named twice)
            ent, _ = broker.create_entity(path, kind, settings)
            if path in config_rules:
                for f in config_rules[path].values():
                    f.created = ent.created
                ent.rules = dict(config_rules[path])
                broker.store.save_rules(ent)
    except BrokerError as e:
        print("error: %s" % e.detail, file=sys.stderr)
        return 2
    broker.store.commit()

    keys = None if args.no_auth else {args.key_name: args.key}
    for spec in args.extra_key:
        name, sep, key = spec.partition("=")
        if not sep or not name or not key:
            print("error: --extra-key takes NAME=KEY", file=sys.stderr)
            return 2
        if keys is not None:
            keys[name] = key
    ssl_ctx = None
    cert_path = None
    temp_dir = None
    if args.cert or args.tls_key:
        if not (args.cert and args.tls_key):
            print("error: --cert and --cert-key go together", file=sys.stderr)
            return 2
        cert_path = os.path.abspath(args.cert)
        key_path = os.path.abspath(args.tls_key)
    elif args.tls:
        from .tls import make_self_signed

        tls_dir = args.tls_dir or (os.path.join(args.data_dir, "tls") if args.data_dir else None)
        if tls_dir is None:
            tls_dir = temp_dir = tempfile.mkdtemp(prefix="peeklock-emulator-tls-")
        hosts = [args.host] if args.host not in ("0.0.0.0", "::", "") else []
        cert_path, key_path = make_self_signed(os.path.abspath(tls_dir), hosts)
    if cert_path is not None:
        from .tls import server_context

        try:
            ssl_ctx = server_context(cert_path, key_path)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            print("error: cannot use the certificate %s: %s" % (cert_path, e), file=sys.stderr)
            return 2
    emu = EmulatorApp(broker, keys, namespace)
    emu.default_settings = base
    if ssl_ctx is not None:
        emu.scheme = "https"
    server = emu.make_server(
        access_log=None, max_field_size=65536, max_line_size=65536, max_headers=256, keepalive_timeout=300
    )
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024, shutdown_timeout=5.0, ssl_context=ssl_ctx)
    try:
        await site.start()
    except OSError as e:
        print("error: cannot listen on %s:%d: %s" % (args.host, args.port, e.strerror), file=sys.stderr)
        await runner.cleanup()
        return 2
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    conn = "Endpoint=sb://%s:%d;SharedAccessKeyName=%s;SharedAccessKey=%s" % (host, port, args.key_name, args.key)
    if ssl_ctx is None:
        conn += ";UseDevelopmentEmulator=true"  # plain http (over TLS the clients' https default holds)
    else:
        sys.stderr.write("peeklock emulator certificate: %s\n" % cert_path)
        sys.stderr.flush()
    sys.stdout.write("peeklock emulator ready: %s\n" % conn)
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        emu.closing = True
        broker.wake_everything()
        await runner.cleanup()
        broker.store.close()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_dependency()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.no_uvloop:
        try:
            import uvloop  # optional: a faster event loop when installed

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
