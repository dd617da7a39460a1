#!/usr/bin/env python3
"""redis-py through attache: default handshake and everyday usage.

    python3 tests/clients/redis_py_compat.py HOST PORT

Run by tests/clients.rs against attache in front of a fresh redis-server
(the script flushes it). Every scenario runs with redis-py's default
protocol (RESP3 from redis-py 8 on) and with explicit protocol=3 and
protocol=2; pub/sub, blocking pops and client-side caching included. Prints
one line per scenario and exits 1 if any failed, naming what differed.
Install the client with `python3 -m pip install 'redis>=5'` (or
`bash scripts/test.sh --install-deps`).
"""

import asyncio
import os
import socket
import sys
import threading
import time
import traceback

try:
    import redis
    import redis.asyncio
except ImportError:
    sys.stderr.write(
        "redis-py is not installed: run `python3 -m pip install 'redis>=5'` "
        "or `bash scripts/test.sh --install-deps`\n"
    )
    sys.exit(3)

# Every socket read gives up after this long, so a hang in attache fails the
# scenario instead of the whole run.
SOCKET_TIMEOUT = 5.0


class Mismatch(Exception):
    pass


def eq(actual, expected, what):
    if actual != expected:
        raise Mismatch(f"{what}: expected {expected!r}, got {actual!r}")


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def s(value):
    """bytes -> str (replies come back as bytes unless decode_responses)."""
    if isinstance(value, bytes):
        return value.decode()
    return value


# ---------------------------------------------------------------------------
# Handshake capture: a one-connection TCP tee in front of attache recording
# what the client writes.


class Tee:
    def __init__(self, host, port):
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.received = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(
            target=self._pump, args=(client, upstream, self.sent), daemon=True
        ).start()
        self._pump(upstream, client, self.received)

    def _pump(self, src, dst, log):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    log.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def commands(self):
        with self.lock:
            return parse_commands(bytes(self.sent))


def parse_commands(buf):
    """RESP arrays of bulk strings (what clients send) -> lists of str."""
    out, i = [], 0
    while i < len(buf):
        if buf[i : i + 1] != b"*":
            end = buf.index(b"\r\n", i)
            out.append(buf[i:end].decode(errors="replace").split())
            i = end + 2
            continue
        end = buf.index(b"\r\n", i)
        n = int(buf[i + 1 : end])
        i = end + 2
        args = []
        for _ in range(n):
            end = buf.index(b"\r\n", i)
            ln = int(buf[i + 1 : end])
            i = end + 2
            args.append(buf[i : i + ln].decode(errors="replace"))
            i += ln + 2
        out.append(args)
    return out


# ---------------------------------------------------------------------------
# Scenarios. Each takes (host, port, proto) where proto is None (redis-py's
# default), 2 or 3.


def connect(host, port, proto, **kw):
    kwargs = dict(host=host, port=port, socket_timeout=SOCKET_TIMEOUT, **kw)
    if proto is not None:
        kwargs["protocol"] = proto
    return redis.Redis(**kwargs)


def expected_protocol(proto):
    if proto is not None:
        return proto
    major = int(redis.__version__.split(".")[0])
    return 3 if major >= 8 else 2


def redis_version(host, port):
    r = redis.Redis(host=host, port=port, protocol=2, socket_timeout=SOCKET_TIMEOUT)
    try:
        return tuple(int(x) for x in r.info("server")["redis_version"].split(".")[:2])
    finally:
        r.close()


def sc_flushall(host, port, proto):
    """Each round starts from an empty server (FLUSHALL through attache)."""
    r = connect(host, port, proto)
    eq(r.flushall(), True, "FLUSHALL")
    eq(r.dbsize(), 0, "DBSIZE after FLUSHALL")
    r.close()


