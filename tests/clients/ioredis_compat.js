#!/usr/bin/env node
// ioredis through attache: default handshake and everyday usage.
//
//   node tests/clients/ioredis_compat.js HOST PORT
//
// Run by tests/clients.rs against attache in front of a fresh redis-server
// (the script flushes it). Every scenario runs with ioredis' default options
// (RESP3 from ioredis 6 on) and with `protocol: 2`. Prints one line per
// scenario and exits 1 if any failed, naming what differed. Install with
// `npm ci --prefix tests/clients` (or `bash scripts/test.sh --install-deps`).
"use strict";

const net = require("net");

let Redis;
try {
  Redis = require("ioredis");
} catch (e) {
  console.error(
    "ioredis is not installed: run `npm ci --prefix tests/clients` " +
      "or `bash scripts/test.sh --install-deps`",
  );
  process.exit(3);
}
const VERSION = require("ioredis/package.json").version;

class Mismatch extends Error {}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Mismatch(`${what}: expected ${e}, got ${a}`);
}

function check(cond, what) {
  if (!cond) throw new Mismatch(what);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Rejects if `promise` takes longer than `ms`: a hang fails its scenario.
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Mismatch(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// Handshake capture: a one-connection TCP tee in front of attache recording
// what the client writes.

function tee(host, port) {
  const sent = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    client.on("data", (d) => {
      sent.push(d);
      upstream.write(d);
    });
    upstream.on("data", (d) => client.write(d));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        commands: () => parseCommands(Buffer.concat(sent)),
        close: () => server.close(),
      }),
    ),
  );
}

