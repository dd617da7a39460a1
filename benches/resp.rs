//! Micro-benches of the per-command work attache does on the hot path:
//! finding request and reply frames, classifying commands and finding their
//! keys, encoding, routing a key (ketama over 64 servers, cluster slots),
//! and splitting a 100-key MGET over shards and merging its replies.
//!
//! `cargo bench --bench resp` (criterion; `-- --quick` for a short run).

use std::hint::black_box;

use attache_resp::command;
use attache_resp::frame::{self, reply};
use attache_resp::hash::{key_slot, Distribution, Distributor, HashFunction, ServerSpec};
use attache_resp::shard::{self, Plan};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MAX: usize = 512 * 1024 * 1024;

fn request(args: &[&[u8]]) -> Vec<u8> {
    reply::command(args).to_vec()
}

fn decode(c: &mut Criterion) {
    let value_100 = vec![b'v'; 100];
    let value_1k = vec![b'v'; 1024];
    let value_1m = vec![b'v'; 1024 * 1024];
    let get = request(&[b"GET", b"key:000123"]);
    let set = request(&[b"SET", b"key:000123", &value_100]);
    let pipeline: Vec<u8> = (0..16).flat_map(|_| get.clone()).collect();
    let set_1k = request(&[b"SET", b"key:000123", &value_1k]);
    let set_1m = request(&[b"SET", b"key:000123", &value_1m]);
    let mut group = c.benchmark_group("request_decode");
    for (name, buf, frames) in [
        ("get", &get, 1),
        ("set_100b", &set, 1),
        ("pipeline_16_get", &pipeline, 16),
        ("set_1KiB", &set_1k, 1),
        ("set_1MiB", &set_1m, 1),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| {
                let mut rest = &buf[..];
                for _ in 0..frames {
                    let req = frame::parse_request(black_box(rest), MAX).unwrap().unwrap();
                    rest = &rest[req.len..];
                }
            })
        });
    }
    group.finish();

    let bulk_100 = reply::bulk(&value_100).to_vec();
    let bulk_1m = reply::bulk(&value_1m).to_vec();
    let replies_16: Vec<u8> = (0..16).flat_map(|_| bulk_100.clone()).collect();
    let mut group = c.benchmark_group("reply_framing");
    for (name, buf, frames) in [
        ("ok", &b"+OK\r\n".to_vec(), 1),
        ("bulk_100b", &bulk_100, 1),
        ("pipeline_16_bulk_100b", &replies_16, 16),
        ("bulk_1MiB", &bulk_1m, 1),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| {
                let mut rest = &buf[..];
                for _ in 0..frames {
                    let len = frame::reply_len(black_box(rest), false).unwrap().unwrap();
                    rest = &rest[len..];
                }
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let value_100 = vec![b'v'; 100];
    let value_1m = vec![b'v'; 1024 * 1024];
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("set_100b", |b| {
        b.iter(|| reply::command(black_box(&[b"SET", b"key:000123", &value_100])))
    });
    group.throughput(Throughput::Bytes(value_1m.len() as u64));
    group.bench_function("bulk_1MiB", |b| {
        b.iter(|| reply::bulk(black_box(&value_1m)))
    });
    group.finish();
}

fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    let get: Vec<&[u8]> = vec![b"get", b"key:000123"];
    let mut keys = Vec::with_capacity(128);
    group.bench_function("lookup_and_keys_get", |b| {
        b.iter(|| {
            let spec = command::resolve(black_box(&get)).unwrap();
            command::key_indices(spec, &get, &mut keys);
            keys.len()
        })
    });
    let mget_keys: Vec<String> = (0..100).map(|i| format!("key:{i:06}")).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(mget_keys.iter().map(|k| k.as_bytes()));
    group.bench_function("lookup_and_keys_mget_100", |b| {
        b.iter(|| {
            let spec = command::resolve(black_box(&mget)).unwrap();
            command::key_indices(spec, &mget, &mut keys);
            keys.len()
        })
    });
    let xread: Vec<&[u8]> = vec![
        b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s1", b"s2", b"$", b"$",
    ];
    group.bench_function("is_blocking_xread", |b| {
        b.iter(|| {
            let spec = command::resolve(black_box(&xread)).unwrap();
            command::is_blocking(spec, &xread)
        })
    });
    group.finish();
}

fn route(c: &mut Criterion) {
    let servers: Vec<ServerSpec> = (0..64)
        .map(|i| {
            format!("10.0.{}.{}:6379:1 shard-{i}", i / 250, i % 250)
                .parse()
                .unwrap()
        })
        .collect();
    let ring =
        Distributor::new(Distribution::Ketama, HashFunction::Fnv1a_64, None, &servers).unwrap();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ketama_64_servers_fnv1a_64", |b| {
        b.iter(|| ring.server_for_key(black_box(b"user:1000:profile")))
    });
    let md5_ring =
        Distributor::new(Distribution::Ketama, HashFunction::Md5, None, &servers).unwrap();
    group.bench_function("ketama_64_servers_md5", |b| {
        b.iter(|| md5_ring.server_for_key(black_box(b"user:1000:profile")))
    });
    group.bench_function("cluster_key_slot", |b| {
        b.iter(|| key_slot(black_box(b"user:1000:profile")))
    });
    group.bench_function("cluster_key_slot_hash_tag", |b| {
        b.iter(|| key_slot(black_box(b"{user:1000}.following")))
    });
    group.finish();
}

fn split_merge(c: &mut Criterion) {
    let servers: Vec<ServerSpec> = (0..3)
        .map(|i| format!("10.0.0.{i}:6379:1 shard-{i}").parse().unwrap())
        .collect();
    // twemproxy's fnv1a_64 is 32-bit with a tiny prime: sequential keys land
    // on one arc of the ring. murmur spreads them, as a real MGET's would be.
    let ring =
        Distributor::new(Distribution::Ketama, HashFunction::Murmur, None, &servers).unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i:06}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(|k| k.as_bytes()));
    let mut group = c.benchmark_group("multi_key_100_mget");
    group.throughput(Throughput::Elements(100));
    group.bench_function("split", |b| {
        b.iter(|| shard::plan_args(black_box(&args), |k| ring.server_for_key(k)))
    });
    let Some(Plan::Split { parts, merge }) = shard::plan_args(&args, |k| ring.server_for_key(k))
    else {
        panic!("100 keys over 3 servers split");
    };
    let value = reply::bulk(&[b'v'; 100]);
    let replies: Vec<bytes::Bytes> = parts
        .iter()
        .map(|p| {
            let mut r = format!("*{}\r\n", p.key_order.len()).into_bytes();
            for _ in &p.key_order {
                r.extend_from_slice(&value);
            }
            bytes::Bytes::from(r)
        })
        .collect();
    let orders: Vec<Vec<usize>> = parts.iter().map(|p| p.key_order.clone()).collect();
    group.bench_function("merge", |b| {
        b.iter(|| shard::merge(black_box(&merge), &replies, false, &orders, &[]))
    });
    group.finish();
}

criterion_group!(benches, decode, encode, classify, route, split_merge);
criterion_main!(benches);
