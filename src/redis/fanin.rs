//! Pub/sub on a sharded listener. Standalone Redis servers do not share
//! channels, so an app that subscribes through a ketama listener is
//! subscribed on *every* server: a message published on any of them reaches
//! it. The first server's connection is relayed as is (it answers the
//! subscribe confirmations and PINGs the app expects, once); the others are
//! filtered down to their messages.

use attache_resp::frame;
use attache_resp::shard;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::connection::STREAM_BUFFER;

/// A sink for one secondary server's stream; its messages (and only those)
/// are forwarded to `out`.
pub(super) fn secondary_sink(out: mpsc::Sender<Bytes>, resp3: bool) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut pending = BytesMut::new();
        while let Some(chunk) = rx.recv().await {
            pending.extend_from_slice(&chunk);
            loop {
                let len = match frame::reply_len(&pending, resp3) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    // Out of step: the app's stream cannot be trusted either.
                    Err(_) => return,
                };
                let one = pending.split_to(len).freeze();
                if is_message(&one, resp3) && out.send(one).await.is_err() {
                    return;
                }
            }
        }
    });
    tx
}

/// A published message (`message`, `pmessage`, `smessage`), as opposed to
/// a subscription confirmation or a PING reply.
fn is_message(reply: &Bytes, resp3: bool) -> bool {
    let Some(elements) = shard::array_elements(reply, resp3) else {
        return false;
    };
    let Some(first) = elements.first() else {
        return false;
    };
    let kind = &reply[first.clone()];
    [
        &b"$7\r\nmessage\r\n"[..],
        b"$8\r\npmessage\r\n",
        b"$8\r\nsmessage\r\n",
    ]
    .iter()
    .any(|k| kind.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_pass() {
        let message = Bytes::from_static(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n");
        let confirm = Bytes::from_static(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
        let push =
            Bytes::from_static(b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$2\r\nhi\r\n");
        assert!(is_message(&message, false));
        assert!(!is_message(&confirm, false));
        assert!(is_message(&push, true));
    }
}