def sc_handshake(host, port, proto):
    tee = Tee(host, port)
    r = connect("127.0.0.1", tee.port, proto)
    eq(r.ping(), True, "PING")
    conn = r.connection_pool.get_connection()
    try:
        want = expected_protocol(proto)
        eq(int(conn.protocol), want, "negotiated protocol")
        if want == 3:
            meta = {s(k): s(v) for k, v in (conn.handshake_metadata or {}).items()}
            eq(int(meta.get("proto", 0)), 3, "HELLO 3 reply's proto")
            check(meta.get("server") == "redis", f"HELLO reply: {meta}")
    finally:
        r.connection_pool.release(conn)
    r.close()
    time.sleep(0.05)
    cmds = tee.commands()
    shown = " | ".join(" ".join(c) for c in cmds)
    print(f"    redis-py {redis.__version__} protocol={proto} sends: {shown}")
    names = [c[0].upper() for c in cmds]
    if expected_protocol(proto) == 3:
        check(cmds and cmds[0][:2] == ["HELLO", "3"], f"first command not HELLO 3: {cmds}")
    else:
        check("HELLO" not in names, f"protocol=2 sent HELLO: {cmds}")
    eq(names[-1], "PING", "last command")


def sc_client_name(host, port, proto):
    r = connect(host, port, proto)
    eq(r.client_getname(), None, "CLIENT GETNAME before SETNAME")
    eq(r.client_setname("compat-py"), True, "CLIENT SETNAME")
    eq(s(r.client_getname()), "compat-py", "CLIENT GETNAME")
    named = connect(host, port, proto, client_name="named-at-connect")
    eq(s(named.client_getname()), "named-at-connect", "client_name= at connect")
    r.close()
    named.close()


def streams(reply):
    """XREAD's reply as [[stream, [(id, fields), ...]], ...] whatever the
    shape: redis-py's RESP2/legacy list, or explicit protocol=3's
    {stream: [[entries]]} map."""
    if isinstance(reply, dict):
        return [[k, v[0] if len(v) == 1 and isinstance(v[0], list) else v]
                for k, v in reply.items()]
    return reply