// RESP arrays of bulk strings (what clients send) -> arrays of strings.
function parseCommands(buf) {
  const out = [];
  let i = 0;
  const line = () => {
    const end = buf.indexOf("\r\n", i);
    const s = buf.toString("utf8", i, end);
    i = end + 2;
    return s;
  };
  while (i < buf.length) {
    const head = line();
    if (head[0] !== "*") {
      out.push(head.split(" "));
      continue;
    }
    const args = [];
    for (let n = Number(head.slice(1)); n > 0; n--) {
      const len = Number(line().slice(1));
      args.push(buf.toString("utf8", i, i + len));
      i += len + 2;
    }
    out.push(args);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Scenarios: async (host, port, proto) with proto undefined (the default) or 2.

const opened = [];

function connect(host, port, proto, extra = {}) {
  const options = {
    host,
    port,
    // fail fast instead of retrying: a broken reply must surface
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    ...extra,
  };
  if (proto !== undefined) options.protocol = proto;
  const client = new Redis(options);
  client.on("error", () => {}); // surfaced through the commands' promises
  opened.push(client);
  return client;
}

async function closeAll() {
  while (opened.length) {
    const c = opened.pop();
    try {
      if (c.status === "ready") await within(2000, c.quit(), "QUIT");
    } catch (e) {
      // fall through to disconnect
    }
    c.disconnect();
  }
}

const expectedProtocol = (proto) => (proto === undefined ? (Number(VERSION.split(".")[0]) >= 6 ? 3 : 2) : proto);

async function scFlushall(host, port, proto) {
  const r = connect(host, port, proto);
  eq(await r.flushall(), "OK", "FLUSHALL");
  eq(await r.dbsize(), 0, "DBSIZE after FLUSHALL");
}

async function scHandshake(host, port, proto) {
  const t = await tee(host, port);
  const r = connect("127.0.0.1", t.port, proto);
  eq(await r.ping(), "PONG", "PING");
  await r.quit();
  await sleep(50);
  t.close();
  const cmds = t.commands();
  console.log(
    `    ioredis ${VERSION} protocol=${proto ?? "default"} sends: ` +
      cmds.map((c) => c.join(" ")).join(" | "),
  );
  const names = cmds.map((c) => c[0].toUpperCase());
  if (expectedProtocol(proto) === 3) {
    check(
      cmds[0][0].toUpperCase() === "HELLO" && cmds[0][1] === "3",
      `first command is not HELLO 3: ${JSON.stringify(cmds)}`,
    );
  } else {
    check(!names.includes("HELLO"), `protocol 2 sent HELLO: ${JSON.stringify(cmds)}`);
  }
  check(names.includes("PING") && names.includes("QUIT"), `PING/QUIT missing: ${JSON.stringify(cmds)}`);
}

async function scClientName(host, port, proto) {
  const r = connect(host, port, proto, { connectionName: "compat-ioredis" });
  eq(await r.client("GETNAME"), "compat-ioredis", "connectionName= at connect");
  eq(await r.client("SETNAME", "renamed"), "OK", "CLIENT SETNAME");
  eq(await r.client("GETNAME"), "renamed", "CLIENT GETNAME");
}

async function scDataTypes(host, port, proto) {
  const r = connect(host, port, proto);
  eq(await r.set("str", "v"), "OK", "SET");
  eq(await r.get("str"), "v", "GET");
  eq(await r.get("missing"), null, "GET missing");
  eq(await r.incrby("n", 5), 5, "INCRBY");
  eq(await r.incrbyfloat("f", 1.5), "1.5", "INCRBYFLOAT");
  eq(await r.set("ex", "x", "EX", 100, "NX"), "OK", "SET EX NX");
  eq(await r.set("ex", "y", "EX", 100, "NX"), null, "SET NX on an existing key");
  eq(await r.mget("str", "missing", "n"), ["v", null, "5"], "MGET");
  eq(await r.hset("h", { a: "1", b: "2" }), 2, "HSET");
  eq(await r.hgetall("h"), { a: "1", b: "2" }, "HGETALL");
  eq(await r.hgetall("nohash"), {}, "HGETALL missing");
  eq(await r.rpush("l", "a", "b", "c"), 3, "RPUSH");
  eq(await r.lrange("l", 0, -1), ["a", "b", "c"], "LRANGE");
  eq(await r.lpop("l"), "a", "LPOP");
  eq(await r.sadd("set", "x", "y", "x"), 2, "SADD");
  eq((await r.smembers("set")).sort(), ["x", "y"], "SMEMBERS");
  eq(await r.sismember("set", "x"), 1, "SISMEMBER");
  eq(await r.zadd("z", 1, "one", 2, "two", 3, "three"), 3, "ZADD");
  eq(await r.zrange("z", 0, -1, "WITHSCORES"), ["one", "1", "two", "2", "three", "3"], "ZRANGE WITHSCORES");
  eq(await r.zscore("z", "two"), "2", "ZSCORE");
  eq(await r.zincrby("z", 0.5, "one"), "1.5", "ZINCRBY");
  const id1 = await r.xadd("st", "*", "k", "v1");
  const id2 = await r.xadd("st", "*", "k", "v2");
  eq(await r.xlen("st"), 2, "XLEN");
  eq(await r.xrange("st", "-", "+"), [[id1, ["k", "v1"]], [id2, ["k", "v2"]]], "XRANGE");
  eq(await r.xread("COUNT", 1, "STREAMS", "st", "0"), [["st", [[id1, ["k", "v1"]]]]], "XREAD");
  eq(await r.xgroup("CREATE", "st", "g", "0"), "OK", "XGROUP CREATE");
  eq(
    await r.xreadgroup("GROUP", "g", "c1", "COUNT", 10, "STREAMS", "st", ">"),
    [["st", [[id1, ["k", "v1"]], [id2, ["k", "v2"]]]]],
    "XREADGROUP",
  );
  eq(await r.xack("st", "g", id1, id2), 2, "XACK");
  eq(await r.type("z"), "zset", "TYPE");
  eq(await r.del("str", "h", "l", "set", "z", "st", "nope"), 6, "DEL");
  eq(await r.getBuffer("n"), Buffer.from("5"), "getBuffer");
}

async function scPipeline(host, port, proto) {
  const r = connect(host, port, proto);
  const p = r.pipeline();
  for (let i = 0; i < 500; i++) p.set(`p:${i}`, i).get(`p:${i}`);
  const out = await p.exec();
  eq(out.length, 1000, "pipeline reply count");
  for (let i = 0; i < 500; i++) {
    eq(out[2 * i], [null, "OK"], `pipeline SET #${i}`);
    eq(out[2 * i + 1], [null, String(i)], `pipeline GET #${i}`);
  }
  const mixed = await r.pipeline().set("pe", "x").incr("pe").get("pe").exec();
  check(mixed[1][0] instanceof Error, `INCR on a string: ${JSON.stringify(mixed[1])}`);
  eq([mixed[0], mixed[2]], [[null, "OK"], [null, "x"]], "replies around the error");
}

async function scAutoPipelining(host, port, proto) {
  const r = connect(host, port, proto, { enableAutoPipelining: true });
  const n = 1000;
  const replies = await Promise.all(Array.from({ length: n }, (_, i) => r.set(`ap:${i}`, i).then(() => r.get(`ap:${i}`))));
  eq(replies, Array.from({ length: n }, (_, i) => String(i)), "auto-pipelined GETs");
  const incrs = await Promise.all(Array.from({ length: 200 }, () => r.incr("apc")));
  eq(incrs.sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i + 1), "auto-pipelined INCRs");
}

async function scMulti(host, port, proto) {
  const r = connect(host, port, proto);
  await r.set("tx", 1);
  const out = await r.multi().incr("tx").incr("tx").get("tx").hset("txh", "f", "v").hgetall("txh").exec();
  eq(out, [[null, 2], [null, 3], [null, "3"], [null, 1], [null, { f: "v" }]], "MULTI/EXEC replies");
  const bad = await r.multi().set("txs", "a").incr("txs").get("txs").exec();
  check(bad[1][0] instanceof Error, `INCR in MULTI: ${JSON.stringify(bad[1])}`);
  eq(bad[2], [null, "a"], "GET after a failed INCR in MULTI");
  // multi({pipeline: false}): MULTI, commands and EXEC sent one by one
  eq(await r.multi({ pipeline: false }), "OK", "MULTI");
  eq(await r.set("tx2", "a"), "QUEUED", "SET in MULTI");
  eq(await r.get("tx2"), "QUEUED", "GET in MULTI");
  eq(await r.exec(), [[null, "OK"], [null, "a"]], "multi({pipeline: false}) EXEC");
  eq(await r.get("tx"), "3", "GET after EXEC");
}

async function scWatchRetry(host, port, proto) {
  const r = connect(host, port, proto);
  const other = connect(host, port, proto);
  await r.set("bal", 10);
  let attempts = 0;
  for (;;) {
    attempts++;
    check(attempts <= 3, "too many WATCH retries");
    await r.watch("bal");
    const bal = Number(await r.get("bal"));
    if (attempts === 1) await other.set("bal", 100); // EXEC must abort
    const res = await r.multi().set("bal", bal + 1).exec();
    if (res === null) continue; // aborted: retry
    break;
  }
  eq(attempts, 2, "attempts (the first EXEC must abort)");
  eq(await r.get("bal"), "101", "balance after retry");
  await r.watch("bal");
  eq(await r.unwatch(), "OK", "UNWATCH");
  eq(await r.get("bal"), "101", "GET after UNWATCH");
}

async function scBlpop(host, port, proto) {
  const r = connect(host, port, proto);
  const pusher = connect(host, port, proto);
  eq(await within(3000, r.blpop("bq", 0.2), "BLPOP timing out"), null, "BLPOP timing out");
  const start = Date.now();
  setTimeout(() => pusher.rpush("bq", "job1"), 300);
  eq(await within(4000, r.blpop("bq", "other", 3), "BLPOP"), ["bq", "job1"], "BLPOP with a push from another client");
  check(Date.now() - start < 2500, "BLPOP returned late");
  eq(await r.rpush("bq", "x"), 1, "RPUSH after BLPOP");
  eq(await r.brpoplpush("bq", "bq2", 1), "x", "BRPOPLPUSH");
  eq(await within(3000, r.bzpopmin("emptyz", 0.1), "BZPOPMIN"), null, "BZPOPMIN timing out");
}

async function waitFor(what, ms, pred) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v === true) return;
    if (Date.now() > deadline) throw new Mismatch(`${what}: still ${JSON.stringify(v)} after ${ms} ms`);
    await sleep(20);
  }
}

