#!/usr/bin/env bash
# Builds and runs the C benchmark: peeklock vs raw libcurl against an nginx null
# responder (canned Service Bus replies, configured under build/bench) and
# against the emulator. Usage: bench/c/run.sh [-n N] [-m M]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
B="$ROOT/build/bench"
PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DPEEKLOCK_BENCH=ON -DPEEKLOCK_TESTS=OFF >/dev/null
cmake --build "$B" --target bench_c -j "$(nproc)" >/dev/null

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
N="$B/nginx"
mkdir -p "$N/logs" "$N/tmp"
TOKEN=acccce0e-7596-4e0c-b216-2d18638ac0dd
# LockedUntilUtc is left out of the canned BrokerProperties: nginx's own Date
# header moves, so the client uses its default lock duration here.
BP='{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Sat, 25 Oct 2014 00:56:48 GMT","LockToken":"'$TOKEN'","MessageId":"aa68f8aebd8448e194d85fec93e80d55","SequenceNumber":1,"State":"Active","TimeToLive":922337203685.47754}'
cat > "$N/nginx.conf" <<CONF
worker_processes 1;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type "application/xml; charset=utf-8";
  server {
    listen 127.0.0.1:$PORT;
    location = /bq/messages { return 201 ""; }
    location = /bq/messages/head {
      add_header BrokerProperties '$BP' always;
      add_header Location "http://127.0.0.1:$PORT/bq/messages/1/$TOKEN" always;
      add_header priority '"high"' always;
      return 201 '{"order":12345,"item":"benchmark payload","qty":3,"note":"............"}';
    }
    location /bq/messages/ { return 200 ""; }
  }
}
CONF
nginx -p "$N" -c "$N/nginx.conf"
trap 'kill "$(cat "$N/nginx.pid")" 2>/dev/null || true' EXIT
for i in $(seq 50); do
  "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
  sleep 0.1
done
PEEKLOCK_EMULATOR_ARGS="--queue bq" "$PY" tests/c/with_emulator.py \
  "$B/bench/c/bench_c" --null "http://127.0.0.1:$PORT" --emulator "$@"
