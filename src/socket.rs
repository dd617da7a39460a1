//! Socket reads and writes that spend no syscall in vain, and the
//! lingering close both kinds of listener use after refusing a request.
//!
//! Tokio's readiness is edge-triggered and stays set after a read, so the
//! usual `read().await` loop pays one `recvfrom` → `EAGAIN` per wakeup. A
//! short read (fewer bytes than the buffer had room for) means the socket
//! was drained, so [`try_read`] clears the readiness itself; the next call
//! waits for epoll instead. On a pipeline-1 workload this is one syscall
//! saved per request on each side of the proxy.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// One non-blocking read into `buf`: `None` when nothing was there.
pub(crate) fn try_read(
    stream: &TcpStream,
    buf: &mut BytesMut,
    reserve: usize,
) -> io::Result<Option<usize>> {
    if buf.capacity() - buf.len() < reserve / 2 {
        buf.reserve(reserve.max(buf.len() / 2));
    }
    let room = buf.capacity() - buf.len();
    let mut got = None;
    // The read runs inside `try_io` so that the readiness it clears is the
    // one observed *before* reading: an event that arrives during the read
    // bumps tokio's tick and survives (another thread's driver may deliver
    // it at any moment on a multi-threaded runtime).
    let outcome = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(&mut *buf)?;
        got = Some(n);
        if n > 0 && n < room {
            // Drained: forget the readiness without another syscall.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (got, outcome) {
        (Some(n), _) => Ok(Some(n)),
        (None, Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        (None, _) => Ok(None),
    }
}

/// Writes all of `data`, trying first and waiting for writability only when
/// the socket buffer is full.
pub(crate) async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A lingering close reads for at most this long in all...
pub(crate) const LINGER_MAX: Duration = Duration::from_secs(10);
/// ...and until the app pauses this long.
const LINGER_IDLE: Duration = Duration::from_secs(1);

/// Reads and drops what the app still sends, once its connection is to
/// close with a request of it left unread (an upload answered before its
/// body, a Redis request refused from its declared length) and the answer
/// is written: until the app's end of the stream, an error, a pause of
/// [`LINGER_IDLE`], [`LINGER_MAX`] in all, or `stop` (attache shutting
/// down). Most clients write a whole request before they read; a close
/// with its bytes unread would reset the connection, and the reset can
/// cost the app the answer it has not read yet (it sees "broken pipe" or
/// "connection reset" instead).
pub(crate) async fn linger(reader: &mut (impl AsyncRead + Unpin), stop: impl Future<Output = ()>) {
    linger_until(reader, stop, tokio::time::Instant::now() + LINGER_MAX).await;
}

/// [`linger`] with its end (at the latest) given.
pub(crate) async fn linger_until(
    reader: &mut (impl AsyncRead + Unpin),
    stop: impl Future<Output = ()>,
    deadline: tokio::time::Instant,
) {
    let mut stop = std::pin::pin!(stop);
    let mut sink = vec![0; 16 * 1024];
    loop {
        let read = tokio::time::timeout(LINGER_IDLE, reader.read(&mut sink));
        let n = tokio::select! {
            biased;
            () = stop.as_mut() => return,
            () = tokio::time::sleep_until(deadline) => return,
            n = read => n,
        };
        if !matches!(n, Ok(Ok(1..))) {
            return;
        }
    }
}