def sc_data_types(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    # strings
    eq(r.set("str", "v"), True, "SET")
    eq(r.get("str"), "v", "GET")
    eq(r.get("missing"), None, "GET missing")
    eq(r.incrby("n", 5), 5, "INCRBY")
    eq(r.incrbyfloat("f", 1.5), 1.5, "INCRBYFLOAT")
    eq(r.append("str", "w"), 2, "APPEND")
    eq(r.mset({"m1": "a", "m2": "b"}), True, "MSET")
    eq(r.mget("m1", "m2", "missing"), ["a", "b", None], "MGET")
    eq(r.set("ex", "x", ex=100), True, "SET EX")
    check(0 < r.ttl("ex") <= 100, "TTL")
    eq(r.set("str", "z", nx=True), None, "SET NX on existing key")
    # hashes
    eq(r.hset("h", mapping={"a": "1", "b": "2"}), 2, "HSET")
    eq(r.hgetall("h"), {"a": "1", "b": "2"}, "HGETALL")
    eq(r.hget("h", "a"), "1", "HGET")
    eq(r.hincrby("h", "a", 10), 11, "HINCRBY")
    eq(sorted(r.hkeys("h")), ["a", "b"], "HKEYS")
    eq(r.hgetall("nohash"), {}, "HGETALL missing")
    # lists
    eq(r.rpush("l", "a", "b", "c"), 3, "RPUSH")
    eq(r.lrange("l", 0, -1), ["a", "b", "c"], "LRANGE")
    eq(r.lpop("l"), "a", "LPOP")
    eq(r.lpos("l", "c"), 1, "LPOS")
    eq(r.lmove("l", "l2", "LEFT", "RIGHT"), "b", "LMOVE")
    # sets
    eq(r.sadd("set", "x", "y", "x"), 2, "SADD")
    eq(r.smembers("set"), {"x", "y"}, "SMEMBERS")
    eq(r.sismember("set", "x"), True, "SISMEMBER")
    eq(r.smismember("set", ["x", "q"]), [True, False], "SMISMEMBER")
    # sorted sets
    eq(r.zadd("z", {"one": 1, "two": 2, "three": 3}), 3, "ZADD")
    # RESP2 gives (member, score) tuples, RESP3 [member, score] lists
    eq([tuple(x) for x in r.zrange("z", 0, -1, withscores=True)],
       [("one", 1.0), ("two", 2.0), ("three", 3.0)], "ZRANGE WITHSCORES")
    eq(r.zscore("z", "two"), 2.0, "ZSCORE")
    eq(r.zincrby("z", 0.5, "one"), 1.5, "ZINCRBY")
    eq(r.zrangebyscore("z", 2, "+inf"), ["two", "three"], "ZRANGEBYSCORE")
    popped = r.zpopmin("z")
    if popped and not isinstance(popped[0], (list, tuple)):  # RESP3: flat [member, score]
        popped = [popped]
    eq([tuple(x) for x in popped], [("one", 1.5)], "ZPOPMIN")
    eq(r.zrank("z", "three"), 1, "ZRANK")
    # streams
    id1 = r.xadd("st", {"k": "v1"})
    id2 = r.xadd("st", {"k": "v2"})
    eq(r.xlen("st"), 2, "XLEN")
    eq(r.xrange("st"), [(id1, {"k": "v1"}), (id2, {"k": "v2"})], "XRANGE")
    eq(streams(r.xread({"st": "0"}, count=1)), [["st", [(id1, {"k": "v1"})]]], "XREAD")
    eq(r.xgroup_create("st", "g", id="0"), True, "XGROUP CREATE")
    eq(streams(r.xreadgroup("g", "c1", {"st": ">"}, count=10)),
       [["st", [(id1, {"k": "v1"}), (id2, {"k": "v2"})]]], "XREADGROUP")
    eq(r.xack("st", "g", id1, id2), 2, "XACK")
    eq(r.xinfo_stream("st")["length"], 2, "XINFO STREAM length")
    # misc
    eq(r.exists("str", "h", "nope"), 2, "EXISTS")
    eq(r.type("z"), "zset", "TYPE")
    eq(r.echo("hi"), "hi", "ECHO")
    eq(r.delete("str", "h", "l", "l2", "set", "z", "st", "nope"), 7, "DEL")
    r.close()


def sc_pipeline(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"p:{i}", i)
        pipe.get(f"p:{i}")
    replies = pipe.execute()
    eq(len(replies), 1000, "pipeline reply count")
    for i in range(500):
        eq(replies[2 * i], True, f"pipeline SET #{i}")
        eq(replies[2 * i + 1], str(i), f"pipeline GET #{i}")
    # an error in the middle of a pipeline is that command's reply only
    pipe = r.pipeline(transaction=False)
    pipe.set("pe", "x").incr("pe").get("pe")
    out = pipe.execute(raise_on_error=False)
    check(isinstance(out[1], redis.ResponseError), f"INCR on a string: {out[1]!r}")
    eq([out[0], out[2]], [True, "x"], "replies around the error")
    r.close()


def sc_multi_exec(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    r.set("tx", 1)
    pipe = r.pipeline(transaction=True)
    pipe.incr("tx").incr("tx").get("tx").hset("txh", "f", "v").hgetall("txh")
    eq(pipe.execute(), [2, 3, "3", 1, {"f": "v"}], "MULTI/EXEC replies")
    # EXEC with a queued runtime error: the others still run
    pipe = r.pipeline(transaction=True)
    pipe.set("txs", "a").incr("txs").get("txs")
    out = pipe.execute(raise_on_error=False)
    check(isinstance(out[1], redis.ResponseError), f"INCR in MULTI: {out[1]!r}")
    eq(out[2], "a", "GET after failed INCR in MULTI")
    # the connection is usable (and unpinned) afterwards
    eq(r.get("tx"), "3", "GET after EXEC")
    r.close()


def sc_watch_retry(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    other = connect(host, port, proto, decode_responses=True)
    r.set("bal", 10)
    attempts = 0
    with r.pipeline() as pipe:
        while True:
            attempts += 1
            try:
                pipe.watch("bal")
                bal = int(pipe.get("bal"))
                if attempts == 1:
                    other.set("bal", 100)  # someone else writes: EXEC must abort
                pipe.multi()
                pipe.set("bal", bal + 1)
                pipe.execute()
                break
            except redis.WatchError:
                if attempts > 3:
                    raise
                continue
    eq(attempts, 2, "attempts (first EXEC must fail with WatchError)")
    eq(r.get("bal"), "101", "balance after retry")

    # the helper: r.transaction(fn, *watches)
    def bump(pipe):
        v = int(pipe.get("bal"))
        pipe.multi()
        pipe.set("bal", v * 2)

    r.transaction(bump, "bal")
    eq(r.get("bal"), "202", "r.transaction()")
    # UNWATCH path: watch, then give up
    with r.pipeline() as pipe:
        pipe.watch("bal")
        pipe.unwatch()
    eq(r.get("bal"), "202", "GET after UNWATCH")
    r.close()
    other.close()


def sc_blpop(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    pusher = connect(host, port, proto)
    r.delete("bq")
    eq(r.blpop(["bq"], timeout=0.2), None, "BLPOP timing out")

    def push():
        time.sleep(0.3)
        pusher.rpush("bq", "job1")

    t = threading.Thread(target=push)
    start = time.monotonic()
    t.start()
    got = r.blpop(["bq", "other"], timeout=3)
    t.join()
    eq(got and list(got), ["bq", "job1"], "BLPOP with a push from another connection")
    check(time.monotonic() - start < 2.5, "BLPOP returned late")
    # the same connection serves ordinary commands afterwards
    eq(r.rpush("bq", "x"), 1, "RPUSH after BLPOP")
    eq(r.brpoplpush("bq", "bq2", timeout=1), "x", "BRPOPLPUSH")
    eq(r.bzpopmin("emptyz", timeout=0.1), None, "BZPOPMIN timing out")
    r.close()
    pusher.close()


def sc_pubsub(host, port, proto):
    # channel names differ per round: a subscriber of the previous round may
    # still be on its way out
    news, pattern, evx, jobs = (f"{c}.{proto}" for c in ("news", "ev", "ev", "jobs"))
    pattern, evx = pattern + ".*", evx + ".x"
    r = connect(host, port, proto, decode_responses=True)
    p = r.pubsub()
    p.subscribe(news)
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["channel"], msg["data"]), ("subscribe", news, 1),
       "subscribe confirmation")
    p.psubscribe(pattern)
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["data"]), ("psubscribe", 2), "psubscribe confirmation")
    pub = connect(host, port, proto, decode_responses=True)
    eq(pub.publish(news, "hello"), 1, "PUBLISH receivers")
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["channel"], msg["data"]), ("message", news, "hello"),
       "message")
    eq(pub.publish(evx, "boom"), 1, "PUBLISH to pattern")
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["pattern"], msg["channel"], msg["data"]),
       ("pmessage", pattern, evx, "boom"), "pmessage")
    eq(pub.pubsub_numsub(news), [(news, 1)], "PUBSUB NUMSUB")
    p.ping()
    msg = p.get_message(timeout=2)
    if expected_protocol(proto) == 2:
        check(msg and msg["type"] == "pong", f"PING while subscribed: {msg!r}")
    else:
        # RESP3 Redis answers a plain +PONG here, which redis-py's
        # get_message turns into a junk message (the same against
        # redis-server directly); it only has to arrive.
        check(msg is not None, "no reply to PING while subscribed")
    # a handler-driven subscription, with the worker thread
    got = []
    p2 = r.pubsub()
    p2.subscribe(**{jobs: lambda m: got.append(m["data"])})
    worker = p2.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        deadline = time.monotonic() + 2
        while pub.pubsub_numsub(jobs) != [(jobs, 1)] and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(20):
            pub.publish(jobs, str(i))
        deadline = time.monotonic() + 3
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
        worker.join(2)
    eq(got, [str(i) for i in range(20)], "messages via run_in_thread")
    p.unsubscribe(news)
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["channel"]), ("unsubscribe", news), "unsubscribe")
    p.close()
    p2.close()
    eq(pub.publish(news, "nobody"), 0, "PUBLISH after the subscriber left")
    r.close()
    pub.close()


