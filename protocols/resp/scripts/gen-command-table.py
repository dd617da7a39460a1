#!/usr/bin/env python3
"""Generate protocols/resp/src/command/table.rs from a real Redis server.

The command table is what the Redis server itself reports through
`COMMAND INFO` (arity, flags, key specs, tips, ACL categories, subcommands)
and `COMMAND DOCS` (the group), so attache routes exactly the commands the
upstream knows, the way the upstream finds their keys.

Usage:
    gen-command-table.py                 # start a throwaway redis-server
    gen-command-table.py --port 6379     # read from a server already running
    gen-command-table.py --check         # exit 1 if table.rs is out of date

stdlib only. The output is deterministic: commands, subcommands, flags and
categories are sorted, key specs keep Redis's order (their index matters).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SCRIPT = "protocols/resp/scripts/gen-command-table.py"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "..", "src", "command", "table.rs")

# Redis name -> Rust const, in bit order (mod.rs defines the bits).
COMMAND_FLAGS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript",
    "blocking", "loading", "stale", "skip_monitor", "skip_slowlog", "asking",
    "fast", "no_auth", "may_replicate", "no_mandatory_keys",
    "no_async_loading", "no_multi", "movablekeys", "allow_busy",
    "module_no_cluster",
]
COMMAND_FLAG_CONSTS = {
    f: {"movablekeys": "MOVABLE_KEYS", "denyoom": "DENY_OOM"}.get(f, f.upper())
    for f in COMMAND_FLAGS
}
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
    "bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast",
    "slow", "blocking", "dangerous", "connection", "transaction", "scripting",
]
KEY_FLAGS = [
    "RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key",
    "incomplete", "variable_flags",
]
REQUEST_POLICIES = {
    "all_nodes": "AllNodes", "all_shards": "AllShards",
    "multi_shard": "MultiShard", "special": "Special",
}
RESPONSE_POLICIES = {
    "one_succeeded": "OneSucceeded", "all_succeeded": "AllSucceeded",
    "agg_logical_and": "AggLogicalAnd", "agg_logical_or": "AggLogicalOr",
    "agg_min": "AggMin", "agg_max": "AggMax", "agg_sum": "AggSum",
    "special": "Special",
}
TIPS = ["nondeterministic_output", "nondeterministic_output_order"]
GROUPS = {
    "generic": "Generic", "string": "String", "list": "List", "set": "Set",
    "sorted-set": "SortedSet", "hash": "Hash", "pubsub": "Pubsub",
    "transactions": "Transactions", "connection": "Connection",
    "server": "Server", "scripting": "Scripting",
    "hyperloglog": "Hyperloglog", "cluster": "Cluster",
    "sentinel": "Sentinel", "geo": "Geo", "stream": "Stream",
    "bitmap": "Bitmap", "module": "Module",
}


class GenError(Exception):
    """Something Redis reported that this script (and mod.rs) can't express."""


# --- a minimal RESP2 client ---------------------------------------------------


