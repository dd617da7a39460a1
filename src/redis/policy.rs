//! Which connection a command may run on. Most commands are stateless and
//! share multiplexed connections; the few that change connection state pin
//! the app to a dedicated connection, and a few are answered by attache
//! itself because they describe the app's own connection to attache.

use attache_resp::command;
use attache_resp::frame::{reply, Request};
use bytes::Bytes;

use super::metrics::Family;
use super::pause::PauseChange;

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send on the current connection (shared, or the pinned one).
    Forward,
    /// Answer with these bytes, without the upstream.
    Reply(Bytes),
    /// Starts state that ends on its own (MULTI…EXEC, WATCH, a blocking
    /// command): pin until it ends.
    PinTransient(Transient),
    /// Starts state that lasts (SELECT n, CLIENT TRACKING, READONLY …): pin
    /// until the app leaves or sends RESET. With `stream`, replies no longer
    /// pair with requests (SUBSCRIBE, MONITOR, CLIENT REPLY OFF), so the
    /// upstream's bytes are relayed as they come.
    PinSticky { stream: bool },
    /// Ends MULTI/WATCH state (EXEC, DISCARD) or WATCH alone (UNWATCH).
    EndsState { multi: bool },
    /// `HELLO [protover [AUTH u p] [SETNAME n]]`; `as_user`: its AUTH
    /// names a user other than `default` (see `Auth`).
    Hello {
        protocol: Option<u8>,
        setname: Option<Bytes>,
        as_user: bool,
    },
    /// `AUTH [user] password`. When attache presents no credential of its
    /// own it is the server's: as a user other than `default` (`as_user`)
    /// on the app's own connection, which then acts as that user; as
    /// `default` on any (it cannot change who the connection is).
    /// Otherwise attache answers it.
    Auth { as_user: bool },
    /// `CLIENT SETNAME name`: kept per app connection.
    SetName(Bytes),
    /// `CLIENT GETNAME`.
    GetName,
    /// `QUIT`: +OK, then close.
    Quit,
    /// `RESET`: back to a fresh connection's state.
    Reset,
    /// `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE`: forwarded on a
    /// subscription or inside MULTI, else answered as Redis answers a
    /// connection subscribed to nothing.
    Unsubscribe,
    /// `CLIENT PAUSE` / `CLIENT UNPAUSE` that Redis will accept: forwarded,
    /// and noted (see `pause`).
    Pause(PauseChange),
}

/// A transient state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transient {
    Multi,
    Watch,
    Blocking,
}

/// Classifies `req` (whose bytes are `buf`). `pinned` tells whether the app
/// is already on a dedicated connection.
/// Also returns the command's family (for metrics), from the same table
/// lookup that tells whether it blocks.
pub(crate) fn classify(req: &Request, buf: &[u8], pinned: bool) -> (Action, Family) {
    let Some(name) = req.arg(buf, 0) else {
        return (Action::Forward, Family::OTHER);
    };
    let mut lower = [0u8; 32];
    let Some(name) = lowercase(name, &mut lower) else {
        return (Action::Forward, Family::OTHER);
    };
    let spec = command::lookup(name);
    let action = classify_name(name, spec, req, buf, pinned);
    (action, Family::of(spec.map(|s| s.group)))
}

fn classify_name(
    name: &[u8],
    spec: Option<&'static command::CommandSpec>,
    req: &Request,
    buf: &[u8],
    pinned: bool,
) -> Action {
    let argc = req.args.len();
    match name {
        b"auth" => {
            // No app-side password is configured: the app's AUTH is
            // accepted, and attache authenticates upstream itself.
            match argc {
                2 | 3 => Action::Auth {
                    as_user: argc == 3 && req.arg(buf, 1) != Some(b"default"),
                },
                // As Redis: too many arguments is a syntax error.
                4.. => Action::Reply(reply::error("ERR syntax error")),
                _ => Action::Reply(wrong_arity("auth")),
            }
        }
        b"hello" => hello(req, buf),
        b"quit" => Action::Quit,
        b"reset" if argc == 1 => Action::Reset,
        b"reset" => Action::Reply(wrong_arity("reset")),
        b"select" if !pinned && argc == 2 && req.arg(buf, 1) == Some(b"0") => {
            Action::Reply(Bytes::from_static(reply::OK))
        }
        b"select" | b"readonly" | b"readwrite" | b"asking" => Action::PinSticky { stream: false },
        // REPLCONF ACK / GETACK (a replica's commands) get no reply at
        // all: on a shared connection every later reply, other apps'
        // included, would go to the command before it. Streamed, the
        // server's bytes are relayed as they come, as for SYNC.
        b"subscribe" | b"psubscribe" | b"ssubscribe" | b"monitor" | b"sync" | b"psync"
        | b"replconf" => Action::PinSticky { stream: true },
        b"multi" => Action::PinTransient(Transient::Multi),
        b"watch" => Action::PinTransient(Transient::Watch),
        b"exec" | b"discard" => Action::EndsState { multi: true },
        b"unsubscribe" | b"punsubscribe" | b"sunsubscribe" => Action::Unsubscribe,
        b"unwatch" => Action::EndsState { multi: false },
        b"client" => client(req, buf),
        _ => {
            if is_blocking(name, spec, req, buf) {
                Action::PinTransient(Transient::Blocking)
            } else {
                Action::Forward
            }
        }
    }
}

