//! The shape of one command-table entry: what `COMMAND INFO` and
//! `COMMAND DOCS` say about a command, as `'static` data.

/// Key-spec flags ([`KeySpec::flags`]): how a command uses the keys one key
/// spec finds. Names and meanings are Redis's (`COMMAND INFO`).
pub mod key_flag {
    /// Read-only: reads the value but doesn't change it.
    pub const RO: u32 = 1 << 0;
    /// Read-write: reads and changes the value.
    pub const RW: u32 = 1 << 1;
    /// Overwrite: replaces the value without reading it.
    pub const OW: u32 = 1 << 2;
    /// Remove: deletes the key.
    pub const RM: u32 = 1 << 3;
    /// Returns, copies or uses user data from the value.
    pub const ACCESS: u32 = 1 << 4;
    /// Updates data in the value (modify or overwrite).
    pub const UPDATE: u32 = 1 << 5;
    /// Only adds data to the value.
    pub const INSERT: u32 = 1 << 6;
    /// Only removes data from the value.
    pub const DELETE: u32 = 1 << 7;
    /// Not a key, but hashed like one (sharded pub/sub channels).
    pub const NOT_KEY: u32 = 1 << 8;
    /// The spec may miss keys: Redis falls back to command-specific code.
    pub const INCOMPLETE: u32 = 1 << 9;
    /// The flags above depend on the arguments (`SET … GET`, `BITFIELD`).
    pub const VARIABLE_FLAGS: u32 = 1 << 10;
}

/// ACL categories ([`CommandSpec::acl_categories`]), as in `ACL CAT`.
pub mod acl {
    // Each const is the `@name` ACL category of the same name.
    pub const KEYSPACE: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const SET: u32 = 1 << 3;
    pub const SORTEDSET: u32 = 1 << 4;
    pub const LIST: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const STRING: u32 = 1 << 7;
    pub const BITMAP: u32 = 1 << 8;
    pub const HYPERLOGLOG: u32 = 1 << 9;
    pub const GEO: u32 = 1 << 10;
    pub const STREAM: u32 = 1 << 11;
    pub const PUBSUB: u32 = 1 << 12;
    pub const ADMIN: u32 = 1 << 13;
    pub const FAST: u32 = 1 << 14;
    pub const SLOW: u32 = 1 << 15;
    pub const BLOCKING: u32 = 1 << 16;
    pub const DANGEROUS: u32 = 1 << 17;
    pub const CONNECTION: u32 = 1 << 18;
    pub const TRANSACTION: u32 = 1 << 19;
    pub const SCRIPTING: u32 = 1 << 20;
}

/// Command tips that are not policies ([`CommandSpec::tips`]).
pub mod tip {
    /// The reply may differ between runs on the same data (`RANDOMKEY`).
    pub const NONDETERMINISTIC_OUTPUT: u32 = 1 << 0;
    /// The reply's elements are the same but their order may differ (`SMEMBERS`).
    pub const NONDETERMINISTIC_OUTPUT_ORDER: u32 = 1 << 1;
}

/// One Redis command (or subcommand, such as `client|setname`).
///
/// Fields follow `COMMAND INFO`; see <https://redis.io/docs/reference/command-tips/>
/// and <https://redis.io/docs/reference/key-specs/>.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandSpec {
    /// Lowercase name; subcommands are `parent|sub` (`config|get`).
    pub name: &'static str,
    /// The documentation group (`COMMAND DOCS`).
    pub group: Group,
    /// Argument count including the name; negative means "at least -arity".
    pub arity: i32,
    /// Command flags: the `command::WRITE`, `command::READONLY`, … bits.
    pub flags: u32,
    /// Legacy first key position (0: no keys). Prefer [`Self::key_specs`].
    pub first_key: i32,
    /// Legacy last key position; negative counts from the end.
    pub last_key: i32,
    /// Legacy step between keys.
    pub key_step: i32,
    /// ACL categories: the [`acl`] bits.
    pub acl_categories: u32,
    /// Where a cluster client sends the command (`None`: by key, or any node).
    pub request_policy: Option<RequestPolicy>,
    /// How a cluster client merges replies from several shards.
    pub response_policy: Option<ResponsePolicy>,
    /// Other tips: the [`tip`] bits.
    pub tips: u32,
    /// Redis 7 key specs, in Redis's order.
    pub key_specs: &'static [KeySpec],
    /// Subcommands sorted by name (empty if the command has none).
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// The subcommand `name` (ASCII case-insensitive, without the `parent|`
    /// prefix) of this command. Does not allocate.
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static CommandSpec> {
        let mut buf = [0; super::MAX_NAME_LEN];
        let name = super::lowercase(name, &mut buf)?;
        let prefix = self.name.len() + 1;
        let found = self.subcommands.binary_search_by(|sub| {
            sub.name
                .as_bytes()
                .get(prefix..)
                .unwrap_or_default()
                .cmp(name)
        });
        found.ok().map(|i| &self.subcommands[i])
    }

    /// Whether every bit of `f` (`command::WRITE`, …) is set.
    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f == f
    }

    /// Whether every bit of `t` ([`tip`]) is set.
    pub fn has_tip(&self, t: u32) -> bool {
        self.tips & t == t
    }

    /// Whether the command has subcommands (`CLIENT`, `CONFIG`, …).
    pub fn has_subcommands(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// The union of the flags of every key spec ([`key_flag`] bits).
    pub fn key_spec_flags(&self) -> u32 {
        self.key_specs.iter().fold(0, |acc, ks| acc | ks.flags)
    }
}

