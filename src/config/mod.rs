//! The config file: model, loading (figment: TOML or YAML by extension, then
//! `ATTACHE_…` environment overrides) and validation.
//!
//! The shape is a contract shared with the docs, the k8s examples and the
//! benches (see `DESIGN.md`): listeners are maps keyed by name so that an
//! environment variable (`ATTACHE_REDIS__CACHE__LISTEN`) can address one.

mod load;
mod model;

pub use load::{load, ConfigError};
pub use model::{
    AdminConfig, Config, HttpListenerConfig, LogConfig, LogFormat, Mode, ReadFrom, RedisAuthConfig,
    RedisListenerConfig, RuntimeConfig,
};