/// Blocking commands may hold their connection until data arrives. The
/// command table knows which (XREAD and XREADGROUP only with BLOCK); the
/// argument list is only built for commands flagged blocking.
fn is_blocking(
    name: &[u8],
    spec: Option<&'static command::CommandSpec>,
    req: &Request,
    buf: &[u8],
) -> bool {
    let Some(spec) = spec else {
        return false;
    };
    if !spec.has_flag(command::BLOCKING) && name != b"wait" && name != b"waitaof" {
        return false;
    }
    let args: Vec<&[u8]> = (0..req.args.len())
        .filter_map(|i| req.arg(buf, i))
        .collect();
    command::is_blocking(spec, &args)
}

fn client(req: &Request, buf: &[u8]) -> Action {
    let mut lower = [0u8; 32];
    let Some(sub) = req.arg(buf, 1).and_then(|s| lowercase(s, &mut lower)) else {
        return Action::Forward;
    };
    match sub {
        b"setname" => match req.arg(buf, 2) {
            Some(name) if req.args.len() == 3 => {
                invalid_name(name).unwrap_or_else(|| Action::SetName(Bytes::copy_from_slice(name)))
            }
            _ => Action::Reply(wrong_arity("client|setname")),
        },
        b"getname" if req.args.len() == 2 => Action::GetName,
        b"pause" => pause(req, buf),
        b"unpause" if req.args.len() == 2 => Action::Pause(PauseChange::End),
        b"getname" => Action::Reply(wrong_arity("client|getname")),
        // Library name/version describe the app's connection to attache.
        b"setinfo" => Action::Reply(setinfo(req, buf)),
        b"reply" | b"tracking" => Action::PinSticky { stream: true },
        // These read or change the connection's own identity or flags.
        b"id" | b"info" | b"getredir" | b"trackinginfo" | b"caching" | b"no-evict"
        | b"no-touch" => Action::PinSticky { stream: false },
        _ => Action::Forward,
    }
}

/// `CLIENT PAUSE timeout [WRITE | ALL]`, when Redis would accept it;
/// anything else is forwarded for Redis's own error.
fn pause(req: &Request, buf: &[u8]) -> Action {
    let millis = req
        .arg(buf, 2)
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<u64>().ok());
    let all = match req.args.len() {
        3 => Some(true),
        4 => {
            let mut lower = [0u8; 8];
            match req.arg(buf, 3).and_then(|m| lowercase(m, &mut lower)) {
                Some(b"write") => Some(false),
                Some(b"all") => Some(true),
                _ => None,
            }
        }
        _ => None,
    };
    match (millis, all) {
        (Some(millis), Some(all)) => Action::Pause(PauseChange::Begin { millis, all }),
        _ => Action::Forward,
    }
}

/// Whether a `CLIENT PAUSE … WRITE` holds `req`: Redis holds commands
/// flagged write (subcommands by their own flags: FUNCTION LOAD) or
/// may-replicate. Redis 7.0's `COMMAND INFO`, which the table comes from,
/// does not show may-replicate, so those are named here (checked against
/// a paused redis-server; EVAL_RO, FCALL_RO, SORT_RO run).
pub(crate) fn is_write(req: &Request, buf: &[u8]) -> bool {
    let args: Vec<&[u8]> = (0..req.args.len().min(2))
        .filter_map(|i| req.arg(buf, i))
        .collect();
    let Some(spec) = command::resolve(&args) else {
        return false;
    };
    spec.has_flag(command::WRITE)
        || spec.has_flag(command::MAY_REPLICATE)
        || matches!(
            spec.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount"
        )
}