def sc_pubsub_disconnect(host, port, proto):
    """A subscriber that goes away without UNSUBSCRIBE (a crashed or closed
    app) must stop counting as a receiver, as it does against Redis itself.

    Regression guard: attache once returned the pinned upstream connection
    to its pool still subscribed (a ghost subscriber that PUBLISH counted
    and PUBSUB NUMSUB showed). It now closes a dedicated connection that
    holds state, so Redis drops the subscription at once, as it would for
    the app's own connection."""
    channel = f"gone.{proto}"
    r = connect(host, port, proto, decode_responses=True)
    sub_client = connect(host, port, proto, decode_responses=True)
    p = sub_client.pubsub()
    p.subscribe(channel)
    msg = p.get_message(timeout=2)
    eq(msg and msg["type"], "subscribe", "SUBSCRIBE confirmation")
    eq(r.publish(channel, "x"), 1, "PUBLISH while subscribed")
    # Wait for it: a message still on its way when the app leaves would make
    # attache drop that upstream connection anyway, hiding a leak.
    msg = p.get_message(timeout=2)
    eq(msg and (msg["type"], msg["data"]), ("message", "x"), "message")
    # Close the socket without UNSUBSCRIBE, as a crashed app would.
    p.connection.disconnect()
    # PUBSUB NUMSUB, not PUBLISH: a message sent to a ghost would make
    # attache drop that upstream connection, which would hide the leak.
    deadline = time.monotonic() + 2
    while r.pubsub_numsub(channel) != [(channel, 0)]:
        if time.monotonic() > deadline:
            raise Mismatch(
                f"PUBSUB NUMSUB {channel} is {r.pubsub_numsub(channel)} 2 s after the only "
                "subscriber disconnected: attache left its upstream connection subscribed"
            )
        time.sleep(0.02)
    eq(r.publish(channel, "anyone?"), 0, "PUBLISH after the subscriber disconnected")
    p.close()
    sub_client.close()
    r.close()


