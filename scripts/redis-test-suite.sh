#!/usr/bin/env bash
# Redis's own test suite (the Tcl `runtest` of the redis-server this machine
# has, from Debian's source package) run twice side by side: against
# redis-server directly, and against the same redis-server behind attache
# (single mode). Each unit runs on its own (`--single`), so an exception
# stops one unit, not the rest; the report lists, per unit, the tests that
# passed and failed each way, then every test that failed only through
# attache. About an hour on a 2-core machine; not part of CI.
#
#   bash scripts/redis-test-suite.sh [UNIT ...]   # default: every unit
#
# Needs root (or sudo) the first time: it adds Debian's source index
# (deb-src) to fetch the source package and installs tcl. It starts its own
# redis-servers (configured as the suite's tests/assets/default.conf) and
# attache on free ports, and stops them on exit. WORK (default
# target/redis-test-suite) keeps the source and the logs; ATTACHE_BIN
# (default target/release/attache, built if missing) is the binary run.
#
# Tests marked `external:skip` do not run against an external server
# (those that restart the server, read its log, replicate between servers).
# A few 7.0 tests assume a server the suite started (`srv pid`): they fail
# the same way directly, and are skipped both ways below.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
work=${WORK:-$root/target/redis-test-suite}
bin=${ATTACHE_BIN:-$root/target/release/attache}
log() { printf 'redis-test-suite: %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# Tests that need the suite's own server: they fail directly too.
skips=(
    "SRANDMEMBER with a dict containing long chain"
)

command -v redis-server >/dev/null || { log "install redis-server redis-tools first (bash scripts/test.sh --install-deps)"; exit 1; }
command -v tclsh >/dev/null || as_root apt-get install -y tcl
[[ -x $bin ]] || cargo build --release

version=$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
src=$work/redis-$version
if [[ ! -d $src/tests ]]; then
    mkdir -p "$work"
    if ! (cd "$work" && apt-get source --download-only redis >/dev/null 2>&1); then
        log "adding Debian's source index (deb-src) to fetch the redis source package"
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$codename" "$codename" | as_root tee /etc/apt/sources.list.d/attache-redis-src.sources >/dev/null
        as_root apt-get update -qq
        (cd "$work" && apt-get source --download-only redis >/dev/null)
    fi
    tar -xzf "$work"/redis_"$version".orig.tar.gz -C "$work"
    [[ -d $src/tests ]] || { log "the source package is not redis $version (the installed server)"; exit 1; }
fi
# The suite starts its tools from src/ (for the tests it runs externally:
# redis-cli, redis-benchmark).
mkdir -p "$src/src"
for tool in redis-server redis-cli redis-benchmark redis-check-aof redis-check-rdb; do
    ln -sf "$(command -v "$tool" || command -v redis-server)" "$src/src/$tool"
done
# Two copies: the runs write into tests/tmp.
for side in direct attache; do
    rm -rf "$work/$side"
    cp -a "$src" "$work/$side"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -f "test_helper.tcl.*--port (${direct_port:-none}|${attache_port:-none})" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# A fresh redis-server for each unit, so that what a unit leaves behind (a
# config, a pause, a slow save) cannot fail the next.
declare -A server_pid
start_redis() { # name port
    local dir=$work/servers/$1
    if [[ -n ${server_pid[$1]:-} ]]; then
        kill "${server_pid[$1]}" 2>/dev/null || true
        wait "${server_pid[$1]}" 2>/dev/null || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    { grep -v -E '^(#|$|port |daemonize |pidfile |logfile |dir |dbfilename |save )' "$src/tests/assets/default.conf"
      printf 'port %s\ndir %s\nlogfile %s/log\nsave ""\n' "$2" "$dir" "$dir"; } > "$dir/redis.conf"
    redis-server "$dir/redis.conf" &
    server_pid[$1]=$!
    pids+=($!)
}
wait_ping() {
    for port in "$@"; do
        for _ in $(seq 100); do
            [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
            sleep 0.1
        done
    done
}
direct_port=$(free_port); upstream_port=$(free_port); attache_port=$(free_port); admin_port=$(free_port)
start_redis direct "$direct_port"
start_redis upstream "$upstream_port"
cat > "$work/attache.toml" <<TOML
[admin]
listen = "127.0.0.1:$admin_port"

[redis.suite]
listen = "127.0.0.1:$attache_port"
mode = "single"
servers = ["127.0.0.1:$upstream_port"]
TOML
"$bin" run --config "$work/attache.toml" > "$work/attache.log" 2>&1 &
pids+=($!)
wait_ping "$direct_port" "$upstream_port" "$attache_port"

skip_args=()
for t in "${skips[@]}"; do skip_args+=(--skiptest "$t"); done
units=("$@")
[[ ${#units[@]} -gt 0 ]] || mapfile -t units < <(cd "$src" && ./runtest --list-tests 2>/dev/null)

plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
failed() { plain "$1" | grep -E '^\[(err|exception|TIMEOUT)\]' | sed 's/ in tests\/.*//' | sort -u; }
count() { plain "$1" | grep -c "^\[$2" || true; }
run_unit() { # side port baseport unit
    local out="$work/logs/$1/${4//\//_}.log"
    mkdir -p "$work/logs/$1"
    (cd "$work/$1" && timeout 900 ./runtest --host 127.0.0.1 --port "$2" --baseport "$3" \
        --timeout 300 --single "$4" "${skip_args[@]}" > "$out" 2>&1) || true
    echo "$out"
}
report=$work/report.md
{
    echo "# Redis $version's test suite: directly and through attache"
    echo
    echo "| unit | direct ok | direct failed | attache ok | attache failed |"
    echo "|---|---|---|---|---|"
} > "$report"
only_attache=()
for unit in "${units[@]}"; do
    log "$unit"
    start_redis direct "$direct_port"
    start_redis upstream "$upstream_port"
    wait_ping "$direct_port" "$upstream_port" "$attache_port"
    run_unit direct "$direct_port" 30000 "$unit" > /dev/null &
    direct_run=$!
    a=$(run_unit attache "$attache_port" 32000 "$unit")
    wait "$direct_run"
    d="$work/logs/direct/${unit//\//_}.log"
    echo "| $unit | $(count "$d" ok) | $(failed "$d" | wc -l) | $(count "$a" ok) | $(failed "$a" | wc -l) |" >> "$report"
    while IFS= read -r line; do
        [[ -n $line ]] && only_attache+=("$unit: $line")
    done < <(comm -13 <(failed "$d") <(failed "$a"))
done
{
    echo
    echo "## Failed through attache only"
    echo
    if [[ ${#only_attache[@]} -eq 0 ]]; then echo "None."; fi
    for line in "${only_attache[@]}"; do echo "- $line"; done
} >> "$report"
cat "$report"
log "logs in $work/logs (direct/, attache/); report in $report"
[[ ${#only_attache[@]} -eq 0 ]]