class Resp:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def close(self):
        self.reader.close()
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        reply = self._read()
        if isinstance(reply, RespError):
            raise GenError("redis replied to %s: %s" % (" ".join(args), reply))
        return reply

    def _read(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise GenError("connection closed mid-reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise GenError("unexpected RESP type byte %r" % kind)


class RespError(str):
    pass


def pairs(flat):
    """A RESP2 flattened map [k1, v1, k2, v2, ...] as a dict."""
    if flat is None:
        return {}
    if len(flat) % 2:
        raise GenError("odd-length map: %r" % (flat,))
    return dict(zip(flat[0::2], flat[1::2]))


# --- running a throwaway server -----------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(redis_server):
    """Start redis-server on a free loopback port; returns (proc, port, dir)."""
    workdir = tempfile.mkdtemp(prefix="attache-gen-")
    for _ in range(5):  # the free port can be taken between probe and bind
        port = free_port()
        proc = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", workdir,
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = Resp("127.0.0.1", port)
                try:
                    if conn.call("PING") == "PONG":
                        return proc, port, workdir
                finally:
                    conn.close()
            except (OSError, GenError):
                time.sleep(0.05)
        stop_server(proc)
    shutil.rmtree(workdir, ignore_errors=True)
    raise GenError("could not start %s" % redis_server)


def stop_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(host, port):
    conn = Resp(host, port)
    try:
        info = conn.call("COMMAND", "INFO")
        docs = pairs(conn.call("COMMAND", "DOCS"))
        server = conn.call("INFO", "server")
    finally:
        conn.close()
    version = None
    for line in server.splitlines():
        if line.startswith("redis_version:"):
            version = line.split(":", 1)[1].strip()
    if not version:
        raise GenError("INFO server has no redis_version")
    return info, docs, version


# --- model --------------------------------------------------------------------


def bits(names, known, what, render):
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise GenError("unknown %s %s: add it to mod.rs and this script" % (what, unknown))
    present = [render(n) for n in known if n in names]
    return " | ".join(present) if present else "0"


def key_spec(raw):
    spec = pairs(raw)
    flags = bits(spec.get("flags") or [], KEY_FLAGS, "key-spec flag",
                 lambda f: f.upper())
    bs = pairs(spec["begin_search"])
    bs_args = pairs(bs.get("spec"))
    if bs["type"] == "index":
        begin = "index(%d)" % bs_args["index"]
    elif bs["type"] == "keyword":
        begin = "keyword(%s, %d)" % (rust_str(bs_args["keyword"]), bs_args["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        raise GenError("unknown begin_search type %r" % bs["type"])
    fk = pairs(spec["find_keys"])
    fk_args = pairs(fk.get("spec"))
    if fk["type"] == "range":
        find = "range(%d, %d, %d)" % (fk_args["lastkey"], fk_args["keystep"], fk_args["limit"])
    elif fk["type"] == "keynum":
        find = "keynum(%d, %d, %d)" % (fk_args["keynumidx"], fk_args["firstkey"], fk_args["keystep"])
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        raise GenError("unknown find_keys type %r" % fk["type"])
    return "KeySpec { flags: %s, begin_search: %s, find_keys: %s }" % (flags, begin, find)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def static_name(name):
    return name.upper().replace("|", "_").replace("-", "_") + "_SUBCOMMANDS"


def entry(raw, docs, statics):
    """One CommandSpec literal; subcommand tables are appended to `statics`."""
    (name, arity, flags, first, last, step, acl, tips, specs, subs) = raw[:10]
    name = name.lower()
    doc = pairs(docs.get(name))
    group = doc.get("group")
    if group not in GROUPS:
        raise GenError("%s: unknown group %r" % (name, group))
    fields = [
        "name: %s" % rust_str(name),
        "group: Group::%s" % GROUPS[group],
        "arity: %d" % arity,
        "flags: %s" % bits(flags, COMMAND_FLAGS, "command flag",
                           lambda f: COMMAND_FLAG_CONSTS[f]),
    ]
    if (first, last, step) != (0, 0, 0):
        fields.append("first_key: %d, last_key: %d, key_step: %d" % (first, last, step))
    categories = [c.lstrip("@") for c in acl]
    fields.append("acl_categories: %s" % bits(categories, ACL_CATEGORIES, "ACL category",
                                              lambda c: "acl::" + c.upper()))
    plain_tips = []
    for t in tips:
        kind, _, value = t.partition(":")
        if kind == "request_policy" and value in REQUEST_POLICIES:
            fields.append("request_policy: Some(RequestPolicy::%s)" % REQUEST_POLICIES[value])
        elif kind == "response_policy" and value in RESPONSE_POLICIES:
            fields.append("response_policy: Some(ResponsePolicy::%s)" % RESPONSE_POLICIES[value])
        else:
            plain_tips.append(t)
    if plain_tips:
        fields.append("tips: %s" % bits(plain_tips, TIPS, "tip", lambda t: "tip::" + t.upper()))
    if specs:
        fields.append("key_specs: &[%s]" % ", ".join(key_spec(s) for s in specs))
    if subs:
        sub_docs = pairs(doc.get("subcommands"))
        ordered = sorted(subs, key=lambda s: s[0].lower())
        table = static_name(name)
        statics.append((table, [entry(s, sub_docs, statics) for s in ordered]))
        fields.append("subcommands: &%s" % table)
    return "CommandSpec { %s, ..BLANK }" % ", ".join(fields)


def render(info, docs, version):
    statics = []
    top = [entry(c, docs, statics) for c in sorted(info, key=lambda c: c[0].lower())]
    names = [c[0].lower() for c in info]
    if len(set(names)) != len(names):
        raise GenError("duplicate command names")
    out = [
        "//! The Redis command table. @generated: do not edit.",
        "//!",
        "//! Generated by `%s` from `COMMAND INFO` and" % SCRIPT,
        "//! `COMMAND DOCS` of Redis %s. Do not edit: regenerate with the script" % version,
        "//! (see its `--help`); hand-written code lives in `mod.rs`.",
        "",
        "use super::key_flag::*;",
        "use super::spec::{index, keynum, keyword, range, BLANK};",
        "use super::*;",
        "",
        "/// The Redis version this table was generated from.",
        "pub(super) const REDIS_VERSION: &str = %s;" % rust_str(version),
        "",
        "/// Every command, sorted by name for binary search.",
        "#[rustfmt::skip]",
        "pub(super) static COMMANDS: [CommandSpec; %d] = [" % len(top),
    ]
    out += ["    %s," % e for e in top]
    out.append("];")
    for table, entries in sorted(statics):
        out += ["", "#[rustfmt::skip]",
                "static %s: [CommandSpec; %d] = [" % (table, len(entries))]
        out += ["    %s," % e for e in entries]
        out.append("];")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int,
                        help="read from a running server on this port instead of starting one")
    parser.add_argument("--host", default="127.0.0.1", help="host for --port (default 127.0.0.1)")
    parser.add_argument("--redis-server", default="redis-server",
                        help="redis-server binary to start (default: from PATH)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where to write table.rs")
    parser.add_argument("--check", action="store_true",
                        help="don't write; exit 1 if --output differs from what would be written")
    args = parser.parse_args()

    try:
        if args.port:
            info, docs, version = fetch(args.host, args.port)
        else:
            proc, port, workdir = start_server(args.redis_server)
            try:
                info, docs, version = fetch("127.0.0.1", port)
            finally:
                stop_server(proc)
                shutil.rmtree(workdir, ignore_errors=True)
        text = render(info, docs, version)
    except (GenError, OSError) as e:
        print("gen-command-table: %s" % e, file=sys.stderr)
        return 2

    output = os.path.normpath(args.output)
    if args.check:
        try:
            with open(output) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print("%s is out of date (Redis %s); regenerate it" % (output, version), file=sys.stderr)
            return 1
        return 0
    with open(output, "w") as f:
        f.write(text)
    print("wrote %s: %d commands from Redis %s" % (output, len(info), version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
