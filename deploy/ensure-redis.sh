#!/usr/bin/env bash
# Start a throw-away Redis on 127.0.0.1:6379 unless something already answers there.
set -euo pipefail
port="${REDIS_PORT:-6379}"
ping_redis() { (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping_redis; then exit 0; fi
if ! command -v redis-server >/dev/null; then
  echo "redis-server not found; installing it from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir /tmp --logfile "/tmp/llmrec-redis-$port.log"
for _ in $(seq 50); do ping_redis && exit 0; sleep 0.1; done
echo "Redis did not answer on 127.0.0.1:$port (see /tmp/llmrec-redis-$port.log)" >&2
exit 1
