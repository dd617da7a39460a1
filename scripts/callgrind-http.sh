#!/usr/bin/env bash
# User-space instructions per proxied HTTP GET through attache's HTTP
# listener, measured with callgrind: steadier than time on a shared
# machine, so hot-path changes can be compared (run it on two builds).
#
#   scripts/callgrind-http.sh [BINARY] [SECONDS]
#
# BINARY defaults to target/release/attache (build it first); SECONDS, the
# longer of the two runs, to 8. Needs valgrind and wrk. The upstream is the
# HTTP load bench's own origin (`http_load --serve-upstream`, built here if
# needed): `GET /bytes/100` answered with 100 bytes and two headers. attache
# runs under callgrind twice, driven by wrk (50 connections) for 2 s and for
# SECONDS; the difference per request is reported, so start-up is not
# counted. Ports: ORIGIN_PORT, ATTACHE_PORT, ADMIN_PORT (17500-17502).
set -euo pipefail

bin=${1:-target/release/attache}
seconds=${2:-8}
origin_port=${ORIGIN_PORT:-17500}
attache_port=${ATTACHE_PORT:-17501}
admin_port=${ADMIN_PORT:-17502}
for tool in valgrind callgrind_annotate wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "no attache binary at $bin (cargo build --release)" >&2; exit 1; }
origin=$(cargo bench --bench http_load --no-run 2>&1 |
  sed -n 's/.*Executable benches\/http_load.rs (\(.*\))/\1/p' | tail -1)
[ -x "$origin" ] || { echo "could not build the http_load bench" >&2; exit 1; }

dir=$(mktemp -d)
origin_pid=
cleanup() {
  [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/attache.toml" <<TOML
[admin]
listen = "127.0.0.1:$admin_port"

[http.bench]
listen = "127.0.0.1:$attache_port"
upstream = "http://127.0.0.1:$origin_port"
max_idle_per_host = 64
TOML

"$origin" --serve-upstream --listen "127.0.0.1:$origin_port" --body-sizes 100 >/dev/null 2>&1 &
origin_pid=$!
for _ in $(seq 50); do curl -sf "localhost:$origin_port/bytes/100" >/dev/null && break; sleep 0.1; done

# "instructions requests" of one attache run driven for $1 seconds.
run() {
  local out="$dir/callgrind.$1"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" run --config "$dir/attache.toml" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$attache_port/bytes/100" >/dev/null && break; sleep 0.2; done
  local requests
  requests=$(wrk -t1 -c50 -d"$1s" "http://127.0.0.1:$attache_port/bytes/100" |
    awk '/requests in/ {print $1}')
  kill -INT "$pid"
  wait "$pid" || true
  local instructions
  instructions=$(callgrind_annotate "$out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}')
  echo "$instructions $requests"
}

read -r base_i base_r < <(run 2)
read -r total_i total_r < <(run "$seconds")
echo "$bin: $(( (total_i - base_i) / (total_r - base_r) )) user-space instructions per proxied GET"
