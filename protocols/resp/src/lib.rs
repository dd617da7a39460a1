//! attache-resp: what attache knows about the Redis protocol, with no I/O.
//!
//! # Layout
//!
//! - [`frame`]: finding request and reply frames in a byte buffer, size
//!   limits, inline commands, and the replies attache writes itself.
//!   `scan` (private) is its allocation-free check pass over replies, with
//!   `redis-protocol`'s decoder behind it for anything unusual.
//! - [`cluster`]: Redis Cluster slot maps, `MOVED`/`ASK` and retryable errors.
//! - [`command`]: the command table generated from a real Redis 7
//!   (`COMMAND INFO` / `COMMAND DOCS`), key extraction from key specs, and the
//!   flags the router needs (write, blocking, pub/sub, …).
//! - [`hash`]: twemproxy's hash functions, its ketama / modula / random
//!   distributions, hash tags, and Redis Cluster's CRC16 key slots.
//! - [`shard`]: commands across shards: fan-out, multi-key split and reply
//!   merge, following the command table's request/response policy tips.

pub mod cluster;
pub mod command;
pub mod frame;
pub mod hash;
pub mod inline;
mod scan;
pub mod shard;