async function scPubsub(host, port, proto) {
  const tag = proto ?? "default";
  const news = `news.${tag}`;
  const pattern = `ev.${tag}.*`;
  const evx = `ev.${tag}.x`;
  const sub = connect(host, port, proto);
  const pub = connect(host, port, proto);
  const got = [];
  sub.on("message", (ch, msg) => got.push(["message", ch, msg]));
  sub.on("pmessage", (pat, ch, msg) => got.push(["pmessage", pat, ch, msg]));
  eq(await sub.subscribe(news), 1, "SUBSCRIBE count");
  eq(await sub.psubscribe(pattern), 2, "PSUBSCRIBE count");
  eq(await pub.publish(news, "hello"), 1, "PUBLISH receivers");
  eq(await pub.publish(evx, "boom"), 1, "PUBLISH to the pattern");
  for (let i = 0; i < 50; i++) await pub.publish(news, String(i));
  await waitFor("messages", 3000, async () => got.length >= 52 || got.length);
  eq(got.slice(0, 2), [["message", news, "hello"], ["pmessage", pattern, evx, "boom"]], "first messages");
  eq(got.slice(2).map((m) => m[2]), Array.from({ length: 50 }, (_, i) => String(i)), "50 messages in order");
  eq(await pub.pubsub("NUMSUB", news), [news, 1], "PUBSUB NUMSUB");
  // PING is allowed while subscribed (RESP2 answers ["pong", ""], RESP3 PONG)
  const pong = await within(2000, sub.ping(), "PING while subscribed");
  check(JSON.stringify(pong).toLowerCase().includes("pong"), `PING while subscribed: ${JSON.stringify(pong)}`);
  eq(await sub.unsubscribe(news), 1, "UNSUBSCRIBE count");
  eq(await sub.punsubscribe(pattern), 0, "PUNSUBSCRIBE count");
  eq(await pub.publish(news, "nobody"), 0, "PUBLISH after UNSUBSCRIBE");
  // the connection leaves subscriber mode and serves ordinary commands again
  eq(await sub.set("after-sub", "1"), "OK", "SET after leaving subscriber mode");
}