def sc_client_tracking(host, port, proto):
    """CLIENT TRACKING ON (RESP3): invalidation pushes arrive on the same
    connection; and redis-py's client-side cache where the server has it."""
    if expected_protocol(proto) != 3:
        print("    (tracking pushes need RESP3: skipped)")
        return
    r = connect(host, port, proto, single_connection_client=True, decode_responses=True)
    other = connect(host, port, proto, decode_responses=True)
    pushes = []
    r.connection._parser.set_invalidation_push_handler(pushes.append)
    check(r.client_tracking_on() in (True, "OK"), "CLIENT TRACKING ON")
    other.set("tracked", "1")
    eq(r.get("tracked"), "1", "GET of a tracked key")
    other.set("tracked", "2")
    deadline = time.monotonic() + 2
    while not pushes and time.monotonic() < deadline:
        eq(r.ping(), True, "PING while tracking")
        time.sleep(0.02)
    eq(pushes[:1], [["invalidate", ["tracked"]]], "invalidation push")
    r.close()
    other.close()

    version = redis_version(host, port)
    if version < (7, 4):
        print(f"    (redis-py's client-side cache needs Redis 7.4+, upstream is {version}: skipped)")
        return
    from redis.cache import CacheConfig

    r = connect(host, port, proto, decode_responses=True, cache_config=CacheConfig())
    other = connect(host, port, proto, decode_responses=True)
    other.set("cached", "v1")
    eq(r.get("cached"), "v1", "first GET")
    eq(r.get("cached"), "v1", "GET from the cache")
    check(r.get_cache().size() >= 1, "cache is empty after GET")
    other.set("cached", "v2")
    deadline = time.monotonic() + 3
    while True:
        v = r.get("cached")
        if v == "v2":
            break
        if time.monotonic() > deadline:
            raise Mismatch(f"no invalidation: GET still {v!r} 3 s after another client's SET")
        time.sleep(0.05)
    r.close()
    other.close()


