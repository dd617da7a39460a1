#!/usr/bin/env node
// node-redis (the `redis` package) through attache: default handshake and
// everyday usage.
//
//   node tests/clients/node_redis_compat.js HOST PORT
//
// Run by tests/clients.rs against attache in front of a fresh redis-server
// (the script flushes it). Every scenario runs with node-redis' default
// options (RESP3 in node-redis 6) and with `RESP: 2`. Prints one line per
// scenario and exits 1 if any failed, naming what differed. Install with
// `npm ci --prefix tests/clients` (or `bash scripts/test.sh --install-deps`).
"use strict";

const net = require("net");

let redis;
try {
  redis = require("redis");
} catch (e) {
  console.error(
    "node-redis is not installed: run `npm ci --prefix tests/clients` " +
      "or `bash scripts/test.sh --install-deps`",
  );
  process.exit(3);
}
const VERSION = require("redis/package.json").version;

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

function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Mismatch(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
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

// A one-connection TCP tee in front of attache recording what the client writes.
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

const opened = [];

async function connect(host, port, proto, extra = {}) {
  const options = {
    socket: { host, port, reconnectStrategy: false, connectTimeout: 5000 },
    ...extra,
  };
  if (proto !== undefined) options.RESP = proto;
  const client = redis.createClient(options);
  client.on("error", () => {}); // surfaced through the commands' promises
  opened.push(client);
  await within(5000, client.connect(), "connect");
  return client;
}

async function closeAll() {
  while (opened.length) {
    const c = opened.pop();
    try {
      if (c.isOpen) await within(2000, c.close(), "close");
    } catch (e) {
      try {
        c.destroy();
      } catch (_) {
        // already gone
      }
    }
  }
}

const expectedProtocol = (proto) => proto ?? 3;

async function scFlushall(host, port, proto) {
  const r = await connect(host, port, proto);
  eq(await r.flushAll(), "OK", "FLUSHALL");
  eq(await r.dbSize(), 0, "DBSIZE after FLUSHALL");
}

async function scHandshake(host, port, proto) {
  const t = await tee(host, port);
  const r = await connect("127.0.0.1", t.port, proto);
  eq(await r.ping(), "PONG", "PING");
  await r.close();
  await sleep(50);
  t.close();
  const cmds = t.commands();
  console.log(
    `    node-redis ${VERSION} RESP=${proto ?? "default"} sends: ` + cmds.map((c) => c.join(" ")).join(" | "),
  );
  if (expectedProtocol(proto) === 3) {
    check(
      cmds[0][0].toUpperCase() === "HELLO" && cmds[0][1] === "3",
      `first command is not HELLO 3: ${JSON.stringify(cmds)}`,
    );
  } else {
    check(!cmds.some((c) => c[0].toUpperCase() === "HELLO"), `RESP 2 sent HELLO: ${JSON.stringify(cmds)}`);
  }
}

async function scClientName(host, port, proto) {
  const r = await connect(host, port, proto, { name: "compat-node-redis" });
  eq(await r.clientGetName(), "compat-node-redis", "name= at connect (HELLO SETNAME / CLIENT SETNAME)");
  eq(await r.clientSetName("renamed"), "OK", "CLIENT SETNAME");
  eq(await r.clientGetName(), "renamed", "CLIENT GETNAME");
}

async function scDataTypes(host, port, proto) {
  const r = await connect(host, port, proto);
  eq(await r.set("str", "v"), "OK", "SET");
  eq(await r.get("str"), "v", "GET");
  eq(await r.get("missing"), null, "GET missing");
  eq(await r.incrBy("n", 5), 5, "INCRBY");
  eq(await r.set("ex", "x", { expiration: { type: "EX", value: 100 }, condition: "NX" }), "OK", "SET EX NX");
  eq(await r.mGet(["str", "missing", "n"]), ["v", null, "5"], "MGET");
  eq(await r.hSet("h", { a: "1", b: "2" }), 2, "HSET");
  eq({ ...(await r.hGetAll("h")) }, { a: "1", b: "2" }, "HGETALL");
  eq(await r.rPush("l", ["a", "b", "c"]), 3, "RPUSH");
  eq(await r.lRange("l", 0, -1), ["a", "b", "c"], "LRANGE");
  eq(await r.sAdd("set", ["x", "y", "x"]), 2, "SADD");
  eq((await r.sMembers("set")).sort(), ["x", "y"], "SMEMBERS");
  eq(await r.zAdd("z", [{ score: 1, value: "one" }, { score: 2, value: "two" }]), 2, "ZADD");
  eq(await r.zRangeWithScores("z", 0, -1), [{ value: "one", score: 1 }, { value: "two", score: 2 }], "ZRANGE WITHSCORES");
  eq(await r.zScore("z", "two"), 2, "ZSCORE");
  const id1 = await r.xAdd("st", "*", { k: "v1" });
  eq(await r.xLen("st"), 1, "XLEN");
  const range = await r.xRange("st", "-", "+");
  eq(range.map((e) => [e.id, { ...e.message }]), [[id1, { k: "v1" }]], "XRANGE");
  eq(await r.del(["str", "h", "l", "set", "z", "st", "nope"]), 6, "DEL");
}

async function scPipelining(host, port, proto) {
  const r = await connect(host, port, proto);
  // node-redis pipelines whatever is issued in the same tick
  const replies = await Promise.all(
    Array.from({ length: 500 }, (_, i) => [r.set(`p:${i}`, String(i)), r.get(`p:${i}`)]).flat(),
  );
  eq(replies.length, 1000, "reply count");
  for (let i = 0; i < 500; i++) eq([replies[2 * i], replies[2 * i + 1]], ["OK", String(i)], `pair #${i}`);
  const batch = await r.multi().set("b", "1").get("b").incr("b").execAsPipeline();
  eq(batch, ["OK", "1", 2], "execAsPipeline");
}

async function scMulti(host, port, proto) {
  const r = await connect(host, port, proto);
  await r.set("tx", "1");
  const out = await r.multi().incr("tx").incr("tx").get("tx").hSet("txh", "f", "v").exec();
  eq(out, [2, 3, "3", 1], "MULTI/EXEC replies");
  eq(await r.get("tx"), "3", "GET after EXEC");
}

async function scWatchRetry(host, port, proto) {
  const r = await connect(host, port, proto);
  const other = await connect(host, port, proto);
  await r.set("bal", "10");
  let attempts = 0;
  for (;;) {
    attempts++;
    check(attempts <= 3, "too many WATCH retries");
    await r.watch("bal");
    const bal = Number(await r.get("bal"));
    if (attempts === 1) await other.set("bal", "100"); // EXEC must abort
    try {
      await r.multi().set("bal", String(bal + 1)).exec();
      break;
    } catch (e) {
      if (e instanceof redis.WatchError) continue;
      throw e;
    }
  }
  eq(attempts, 2, "attempts (the first EXEC must abort)");
  eq(await r.get("bal"), "101", "balance after retry");
}

async function scBlpop(host, port, proto) {
  const r = await connect(host, port, proto);
  const pusher = await connect(host, port, proto);
  eq(await within(3000, r.blPop("bq", 0.2), "BLPOP"), null, "BLPOP timing out");
  const start = Date.now();
  setTimeout(() => pusher.rPush("bq", "job1"), 300);
  eq(await within(4000, r.blPop(["bq", "other"], 3), "BLPOP"), { key: "bq", element: "job1" }, "BLPOP with a push");
  check(Date.now() - start < 2500, "BLPOP returned late");
  eq(await r.rPush("bq", "x"), 1, "RPUSH after BLPOP");
}

async function scPubsub(host, port, proto) {
  const tag = proto ?? "default";
  const news = `news.${tag}`;
  const pub = await connect(host, port, proto);
  const sub = pub.duplicate();
  sub.on("error", () => {});
  opened.push(sub);
  await sub.connect();
  const got = [];
  await sub.subscribe(news, (msg, ch) => got.push([ch, msg]));
  await sub.pSubscribe(`ev.${tag}.*`, (msg, ch) => got.push([ch, msg]));
  eq(await pub.publish(news, "hello"), 1, "PUBLISH receivers");
  eq(await pub.publish(`ev.${tag}.x`, "boom"), 1, "PUBLISH to the pattern");
  for (let i = 0; i < 50; i++) await pub.publish(news, String(i));
  await waitFor("messages", 3000, async () => got.length >= 52 || got.length);
  eq(got.slice(0, 2), [[news, "hello"], [`ev.${tag}.x`, "boom"]], "first messages");
  eq(got.slice(2).map((m) => m[1]), Array.from({ length: 50 }, (_, i) => String(i)), "50 messages in order");
  eq(await pub.pubSubNumSub(news), { [news]: 1 }, "PUBSUB NUMSUB");
  if (expectedProtocol(proto) === 3) {
    // RESP3: the subscribed connection also serves ordinary commands, their
    // replies interleaved with the pushes
    const [a, b] = await Promise.all([sub.set("while-sub", "1"), pub.publish(news, "mid"), sub.get("while-sub")]).then(
      (x) => [x[0], x[2]],
    );
    eq([a, b], ["OK", "1"], "SET/GET on the subscribed connection");
    await waitFor("message after SET/GET", 2000, async () => got.length >= 53 || got.length);
    eq(got[52], [news, "mid"], "message published between SET and GET");
  }
  await sub.unsubscribe(news);
  await sub.pUnsubscribe(`ev.${tag}.*`);
  eq(await pub.publish(news, "nobody"), 0, "PUBLISH after UNSUBSCRIBE");
  if (expectedProtocol(proto) === 3) {
    // RESP3: the same connection serves commands while (and after) subscribed
    eq(await sub.set("after-sub", "1"), "OK", "SET on the subscriber connection");
  }
}

// Regression guard: a subscriber that disconnects without UNSUBSCRIBE once
// left attache's upstream connection subscribed in the pool (a ghost
// receiver). attache now closes such a connection, as Redis would.
async function scPubsubDisconnect(host, port, proto) {
  const channel = `gone.${proto ?? "default"}`;
  const r = await connect(host, port, proto);
  const sub = await connect(host, port, proto);
  let onMessage;
  const received = new Promise((resolve) => (onMessage = resolve));
  await sub.subscribe(channel, (msg) => onMessage(msg));
  eq(await r.publish(channel, "x"), 1, "PUBLISH while subscribed");
  // wait for it: a message still on its way when the app leaves makes
  // attache drop that upstream connection, which would hide the leak
  eq(await within(2000, received, "message"), "x", "message");
  sub.destroy(); // closes the socket, no UNSUBSCRIBE
  opened.splice(opened.indexOf(sub), 1);
  await waitFor(
    `PUBSUB NUMSUB ${channel} after the only subscriber disconnected (attache left its upstream connection subscribed)`,
    2000,
    async () => {
      const n = await r.pubSubNumSub(channel);
      return n[channel] === 0 || n;
    },
  );
  eq(await r.publish(channel, "anyone?"), 0, "PUBLISH after the subscriber disconnected");
}

async function scDatabases(host, port, proto) {
  const r0 = await connect(host, port, proto);
  const r2 = await connect(host, port, proto, { database: 2 });
  await r0.del("dbkey");
  eq(await r2.set("dbkey", "in-2"), "OK", "SET in db 2");
  eq(await r0.get("dbkey"), null, "db 2's key seen from db 0");
  eq(await r0.set("dbkey", "in-0"), "OK", "SET in db 0");
  eq(await r2.get("dbkey"), "in-2", "db 0's write seen from db 2");
  eq(await r2.dbSize(), 1, "DBSIZE of db 2");
  eq(await r2.flushDb(), "OK", "FLUSHDB in db 2");
  eq(await r0.get("dbkey"), "in-0", "FLUSHDB in db 2 flushed db 0");
}

async function scAdminScanLua(host, port, proto) {
  const r = await connect(host, port, proto);
  eq(await r.flushAll(), "OK", "FLUSHALL");
  const cfg = await r.configGet("maxmemory-policy");
  check("maxmemory-policy" in cfg, `CONFIG GET: ${JSON.stringify(cfg)}`);
  await r.set("enc", "12345");
  eq(await r.objectEncoding("enc"), "int", "OBJECT ENCODING");
  eq(await r.functionFlush(), "OK", "FUNCTION FLUSH");
  check(/redis_version:/.test(await r.info()), "INFO has redis_version");
  eq(await r.sendCommand(["ECHO", "raw"]), "raw", "sendCommand");
  await Promise.all(Array.from({ length: 500 }, (_, i) => r.set(`scan:${i}`, String(i))));
  const seen = [];
  for await (const keys of r.scanIterator({ MATCH: "scan:*", COUNT: 37 })) seen.push(...keys);
  eq(seen.length, 500, "keys from scanIterator");
  eq(new Set(seen).size, 500, "distinct keys from scanIterator");
  eq(await r.eval("return {KEYS[1], ARGV[1], 42}", { keys: ["a"], arguments: ["b"] }), ["a", "b", 42], "EVAL");
}

const SCENARIOS = [
  scFlushall,
  scHandshake,
  scClientName,
  scDataTypes,
  scPipelining,
  scMulti,
  scWatchRetry,
  scBlpop,
  scPubsub,
  scPubsubDisconnect,
  scDatabases,
  scAdminScanLua,
];

async function main() {
  if (process.argv.length !== 4) {
    console.error("usage: node_redis_compat.js HOST PORT");
    return 2;
  }
  const host = process.argv[2];
  const port = Number(process.argv[3]);
  const only = process.env.COMPAT_ONLY ? process.env.COMPAT_ONLY.split(",") : null;
  console.log(`node-redis ${VERSION} against ${host}:${port}`);
  const failed = [];
  for (const proto of [undefined, 2]) {
    const label = proto === undefined ? "default" : `RESP=${proto}`;
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
    console.log(`node-redis: ${failed.length} scenario(s) failed: ${failed.join(", ")}`);
    return 1;
  }
  console.log("node-redis: all scenarios passed");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