// Regression guard: a subscriber that disconnects without UNSUBSCRIBE once
// left attache's upstream connection subscribed in the pool (a ghost
// receiver). attache now closes such a connection, as Redis would.
async function scPubsubDisconnect(host, port, proto) {
  const channel = `gone.${proto ?? "default"}`;
  const sub = connect(host, port, proto);
  const r = connect(host, port, proto);
  eq(await sub.subscribe(channel), 1, "SUBSCRIBE count");
  const received = new Promise((resolve) => sub.once("message", (_, msg) => resolve(msg)));
  eq(await r.publish(channel, "x"), 1, "PUBLISH while subscribed");
  // wait for it: a message still on its way when the app leaves makes
  // attache drop that upstream connection, which would hide the leak
  eq(await within(2000, received, "message"), "x", "message");
  sub.disconnect(); // closes the socket, no UNSUBSCRIBE
  // PUBSUB NUMSUB, not PUBLISH: a message sent to the ghost makes attache
  // drop that upstream connection, which would hide the leak.
  await waitFor(
    `PUBSUB NUMSUB ${channel} after the only subscriber disconnected (attache left its upstream connection subscribed)`,
    2000,
    async () => {
      const n = await r.pubsub("NUMSUB", channel);
      return n[1] === 0 || n;
    },
  );
  eq(await r.publish(channel, "anyone?"), 0, "PUBLISH after the subscriber disconnected");
}

async function scDatabases(host, port, proto) {
  const r0 = connect(host, port, proto);
  const r2 = connect(host, port, proto, { db: 2 });
  await r0.del("dbkey");
  eq(await r2.set("dbkey", "in-2"), "OK", "SET in db 2");
  eq(await r2.get("dbkey"), "in-2", "GET in db 2");
  eq(await r0.get("dbkey"), null, "db 2's key seen from db 0");
  eq(await r0.set("dbkey", "in-0"), "OK", "SET in db 0");
  eq(await r2.get("dbkey"), "in-2", "db 0's write seen from db 2");
  const fresh = connect(host, port, proto, { db: 2 });
  eq(await fresh.get("dbkey"), "in-2", "GET in db 2 from a new connection");
  eq(await fresh.dbsize(), 1, "DBSIZE of db 2");
  eq(await r0.select(0), "OK", "SELECT 0");
  eq(await r0.get("dbkey"), "in-0", "GET after SELECT 0");
  eq(await r2.flushdb(), "OK", "FLUSHDB in db 2");
  eq(await r0.get("dbkey"), "in-0", "FLUSHDB in db 2 flushed db 0");
}

async function scAdmin(host, port, proto) {
  const r = connect(host, port, proto);
  eq(await r.flushall(), "OK", "FLUSHALL");
  const cfg = await r.config("GET", "maxmemory-policy");
  check(
    JSON.stringify(cfg).includes("maxmemory-policy"),
    `CONFIG GET: ${JSON.stringify(cfg)}`,
  );
  await r.set("enc", "12345");
  eq(await r.object("ENCODING", "enc"), "int", "OBJECT ENCODING");
  eq(await r.function("FLUSH"), "OK", "FUNCTION FLUSH");
  const info = await r.info();
  check(/redis_version:/.test(info), "INFO has redis_version");
  check((await r.command("COUNT")) > 100, "COMMAND COUNT");
  eq(await r.echo("hi"), "hi", "ECHO");
  check((await r.time()).length === 2, "TIME");
}

