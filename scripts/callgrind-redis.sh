#!/usr/bin/env bash
# User-space instructions per Redis GET through attache, measured with
# callgrind: steadier than time on a shared machine, so small hot-path
# changes can be compared (run it on two builds, side by side).
#
#   scripts/callgrind-redis.sh [BINARY] [REQUESTS]
#
# BINARY defaults to target/release/attache (build it first); REQUESTS to
# 40000. Needs redis-server, redis-benchmark and valgrind. It starts its own
# redis-server and attache on the ports below (override with REDIS_PORT,
# ATTACHE_PORT, ADMIN_PORT), runs redis-benchmark (50 connections, GET,
# pipeline 1, 100-byte values) twice, with 2,000 and with REQUESTS requests,
# and reports the difference per request, so start-up is not counted.
set -euo pipefail

bin=${1:-target/release/attache}
requests=${2:-40000}
redis_port=${REDIS_PORT:-17400}
attache_port=${ATTACHE_PORT:-17401}
admin_port=${ADMIN_PORT:-17402}
for tool in redis-server redis-benchmark redis-cli valgrind callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "no attache binary at $bin (cargo build --release)" >&2; exit 1; }

dir=$(mktemp -d)
redis_pid=
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/attache.toml" <<TOML
[admin]
listen = "127.0.0.1:$admin_port"

[redis.bench]
listen = "127.0.0.1:$attache_port"
mode = "single"
servers = ["127.0.0.1:$redis_port"]
server_connections = 1
TOML

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p "$redis_port" -n 20000 -r 10000 -d 100 -t set -q >/dev/null

# Instructions of one attache run serving $1 requests.
instructions() {
  local out="$dir/callgrind.$1"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" run --config "$dir/attache.toml" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do redis-cli -p "$attache_port" ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-benchmark -p "$attache_port" -c 50 -n "$1" -r 10000 -d 100 -t get -P 1 -q >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}'
}

base=$(instructions 2000)
total=$(instructions "$requests")
echo "$bin: $(( (total - base) / (requests - 2000) )) user-space instructions per GET"