fn hello(req: &Request, buf: &[u8]) -> Action {
    let mut protocol = None;
    let mut setname = None;
    let mut as_user = false;
    if let Some(v) = req.arg(buf, 1) {
        match v {
            b"2" => protocol = Some(2),
            b"3" => protocol = Some(3),
            // Redis reads the version as an integer first.
            _ if !is_integer(v) => {
                return Action::Reply(reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
            _ => return Action::Reply(reply::error("NOPROTO unsupported protocol version")),
        }
        let mut i = 2;
        while i < req.args.len() {
            let mut lower = [0u8; 16];
            let opt = req.arg(buf, i).and_then(|o| lowercase(o, &mut lower));
            match opt {
                Some(b"auth") if i + 2 < req.args.len() => {
                    as_user = req.arg(buf, i + 1) != Some(b"default");
                    i += 3;
                }
                Some(b"setname") if i + 1 < req.args.len() => {
                    let name = req.arg(buf, i + 1).unwrap_or_default();
                    if let Some(refusal) = invalid_name(name) {
                        return refusal;
                    }
                    setname = Some(Bytes::copy_from_slice(name));
                    i += 2;
                }
                _ => {
                    let shown = req
                        .arg(buf, i)
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    return Action::Reply(reply::error(&format!(
                        "ERR Syntax error in HELLO option '{shown}'"
                    )));
                }
            }
        }
    }
    Action::Hello {
        protocol,
        setname,
        as_user,
    }
}

/// CLIENT SETINFO, checked as Redis (7.2) checks it, so that the app
/// reads Redis's refusals; what it sets stays with attache.
fn setinfo(req: &Request, buf: &[u8]) -> Bytes {
    let (Some(attr), Some(value), 4) = (req.arg(buf, 2), req.arg(buf, 3), req.args.len()) else {
        return wrong_arity("client|setinfo");
    };
    let shown = String::from_utf8_lossy(attr);
    if !attr.eq_ignore_ascii_case(b"lib-name") && !attr.eq_ignore_ascii_case(b"lib-ver") {
        return reply::error(&format!("ERR Unrecognized option '{shown}'"));
    }
    if !is_client_attr(value) {
        return reply::error(&format!(
            "ERR {shown} cannot contain spaces, newlines or special characters."
        ));
    }
    Bytes::from_static(reply::OK)
}

/// Redis's `validateClientAttr`, for client names and CLIENT SETINFO
/// values: printable ASCII without spaces, so CLIENT LIST splits on them.
fn is_client_attr(value: &[u8]) -> bool {
    value.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Redis's refusal of a client name (CLIENT SETNAME, HELLO … SETNAME).
fn invalid_name(name: &[u8]) -> Option<Action> {
    (!is_client_attr(name)).then(|| {
        Action::Reply(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    })
}

/// Whether Redis reads `v` as an integer (no sign but `-`, no leading zero).
fn is_integer(v: &[u8]) -> bool {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    !digits.is_empty()
        && digits.len() <= 19
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || v == b"0")
}

/// Whether `answer` is Redis's arity refusal, which Redis checks before
/// anything else: inside MULTI it aborts the transaction, and a RESP2
/// subscriber gets it rather than the refusal of its context.
pub(crate) fn is_arity_refusal(answer: &[u8]) -> bool {
    answer.starts_with(b"-ERR wrong number of arguments")
}

fn wrong_arity(name: &str) -> Bytes {
    reply::error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// ASCII-lowercases `name` into `out`; `None` if it does not fit.
fn lowercase<'a>(name: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    let out = out.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_resp::frame::parse_request;

    fn classify_cmd(args: &[&str], pinned: bool) -> Action {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let buf = reply::command(&args);
        let req = parse_request(&buf, 1 << 20).unwrap().unwrap();
        classify(&req, &buf, pinned).0
    }

    #[test]
    fn stateless_commands_share() {
        for cmd in [
            &["GET", "k"][..],
            &["set", "k", "v"],
            &["FLUSHALL"],
            &["CONFIG", "GET", "x"],
            &["XREAD", "STREAMS", "s", "0"],
        ] {
            assert_eq!(classify_cmd(cmd, false), Action::Forward, "{cmd:?}");
        }
    }

    #[test]
    fn pauses_redis_accepts_are_noted_others_forwarded() {
        let begin = |millis, all| Action::Pause(PauseChange::Begin { millis, all });
        assert_eq!(
            classify_cmd(&["CLIENT", "PAUSE", "100"], false),
            begin(100, true)
        );
        assert_eq!(
            classify_cmd(&["client", "pause", "5", "write"], false),
            begin(5, false)
        );
        assert_eq!(
            classify_cmd(&["CLIENT", "PAUSE", "5", "ALL"], false),
            begin(5, true)
        );
        assert_eq!(
            classify_cmd(&["CLIENT", "UNPAUSE"], false),
            Action::Pause(PauseChange::End)
        );
        for refused in [
            &["CLIENT", "PAUSE"][..],
            &["CLIENT", "PAUSE", "-1"],
            &["CLIENT", "PAUSE", "1.5"],
            &["CLIENT", "PAUSE", "5", "READ"],
            &["CLIENT", "PAUSE", "5", "ALL", "x"],
            &["CLIENT", "UNPAUSE", "x"],
        ] {
            assert_eq!(classify_cmd(refused, false), Action::Forward, "{refused:?}");
        }
        let is_write = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let buf = reply::command(&args);
            let req = parse_request(&buf, 1 << 20).unwrap().unwrap();
            is_write(&req, &buf)
        };
        assert!(is_write(&["set", "k", "v"]));
        assert!(is_write(&["EVAL", "return 1", "0"]), "may replicate");
        assert!(is_write(&["PUBLISH", "c", "m"]), "may replicate");
        assert!(!is_write(&["GET", "k"]));
        assert!(is_write(&["FUNCTION", "FLUSH"]), "by its subcommand");
        assert!(!is_write(&["FUNCTION", "STATS"]));
        assert!(!is_write(&["EVAL_RO", "return 1", "0"]));
    }

    #[test]
    fn state_changing_commands_pin() {
        assert_eq!(
            classify_cmd(&["MULTI"], false),
            Action::PinTransient(Transient::Multi)
        );
        assert_eq!(
            classify_cmd(&["blpop", "q", "0"], false),
            Action::PinTransient(Transient::Blocking)
        );
        assert_eq!(
            classify_cmd(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"], false),
            Action::PinTransient(Transient::Blocking)
        );
        assert_eq!(
            classify_cmd(&["SUBSCRIBE", "c"], false),
            Action::PinSticky { stream: true }
        );
        assert_eq!(
            classify_cmd(&["SELECT", "3"], false),
            Action::PinSticky { stream: false }
        );
        assert_eq!(
            classify_cmd(&["SELECT", "0"], true),
            Action::PinSticky { stream: false }
        );
        assert_eq!(
            classify_cmd(&["CLIENT", "TRACKING", "on"], false),
            Action::PinSticky { stream: true }
        );
    }

    #[test]
    fn connection_commands_are_answered_locally() {
        assert_eq!(
            classify_cmd(&["SELECT", "0"], false),
            Action::Reply(Bytes::from_static(reply::OK))
        );
        assert_eq!(
            classify_cmd(&["client", "setinfo", "lib-name", "x"], false),
            Action::Reply(Bytes::from_static(reply::OK))
        );
        // Refused as Redis 7.2 refuses them.
        for (args, refusal) in [
            (
                &["CLIENT", "SETINFO", "lib-name"][..],
                "-ERR wrong number of arguments for 'client|setinfo' command\r\n",
            ),
            (
                &["CLIENT", "SETINFO", "LIB-NAME", "redis py"],
                "-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n",
            ),
            (
                &["CLIENT", "SETINFO", "lib-ver", "1.0\n"],
                "-ERR lib-ver cannot contain spaces, newlines or special characters.\r\n",
            ),
            (
                &["CLIENT", "SETINFO", "badger", "hamster"],
                "-ERR Unrecognized option 'badger'\r\n",
            ),
        ] {
            let Action::Reply(got) = classify_cmd(args, false) else {
                panic!("{args:?} not answered");
            };
            assert_eq!(String::from_utf8_lossy(&got), refusal, "{args:?}");
        }
        assert_eq!(
            classify_cmd(&["CLIENT", "SETNAME", "app"], false),
            Action::SetName(Bytes::from_static(b"app"))
        );
        assert_eq!(
            classify_cmd(&["HELLO", "3", "AUTH", "u", "p", "SETNAME", "n"], false),
            Action::Hello {
                protocol: Some(3),
                setname: Some(Bytes::from_static(b"n")),
                as_user: true,
            }
        );
        assert_eq!(
            classify_cmd(&["HELLO", "3", "AUTH", "default", "p"], false),
            Action::Hello {
                protocol: Some(3),
                setname: None,
                as_user: false,
            }
        );
        assert_eq!(
            classify_cmd(&["AUTH", "u", "p"], false),
            Action::Auth { as_user: true }
        );
        for default in [&["AUTH", "default", "p"][..], &["AUTH", "p"]] {
            let action = classify_cmd(default, false);
            assert_eq!(action, Action::Auth { as_user: false });
        }
        assert!(
            matches!(classify_cmd(&["HELLO", "4"], false), Action::Reply(r) if r.starts_with(b"-NOPROTO"))
        );
    }
}