/// One Redis 7 key spec: where to start looking, then how to find keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// How the keys are used: the [`key_flag`] bits.
    pub flags: u32,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// Which arguments, from there, are keys.
    pub find_keys: FindKeys,
}

/// The `begin_search` half of a key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys start at argument `index`.
    Index {
        /// Argument position (0 is the command name).
        index: i32,
    },
    /// Keys start after `keyword`, searched from `startfrom` (forwards), or
    /// when negative from `argc + startfrom` backwards.
    Keyword {
        /// The keyword, as Redis spells it (`STREAMS`); matched case-insensitively.
        keyword: &'static str,
        /// Search start; negative counts from the end and searches backwards.
        startfrom: i32,
    },
    /// Redis can't say (`SORT … STORE`): command-specific code finds the keys.
    Unknown,
}

/// The `find_keys` half of a key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the start up to `lastkey` (relative; negative counts from
    /// the end), every `keystep`. With `lastkey == -1` and `limit > 0`, only
    /// the first `1/limit` of the remaining arguments (`XREAD … STREAMS`).
    Range {
        /// Last key, relative to the start; negative counts from the end.
        lastkey: i32,
        /// Distance between keys (2 for `MSET key value …`).
        keystep: i32,
        /// Divides the remaining arguments when `lastkey` is -1 (0: no limit).
        limit: i32,
    },
    /// The argument at `keynumidx` (relative to the start) holds the number
    /// of keys, which begin at `firstkey` (relative to the start).
    Keynum {
        /// Position of the key count, relative to the start.
        keynumidx: i32,
        /// Position of the first key, relative to the start.
        firstkey: i32,
        /// Distance between keys.
        keystep: i32,
    },
    /// Redis can't say: command-specific code finds the keys.
    Unknown,
}

/// `request_policy` tip: how a cluster client routes a keyless or multi-key
/// command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPolicy {
    /// Send to every node, primaries and replicas (`CONFIG SET`).
    AllNodes,
    /// Send to every primary (`DBSIZE`, `SCAN`).
    AllShards,
    /// Split the keys by shard and send each shard its part (`MSET`, `DEL`).
    MultiShard,
    /// Needs command-specific handling.
    Special,
}

/// `response_policy` tip: how a cluster client merges the shards' replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    /// The first non-error reply wins.
    OneSucceeded,
    /// Succeeds only if every shard succeeded.
    AllSucceeded,
    /// Logical AND of the (integer 0/1) replies.
    AggLogicalAnd,
    /// Logical OR of the (integer 0/1) replies.
    AggLogicalOr,
    /// The minimum of the integer replies.
    AggMin,
    /// The maximum of the integer replies.
    AggMax,
    /// The sum of the integer replies (`DBSIZE`, `DEL`).
    AggSum,
    /// Needs command-specific handling.
    Special,
}

/// The documentation group of a command (`COMMAND DOCS`); each variant is
/// the Redis group of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Generic,
    String,
    List,
    Set,
    SortedSet,
    Hash,
    Pubsub,
    Transactions,
    Connection,
    Server,
    Scripting,
    Hyperloglog,
    Cluster,
    Sentinel,
    Geo,
    Stream,
    Bitmap,
    Module,
}

impl Group {
    /// The group's name as `COMMAND DOCS` spells it (`sorted-set`).
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Generic => "generic",
            Group::String => "string",
            Group::List => "list",
            Group::Set => "set",
            Group::SortedSet => "sorted-set",
            Group::Hash => "hash",
            Group::Pubsub => "pubsub",
            Group::Transactions => "transactions",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Scripting => "scripting",
            Group::Hyperloglog => "hyperloglog",
            Group::Cluster => "cluster",
            Group::Sentinel => "sentinel",
            Group::Geo => "geo",
            Group::Stream => "stream",
            Group::Bitmap => "bitmap",
            Group::Module => "module",
        }
    }
}

// Short constructors and defaults, so each generated table entry fits on a line.

/// Defaults for the fields the generated table leaves out.
pub(super) const BLANK: CommandSpec = CommandSpec {
    name: "",
    group: Group::Generic,
    arity: 0,
    flags: 0,
    first_key: 0,
    last_key: 0,
    key_step: 0,
    acl_categories: 0,
    request_policy: None,
    response_policy: None,
    tips: 0,
    key_specs: &[],
    subcommands: &[],
};

pub(super) const fn index(index: i32) -> BeginSearch {
    BeginSearch::Index { index }
}

pub(super) const fn keyword(keyword: &'static str, startfrom: i32) -> BeginSearch {
    BeginSearch::Keyword { keyword, startfrom }
}

pub(super) const fn range(lastkey: i32, keystep: i32, limit: i32) -> FindKeys {
    FindKeys::Range {
        lastkey,
        keystep,
        limit,
    }
}

pub(super) const fn keynum(keynumidx: i32, firstkey: i32, keystep: i32) -> FindKeys {
    FindKeys::Keynum {
        keynumidx,
        firstkey,
        keystep,
    }
}
