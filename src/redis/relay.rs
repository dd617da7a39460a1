//! The relay of a streaming connection (pub/sub, MONITOR, client
//! tracking): what the server sends goes to the app as it comes, cut at
//! frame boundaries, so that other frames can go between two of them
//! without splitting one (the messages of a sharded subscription's other
//! servers, the answers attache gives itself).
//!
//! An answer attache gives itself while streaming (`AUTH`, `CLIENT
//! SETINFO`) must come after the replies to what the app sent before it,
//! which the server has not necessarily sent yet. So attache sends
//! `PING <token>` on the stream in its place, and the answer takes the
//! place of that PING's reply. The token is unguessable: an app's own PING
//! is never taken for it. A MONITOR feed's line for the PING is dropped.

use std::collections::VecDeque;
use std::sync::OnceLock;

use attache_resp::frame::{self, reply, Request};
use bytes::{Bytes, BytesMut};
use memchr::memmem;
use tokio::sync::mpsc;

use super::connection::STREAM_BUFFER;

/// The session's side of a relay: where its answers are placed.
pub(super) struct Marks {
    tx: mpsc::UnboundedSender<ToRelay>,
    /// `attache:<process><random>:`, the start of every token of this
    /// relay.
    prefix: Bytes,
    next: u64,
    /// The app's last command on the stream was `CLIENT CACHING`, which
    /// applies to the next command: a PING now would take it.
    pub(super) caching: bool,
    /// What the app asked with `CLIENT REPLY`.
    pub(super) replies: Replies,
}

/// The server's reply mode, as the app set it with `CLIENT REPLY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replies {
    On,
    /// `OFF`: no reply at all, attache's answers included.
    Off,
    /// `SKIP`: none to the next command.
    SkipNext,
}

impl Replies {
    /// The mode once the server has run `req`.
    pub(super) fn after(self, req: &Request, buf: &[u8]) -> Replies {
        let is = |i, s: &[u8]| req.arg(buf, i).is_some_and(|a| a.eq_ignore_ascii_case(s));
        if is(0, b"client") && is(1, b"reply") && req.args.len() == 3 {
            if is(2, b"on") {
                return Replies::On;
            } else if is(2, b"off") {
                return Replies::Off;
            } else if is(2, b"skip") {
                // Ignored while replies are off.
                return if self == Replies::Off {
                    self
                } else {
                    Replies::SkipNext
                };
            }
        }
        match self {
            // This command's reply was the one skipped.
            Replies::SkipNext => Replies::On,
            other => other,
        }
    }
}

struct Mark {
    /// The PING's reply as a bulk string (RESP3, or RESP2 unsubscribed);
    /// subscribed RESP2 connections answer `*2 pong <token>` around it.
    bulk: Bytes,
    answer: Bytes,
}

/// What a session tells its relay.
enum ToRelay {
    /// An answer to place (see `Marks::mark`).
    Mark(Mark),
    /// From here on the stream is not RESP (see `Marks::unframe`).
    Unframe,
}

impl Mark {
    fn is_reply(&self, frame: &[u8]) -> bool {
        const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n";
        frame == &self.bulk[..]
            || (frame.len() == PONG.len() + self.bulk.len()
                && frame.starts_with(PONG)
                && frame.ends_with(&self.bulk))
            || is_ping_refused(frame)
    }
}

/// The upstream's ACL user may not run PING (`-NOPERM … 'ping' …`): the
/// answer takes the refusal's place, and the next ones go ahead of the
/// stream. (An app PING refused just before would be taken for it: the app
/// then gets the answer and the refusal in swapped places, none lost.)
fn is_ping_refused(frame: &[u8]) -> bool {
    frame.starts_with(b"-NOPERM") && memmem::find(frame, b"'ping'").is_some()
}

impl Marks {
    /// Follows the app's command `req`, sent on the stream.
    pub(super) fn follow(&mut self, req: &Request, buf: &[u8]) {
        let is = |i, s: &[u8]| req.arg(buf, i).is_some_and(|a| a.eq_ignore_ascii_case(s));
        self.caching = is(0, b"client") && is(1, b"caching");
        self.replies = self.replies.after(req, buf);
    }

    /// Registers `answer` to take the place of the reply to the command
    /// returned, which the caller sends on the stream. Gives the answer
    /// back when the relay has ended.
    pub(super) fn mark(&mut self, answer: Bytes) -> Result<Bytes, Bytes> {
        let mut token = BytesMut::from(&self.prefix[..]);
        token.extend_from_slice(self.next.to_string().as_bytes());
        self.next += 1;
        let bulk = reply::bulk(&token);
        let ping = reply::command(&[b"PING", &token]);
        let sent = self.tx.send(ToRelay::Mark(Mark { bulk, answer }));
        sent.map(|()| ping).map_err(|e| match e.0 {
            ToRelay::Mark(mark) => mark.answer,
            ToRelay::Unframe => Bytes::new(),
        })
    }

