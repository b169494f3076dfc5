#!/usr/bin/env python3
"""A null responder for the client benchmarks: nginx (Debian's) answering every send,
peek-lock and settle with canned Service Bus replies, for any entity, on a free loopback
port. It is the cheapest server that gives the replies, so a client's own CPU per operation
is measured with the least interference from a server sharing the machine's cores.

As a module:   with NullResponder() as null: ... null.url, null.connection_string
As a command:  .venv/bin/python bench/null_responder.py [--dir DIR] -- CMD ARGS...
               runs CMD with "{url}" and "{connection_string}" in ARGS replaced, and the same
               values in the environment as PEEKLOCK_NULL_URL / PEEKLOCK_NULL_CONNECTION_STRING.

The canned peek-lock answer has no LockedUntilUtc (nginx's own Date header moves, so the
clients fall back to their default lock duration) and always the same lock token.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

TOKEN = "acccce0e-7596-4e0c-b216-2d18638ac0dd"
BROKER_PROPERTIES = (
    '{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Sat, 25 Oct 2014 00:56:48 GMT",'
    f'"LockToken":"{TOKEN}","MessageId":"aa68f8aebd8448e194d85fec93e80d55","SequenceNumber":1,'
    '"State":"Active","TimeToLive":922337203685.47754}'
)
BODY = '{"order":12345,"item":"benchmark payload","qty":3,"note":"............"}'

CONF = """worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type "application/xml; charset=utf-8";
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/[^/]+/messages$ {{ return 201 ""; }}
    location ~ ^/([^/]+)/messages/head$ {{
      add_header BrokerProperties '{bp}' always;
      add_header Location "http://127.0.0.1:{port}/$1/messages/1/{token}" always;
      add_header Priority '"high"' always;
      return 201 '{body}';
    }}
    location ~ ^/[^/]+/messages/ {{ return 200 ""; }}
    location / {{ return 404 ""; }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NullResponder:
    def __init__(self, directory: Optional[str] = None) -> None:
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.dir = os.path.abspath(directory) if directory else tempfile.mkdtemp(prefix="peeklock-null-")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connection_string = (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=null-responder-key;UseDevelopmentEmulator=true"
        )

    def start(self) -> "NullResponder":
        for sub in ("logs", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(d=self.dir, port=self.port, bp=BROKER_PROPERTIES, token=TOKEN, body=BODY))
        out = subprocess.run([self.nginx, "-p", self.dir, "-c", conf], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"nginx did not start: {out.stderr.strip()}")
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not listen")
                time.sleep(0.05)

    def stop(self) -> None:
        try:
            with open(os.path.join(self.dir, "nginx.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "NullResponder":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: List[str]) -> int:
    directory = None
    if argv[:1] == ["--dir"] and len(argv) > 1:
        directory, argv = argv[1], argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        print("usage: null_responder.py [--dir DIR] -- CMD ARGS...", file=sys.stderr)
        return 2
    with NullResponder(directory) as null:
        args = [a.replace("{url}", null.url).replace("{connection_string}", null.connection_string) for a in argv[1:]]
        env = dict(os.environ, PEEKLOCK_NULL_URL=null.url, PEEKLOCK_NULL_CONNECTION_STRING=null.connection_string)
        return subprocess.run(args, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