def sc_databases(host, port, proto):
    r0 = connect(host, port, proto, db=0, decode_responses=True)
    r2 = connect(host, port, proto, db=2, decode_responses=True)
    r0.delete("dbkey")
    eq(r2.set("dbkey", "in-2"), True, "SET in db 2")
    eq(r2.get("dbkey"), "in-2", "GET in db 2")
    eq(r0.get("dbkey"), None, "db 2's key seen from db 0")
    eq(r0.set("dbkey", "in-0"), True, "SET in db 0")
    eq(r2.get("dbkey"), "in-2", "db 0's write seen from db 2")
    fresh = connect(host, port, proto, db=2, decode_responses=True)
    eq(fresh.get("dbkey"), "in-2", "GET in db 2 from a new connection")
    eq(fresh.dbsize(), 1, "DBSIZE of db 2")
    # pipelines and transactions on a db=2 client stay in db 2
    eq(r2.pipeline().set("dbp", 1).incr("dbp").execute(), [True, 2], "MULTI in db 2")
    eq(r0.exists("dbp"), 0, "db 2's MULTI leaked into db 0")
    eq(r2.flushdb(), True, "FLUSHDB in db 2")
    eq(r0.get("dbkey"), "in-0", "FLUSHDB in db 2 flushed db 0")
    for c in (r0, r2, fresh):
        c.close()