    /// The app sends `SYNC` or `PSYNC`, whose reply is not RESP (an RDB
    /// payload, then a replication stream): from now on the relay passes
    /// bytes as they come. (A payload whose first bytes look like a bulk
    /// string was held for its missing `\r\n`, and dropped whole when the
    /// server closed after it, as for `REPLCONF rdb-only`. A PING before
    /// the SYNC cannot mark the place: Redis refuses a SYNC with a reply
    /// pending.)
    pub(super) fn unframe(self) {
        let _ = self.tx.send(ToRelay::Unframe);
    }
}

/// The confirmations of a resubscription the app did not ask for, in the
/// order its commands were sent: each command's kind (`subscribe`,
/// `psubscribe`, `ssubscribe`) and how many it confirms.
pub(super) type Unasked = VecDeque<(&'static [u8], usize)>;

/// `attache:<random>`, the start of every token this process sends. A
/// MONITOR feed drops the lines of all of them, other sessions' too.
fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("attache:{:016x}", fastrand::u64(..)))
}

/// Starts a relay to `out`: returns the sink the streaming connection
/// writes to, and where the session places its answers. The `unasked`
/// confirmations are dropped; the messages that come between them pass.
pub(super) fn spawn(
    out: mpsc::Sender<Bytes>,
    resp3: bool,
    unasked: Unasked,
    replies: Replies,
) -> (mpsc::Sender<Bytes>, Marks) {
    let (sink, input) = mpsc::channel(STREAM_BUFFER);
    let (tx, marks) = mpsc::unbounded_channel();
    let prefix = Bytes::from(format!("{}{:016x}:", process_prefix(), fastrand::u64(..)));
    let relay = Relay {
        out,
        marks,
        waiting: VecDeque::new(),
        resp3,
        unasked,
        pending: BytesMut::new(),
        framed: true,
    };
    tokio::spawn(relay.run(input));
    (
        sink,
        Marks {
            tx,
            prefix,
            next: 0,
            caching: false,
            replies,
        },
    )
}

struct Relay {
    out: mpsc::Sender<Bytes>,
    marks: mpsc::UnboundedReceiver<ToRelay>,
    /// Answers whose PING has not come back, in the order sent.
    waiting: VecDeque<Mark>,
    resp3: bool,
    unasked: Unasked,
    /// Received, not yet a whole frame.
    pending: BytesMut,
    /// False once the stream stopped parsing (a replication stream after
    /// `SYNC`): from then on bytes pass as they come.
    framed: bool,
}

impl Relay {
    async fn run(mut self, mut input: mpsc::Receiver<Bytes>) {
        loop {
            let chunk = tokio::select! {
                chunk = input.recv() => chunk,
                // The app's session let go: so does the relay, and with it
                // the connection's sink.
                () = self.out.closed() => return,
            };
            let Some(chunk) = chunk else { break };
            let pieces = if self.framed {
                self.take_marks();
                self.pending.extend_from_slice(&chunk);
                match self.framed {
                    true => self.cut(),
                    // What is held passes as it is, and the answers now,
                    // since their PINGs will not be looked for.
                    false => std::iter::once(self.pending.split().freeze())
                        .chain(self.waiting.drain(..).map(|m| m.answer))
                        .collect(),
                }
            } else {
                vec![chunk]
            };
            for piece in pieces {
                if self.out.send(piece).await.is_err() {
                    return;
                }
            }
        }
        // The connection is gone: what was whole goes out, then the
        // answers still waiting (nothing the app is owed is lost).
        self.marks.close();
        self.take_marks();
        let mut pieces = if self.framed { self.cut() } else { Vec::new() };
        // Not a whole frame, yet the server's: passed as it is.
        if !self.pending.is_empty() {
            pieces.push(self.pending.split().freeze());
        }
        pieces.extend(self.waiting.drain(..).map(|m| m.answer));
        for piece in pieces {
            if self.out.send(piece).await.is_err() {
                return;
            }
        }
    }

    /// What the session sent: answers to place, or the end of framing.
    fn take_marks(&mut self) {
        while let Ok(told) = self.marks.try_recv() {
            match told {
                ToRelay::Mark(mark) => self.waiting.push_back(mark),
                ToRelay::Unframe => self.framed = false,
            }
        }
    }