async function scScanStream(host, port, proto) {
  const r = connect(host, port, proto);
  await r.flushall();
  const p = r.pipeline();
  for (let i = 0; i < 500; i++) p.set(`scan:${i}`, i);
  await p.exec();
  await r.set("other", 1);
  const seen = [];
  await within(
    10000,
    new Promise((resolve, reject) => {
      const stream = r.scanStream({ match: "scan:*", count: 37 });
      stream.on("data", (keys) => seen.push(...keys));
      stream.on("end", resolve);
      stream.on("error", reject);
    }),
    "scanStream",
  );
  eq(seen.length, 500, "keys from scanStream");
  eq(new Set(seen).size, 500, "distinct keys from scanStream");
  await r.hset("bigh", Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`f${i}`, i])));
  const fields = [];
  await new Promise((resolve, reject) => {
    const stream = r.hscanStream("bigh", { count: 20 });
    stream.on("data", (kv) => fields.push(...kv.filter((_, i) => i % 2 === 0)));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  eq(new Set(fields).size, 300, "HSCAN fields");
}

async function scLua(host, port, proto) {
  const r = connect(host, port, proto);
  eq(await r.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "lk", "lv"), "OK", "EVAL SET");
  eq(await r.eval("return {KEYS[1], ARGV[1], 42}", 1, "a", "b"), ["a", "b", 42], "EVAL table");
  r.defineCommand("incrBy2", { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
  eq(await r.incrBy2("lc", 5), 5, "defineCommand first call");
  eq(await r.incrBy2("lc", 5), 10, "defineCommand via EVALSHA");
  await r.script("FLUSH");
  eq(await r.incrBy2("lc", 1), 11, "defineCommand after SCRIPT FLUSH (NOSCRIPT -> EVAL)");
  const out = await r.multi().incrBy2("lc", 1).incrBy2("lc", 1).exec();
  eq(out, [[null, 12], [null, 13]], "defineCommand in MULTI");
  const pout = await r.pipeline().incrBy2("lc", 1).get("lc").exec();
  eq(pout, [[null, 14], [null, "14"]], "defineCommand in a pipeline");
}

async function scDuplicateAndReconnect(host, port, proto) {
  const r = connect(host, port, proto);
  const d = r.duplicate();
  d.on("error", () => {});
  opened.push(d);
  eq(await d.ping(), "PONG", "duplicate() PING");
  // many clients at once, each with its own handshake
  const many = Array.from({ length: 20 }, () => connect(host, port, proto));
  const res = await Promise.all(many.map((c, i) => c.set(`many:${i}`, i).then(() => c.get(`many:${i}`))));
  eq(res, Array.from({ length: 20 }, (_, i) => String(i)), "20 clients");
}

const SCENARIOS = [
  scFlushall,
  scHandshake,
  scClientName,
  scDataTypes,
  scPipeline,
  scAutoPipelining,
  scMulti,
  scWatchRetry,
  scBlpop,
  scPubsub,
  scPubsubDisconnect,
  scDatabases,
  scAdmin,
  scScanStream,
  scLua,
  scDuplicateAndReconnect,
];

async function main() {
  if (process.argv.length !== 4) {
    console.error("usage: ioredis_compat.js HOST PORT");
    return 2;
  }
  const host = process.argv[2];
  const port = Number(process.argv[3]);
  const only = process.env.COMPAT_ONLY ? process.env.COMPAT_ONLY.split(",") : null;
  console.log(`ioredis ${VERSION} against ${host}:${port}`);
  const failed = [];
  for (const proto of [undefined, 2]) {
    const label = proto === undefined ? "default" : `protocol=${proto}`;
    for (const sc of SCENARIOS) {
      if (only && !only.includes(sc.name)) continue;
      const name = `[${label}] ${sc.name}`;
      const start = Date.now();
      try {
        await within(15000, sc(host, port, proto), sc.name);
        console.log(`ok   ${name} (${((Date.now() - start) / 1000).toFixed(2)}s)`);
      } catch (e) {
        failed.push(name);
        console.log(`FAIL ${name}: ${e instanceof Mismatch ? e.message : e.stack || e}`);
      } finally {
        await closeAll();
      }
    }
  }
  if (failed.length) {
    console.log(`ioredis: ${failed.length} scenario(s) failed: ${failed.join(", ")}`);
    return 1;
  }
  console.log("ioredis: all scenarios passed");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