def sc_admin(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    eq(r.flushall(), True, "FLUSHALL")
    eq(r.dbsize(), 0, "DBSIZE after FLUSHALL")
    cfg = r.config_get("maxmemory*")
    check("maxmemory" in cfg and "maxmemory-policy" in cfg, f"CONFIG GET: {cfg}")
    eq(r.config_set("maxmemory-policy", cfg["maxmemory-policy"]), True, "CONFIG SET")
    r.set("enc", "12345")
    eq(r.object("encoding", "enc"), "int", "OBJECT ENCODING")
    r.rpush("encl", "a")
    enc = r.object("encoding", "encl")
    check(enc in ("listpack", "quicklist"), f"OBJECT ENCODING list: {enc!r}")
    eq(r.function_flush(), True, "FUNCTION FLUSH")
    eq(r.function_list(), [], "FUNCTION LIST")
    info = r.info()
    check(isinstance(info, dict) and "redis_version" in info, "INFO has redis_version")
    check("connected_clients" in r.info("clients"), "INFO clients")
    eq(r.ping(), True, "PING")
    check(len(r.time()) == 2, "TIME")
    check(r.lastsave() is not None, "LASTSAVE")
    cmds = r.command_count()
    check(cmds > 100, f"COMMAND COUNT: {cmds}")
    r.close()


def sc_scan(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    r.flushall()
    with r.pipeline(transaction=False) as pipe:
        for i in range(500):
            pipe.set(f"scan:{i}", i)
        pipe.execute()
    r.set("other", 1)
    seen = list(r.scan_iter(match="scan:*", count=37))
    eq(len(seen), 500, "keys returned by SCAN")
    eq(set(seen), {f"scan:{i}" for i in range(500)}, "keys returned by SCAN")
    r.hset("bigh", mapping={f"f{i}": i for i in range(300)})
    eq(len(dict(r.hscan_iter("bigh", count=20))), 300, "HSCAN fields")
    r.close()


def sc_lua(host, port, proto):
    r = connect(host, port, proto, decode_responses=True)
    eq(r.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "lk", "lv"), "OK", "EVAL SET")
    eq(r.eval("return {KEYS[1], ARGV[1], 42}", 1, "a", "b"), ["a", "b", 42], "EVAL table")
    incr = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    eq(incr(keys=["lc"], args=[5]), 5, "Script() first call")
    eq(incr(keys=["lc"], args=[5]), 10, "Script() via EVALSHA")
    r.script_flush()
    eq(incr(keys=["lc"], args=[1]), 11, "Script() after SCRIPT FLUSH (NOSCRIPT -> reload)")
    pipe = r.pipeline()
    incr(keys=["lc"], args=[1], client=pipe)
    incr(keys=["lc"], args=[1], client=pipe)
    eq(pipe.execute(), [12, 13], "Script() in a MULTI pipeline")
    try:
        r.eval("return redis.error_reply('MYERR boom')", 0)
        raise Mismatch("EVAL error_reply did not raise")
    except redis.ResponseError as e:
        check("boom" in str(e), f"EVAL error: {e}")
    r.close()


def sc_concurrency(host, port, proto):
    """Many threads on one pool: the shared upstream connections multiplex
    them; every reply must reach its own caller."""
    r = connect(host, port, proto, decode_responses=True, max_connections=16)
    r.delete("ctr")
    errors = []

    def work(t):
        try:
            for i in range(100):
                r.incr("ctr")
                key = f"t{t}:{i}"
                r.set(key, key)
                got = r.get(key)
                if got != key:
                    errors.append(f"thread {t}: GET {key} -> {got!r}")
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {t}: {e!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    eq(errors, [], "thread errors")
    eq(r.get("ctr"), "1200", "INCR total")
    r.close()


def sc_asyncio(host, port, proto):
    async def main():
        kw = dict(host=host, port=port, socket_timeout=SOCKET_TIMEOUT, decode_responses=True)
        if proto is not None:
            kw["protocol"] = proto
        r = redis.asyncio.Redis(**kw)
        pub = redis.asyncio.Redis(**kw)
        try:
            eq(await r.ping(), True, "async PING")
            await r.set("ak", "av")
            eq(await r.get("ak"), "av", "async GET")
            results = await asyncio.gather(*(r.incr("actr") for _ in range(50)))
            eq(sorted(results), list(range(1, 51)), "concurrent async INCR")
            async with r.pipeline(transaction=True) as pipe:
                eq(await pipe.incr("actr").get("actr").execute(), [51, "51"], "async MULTI")
            p = r.pubsub()
            await p.subscribe(f"ach.{proto}")
            msg = await p.get_message(timeout=2)
            eq(msg and msg["type"], "subscribe", "async subscribe")
            eq(await pub.publish(f"ach.{proto}", "m"), 1, "async PUBLISH")
            msg = await p.get_message(ignore_subscribe_messages=True, timeout=2)
            eq(msg and msg["data"], "m", "async message")
            await p.aclose()
            eq(await r.blpop(["abq"], timeout=0.2), None, "async BLPOP timeout")
        finally:
            await r.aclose()
            await pub.aclose()

    asyncio.run(main())


SCENARIOS = [
    sc_flushall,
    sc_handshake,
    sc_client_name,
    sc_data_types,
    sc_pipeline,
    sc_multi_exec,
    sc_watch_retry,
    sc_blpop,
    sc_pubsub,
    sc_pubsub_disconnect,
    sc_client_tracking,
    sc_databases,
    sc_admin,
    sc_scan,
    sc_lua,
    sc_concurrency,
    sc_asyncio,
]


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: redis_py_compat.py HOST PORT\n")
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    print(f"redis-py {redis.__version__} against attache at {host}:{port}")
    only = os.environ.get("COMPAT_ONLY")  # e.g. COMPAT_ONLY=pubsub for one scenario
    failed = []
    for proto in (None, 3, 2):
        label = "default" if proto is None else f"protocol={proto}"
        for scenario in SCENARIOS:
            if only and scenario.__name__[3:] not in only.split(","):
                continue
            name = f"[{label}] {scenario.__name__[3:]}"
            start = time.monotonic()
            try:
                scenario(host, port, proto)
            except Exception as e:  # noqa: BLE001
                failed.append(name)
                print(f"FAIL {name}: {type(e).__name__}: {e}")
                if not isinstance(e, Mismatch):
                    traceback.print_exc(file=sys.stdout)
                continue
            print(f"ok   {name} ({time.monotonic() - start:.2f}s)")
    if failed:
        print(f"redis-py: {len(failed)} scenario(s) failed: {', '.join(failed)}")
        return 1
    print("redis-py: all scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