    /// Takes the whole frames off `pending`, in pieces to send in order:
    /// runs of the server's frames as they are, answers in place of their
    /// PINGs' replies.
    fn cut(&mut self) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        let mut whole = 0;
        loop {
            // The app's HELLO may switch the stream's protocol under the
            // relay: a frame of the other protocol is still a frame.
            let rest = &self.pending[whole..];
            let n = match frame::reply_len(rest, self.resp3)
                .or_else(|_| frame::reply_len(rest, !self.resp3))
            {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => {
                    // Not RESP (a replication stream): pass it all on, and
                    // the answers now, since their PINGs cannot be found.
                    self.framed = false;
                    pieces.push(self.pending.split().freeze());
                    pieces.extend(self.waiting.drain(..).map(|m| m.answer));
                    return pieces;
                }
            };
            let one = &self.pending[whole..whole + n];
            let instead = if is_unasked(&mut self.unasked, one) {
                Some(None)
            } else if self.waiting.front().is_some_and(|m| m.is_reply(one)) {
                if is_ping_refused(one) {
                    // No more PINGs: `mark` gives the next answers back.
                    self.marks.close();
                }
                self.waiting.pop_front().map(|m| Some(m.answer))
            } else if one.first() == Some(&b'+')
                && memmem::find(one, process_prefix().as_bytes()).is_some()
            {
                // MONITOR's line for attache's own PING (this session's or
                // another's).
                Some(None)
            } else {
                None
            };
            match instead {
                None => whole += n,
                Some(answer) => {
                    if whole > 0 {
                        pieces.push(self.pending.split_to(whole).freeze());
                        whole = 0;
                    }
                    let _ = self.pending.split_to(n);
                    pieces.extend(answer);
                }
            }
        }
        if whole > 0 {
            pieces.push(self.pending.split_to(whole).freeze());
        }
        pieces
    }
}

/// Whether `frame` confirms the resubscription (to be dropped). The
/// server may relay a message between two of its commands. A refusal
/// of one of them (`-NOPERM`) is passed on, so the app learns that a
/// subscription is gone; that command's confirmations are not awaited.
fn is_unasked(unasked: &mut Unasked, frame: &[u8]) -> bool {
    let Some((kind, left)) = unasked.front_mut() else {
        return false;
    };
    if frame.first() == Some(&b'-') {
        unasked.pop_front();
        return false;
    }
    if !is_confirmation(frame, kind) {
        return false;
    }
    *left -= 1;
    if *left == 0 {
        unasked.pop_front();
    }
    true
}

/// `frame` is a `kind` confirmation: `*3` (RESP2) or `>3` (RESP3) whose
/// first element is the bulk string `kind`.
fn is_confirmation(frame: &[u8], kind: &[u8]) -> bool {
    let Some(rest) = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))
    else {
        return false;
    };
    let header = format!("${}\r\n", kind.len());
    rest.strip_prefix(header.as_bytes())
        .is_some_and(|r| r.len() > kind.len() && r[..kind.len()].eq_ignore_ascii_case(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(resp3: bool, unasked: &[(&'static [u8], usize)]) -> Relay {
        let (out, _) = mpsc::channel(1);
        let (_, marks) = mpsc::unbounded_channel();
        Relay {
            out,
            marks,
            waiting: VecDeque::new(),
            resp3,
            unasked: unasked.iter().copied().collect(),
            pending: BytesMut::new(),
            framed: true,
        }
    }

    /// What the app gets when `frames` come from the server.
    fn relayed(relay: &mut Relay, frames: &[&[u8]]) -> Vec<u8> {
        relay.pending.extend_from_slice(&frames.concat());
        relay.cut().concat()
    }

    fn push(resp3: bool, parts: [&str; 3]) -> Vec<u8> {
        let mut out = if resp3 {
            b">3\r\n".to_vec()
        } else {
            b"*3\r\n".to_vec()
        };
        for p in parts {
            match p.parse::<i64>() {
                Ok(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
                Err(_) => out.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes()),
            }
        }
        out
    }

    #[test]
    fn a_message_between_the_resubscriptions_commands_reaches_the_app() {
        for resp3 in [false, true] {
            let mut r = relay(resp3, &[(b"subscribe", 2), (b"psubscribe", 1)]);
            let hello = push(resp3, ["message", "a", "hello"]);
            let world = push(resp3, ["message", "b", "world"]);
            let got = relayed(
                &mut r,
                &[
                    &push(resp3, ["subscribe", "a", "1"]),
                    &push(resp3, ["subscribe", "b", "2"]),
                    &hello,
                    &push(resp3, ["psubscribe", "p*", "3"]),
                    &world,
                ],
            );
            assert_eq!(got, [&hello[..], &world[..]].concat(), "resp3: {resp3}");
            // The app's own SUBSCRIBE after it is confirmed to the app.
            let own = push(resp3, ["subscribe", "c", "4"]);
            assert_eq!(relayed(&mut r, &[&own]), own);
        }
    }

    #[test]
    fn a_refused_resubscription_is_passed_on_and_not_awaited() {
        let mut r = relay(false, &[(b"subscribe", 2), (b"ssubscribe", 1)]);
        let refused = b"-NOPERM No permissions to access a channel\r\n";
        let message = push(false, ["smessage", "s", "x"]);
        let got = relayed(
            &mut r,
            &[refused, &push(false, ["ssubscribe", "s", "1"]), &message],
        );
        assert_eq!(got, [&refused[..], &message[..]].concat());
        let own = push(false, ["subscribe", "c", "2"]);
        assert_eq!(relayed(&mut r, &[&own]), own);
    }
}
