//! Making an upstream connection: TCP, TLS when configured, then the
//! handshake (`AUTH` and/or `HELLO 3`) with the credential current at that
//! moment.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attache_resp::frame::{self, reply};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{UpstreamError, UpstreamId};
use super::metrics::{RedisMetrics, UpstreamStats};
use super::pause::PauseWindow;
use crate::credentials::RedisCredentials;
use crate::dns::Watched;
use crate::tls::{TlsConnector, UpstreamStream};
use crate::upstream::Reach;
use attache_resp::hash::ServerSpec;

/// The protocol version an upstream connection speaks. A connection's
/// version is connection state, so shared connections are kept per version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub(crate) fn index(self) -> usize {
        match self {
            Protocol::Resp2 => 0,
            Protocol::Resp3 => 1,
        }
    }

    pub(crate) fn is_resp3(self) -> bool {
        self == Protocol::Resp3
    }
}

/// Knows how to reach and authenticate to one upstream server.
#[derive(Debug)]
pub(crate) struct Connector {
    pub(crate) id: UpstreamId,
    server: ServerSpec,
    /// A cluster replica serving reads: `READONLY` after the handshake.
    readonly: bool,
    credentials: Option<RedisCredentials>,
    tls: Option<TlsConnector>,
    /// Resolves `server.host`; never connects to attache's own listeners.
    reach: Reach,
    /// The host's addresses, kept fresh in the background once resolved.
    watched: tokio::sync::OnceCell<Watched>,
    /// Round robin over the host's addresses.
    next_addr: AtomicUsize,
    connect_timeout: Duration,
    /// The listener's counters.
    pub(crate) metrics: Arc<RedisMetrics>,
    /// This server's stats (per family, connection gauges).
    pub(crate) stats: Arc<UpstreamStats>,
    /// The last `CLIENT PAUSE` the app sent this server through attache.
    pub(crate) pause: Arc<PauseWindow>,
}

impl Connector {
    pub(crate) fn new(
        listener: &str,
        server: ServerSpec,
        credentials: Option<RedisCredentials>,
        tls: Option<TlsConnector>,
        reach: Reach,
        connect_timeout: Duration,
        metrics: Arc<RedisMetrics>,
    ) -> Self {
        let addr: Arc<str> = authority(&server).into();
        Self {
            stats: metrics.upstream(&addr),
            id: UpstreamId {
                listener: listener.into(),
                addr,
            },
            readonly: false,
            server,
            credentials,
            tls,
            reach,
            watched: tokio::sync::OnceCell::new(),
            next_addr: AtomicUsize::new(0),
            connect_timeout,
            metrics,
            pause: Arc::default(),
        }
    }

    /// The same connector, sharing the service's pause window.
    pub(crate) fn with_pause(mut self, pause: Arc<PauseWindow>) -> Self {
        self.pause = pause;
        self
    }

    /// The same connector for a cluster replica that serves reads.
    pub(crate) fn readonly(mut self) -> Self {
        self.readonly = true;
        self
    }

    pub(crate) fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// The server this connector reaches.
    pub(crate) fn server(&self) -> &ServerSpec {
        &self.server
    }

    /// Sends one command on a fresh connection and returns its reply
    /// (topology queries).
    pub(crate) async fn query(&self, command: &[u8]) -> Result<Bytes, UpstreamError> {
        let mut stream = self.connect(Protocol::Resp2).await?;
        let exchange = async {
            stream
                .write_all(command)
                .await
                .map_err(|e| UpstreamError::Io(self.id.clone(), e.to_string().into()))?;
            read_replies(&mut stream, 1, Protocol::Resp2, self).await
        };
        tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(self.id.clone(), self.connect_timeout))?
    }

    /// A connected, authenticated stream speaking `protocol`.
    ///
    /// A credential the server refuses (`WRONGPASS`, `NOAUTH`) makes a token
    /// source fetch a fresh token at once and the connect is tried once
    /// more; then the refusal is the answer.
    pub(crate) async fn connect(
        &self,
        protocol: Protocol,
    ) -> Result<UpstreamStream, UpstreamError> {
        // Boxed: a TLS handshake and a DNS lookup make this future large,
        // and it is nested in every app session's future (through the
        // dedicated pool), so unboxed it would cost every idle connection.
        let outcome = self.connect_refreshing(protocol).await;
        let (listener, server) = match &outcome {
            Ok(_) => (&self.metrics.connects, &self.stats.connects),
            Err(_) => (&self.metrics.connect_failures, &self.stats.connect_failures),
        };
        RedisMetrics::add(listener);
        RedisMetrics::add(server);
        outcome
    }

    async fn connect_refreshing(
        &self,
        protocol: Protocol,
    ) -> Result<UpstreamStream, UpstreamError> {
        match Box::pin(self.connect_once(protocol)).await {
            Err(UpstreamError::Handshake(id, reason))
                if reason.contains("WRONGPASS") || reason.contains("NOAUTH") =>
            {
                // No longer than a connect: a hanging token endpoint is
                // bounded by the fetch's own (longer) timeout only.
                let refreshed = match &self.credentials {
                    Some(credentials) => {
                        tokio::time::timeout(self.connect_timeout, credentials.refresh_now())
                            .await
                            .unwrap_or(false)
                    }
                    None => false,
                };
                if refreshed {
                    Box::pin(self.connect_once(protocol)).await
                } else {
                    Err(UpstreamError::Handshake(id, reason))
                }
            }
            outcome => outcome,
        }
    }

    async fn connect_once(&self, protocol: Protocol) -> Result<UpstreamStream, UpstreamError> {
        // Outside the connect's own timeout: a source that gets no first
        // token is then reported by name (at the handshake), not as a
        // connect timeout.
        if let Some(credentials) = &self.credentials {
            credentials.wait_ready(self.connect_timeout).await;
        }
        let attempt = async {
            let tcp = self.connect_tcp().await?;
            tcp.set_nodelay(true)
                .map_err(|e| UpstreamError::Connect(self.id.clone(), e.to_string().into()))?;
            let mut stream = match &self.tls {
                None => UpstreamStream::Plain(tcp),
                Some(tls) => UpstreamStream::Tls(Box::new(
                    tls.connect(&self.server.host, tcp)
                        .await
                        .map_err(|e| UpstreamError::Tls(self.id.clone(), e.to_string().into()))?,
                )),
            };
            let (mut commands, mut replies) = self.handshake(protocol)?;
            if replies == 0 && self.tls.is_some() {
                // With TLS 1.3 the server judges attache's client certificate
                // after the handshake: one round trip proves the session.
                commands = reply::command(&[b"PING"]);
                replies = 1;
            }
            if replies > 0 {
                stream
                    .write_all(&commands)
                    .await
                    .map_err(|e| self.io_error(e))?;
                let answer = read_replies(&mut stream, replies, protocol, self).await?;
                self.check_handshake(&answer, protocol)?;
            }
            Ok(stream)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.id.clone(), self.connect_timeout))?
    }

    /// The commands that bring a fresh (or `RESET`) connection to
    /// `protocol`, authenticated; and how many replies they produce.
    pub(crate) fn handshake(&self, protocol: Protocol) -> Result<(Bytes, u32), UpstreamError> {
        let credential =
            match &self.credentials {
                None => None,
                Some(source) => Some(source.current().map_err(|e| {
                    UpstreamError::Credential(self.id.clone(), e.to_string().into())
                })?),
            };
        let mut out = BytesMut::new();
        let user = credential
            .as_ref()
            .map(|c| c.username.as_deref().unwrap_or("default"));
        match (protocol, &credential) {
            (Protocol::Resp3, Some(c)) => out.extend_from_slice(&reply::command(&[
                b"HELLO",
                b"3",
                b"AUTH",
                user.unwrap_or("default").as_bytes(),
                c.password.expose().as_bytes(),
            ])),
            (Protocol::Resp3, None) => out.extend_from_slice(&reply::command(&[b"HELLO", b"3"])),
            (Protocol::Resp2, Some(c)) => out.extend_from_slice(&match &c.username {
                Some(name) => {
                    reply::command(&[b"AUTH", name.as_bytes(), c.password.expose().as_bytes()])
                }
                None => reply::command(&[b"AUTH", c.password.expose().as_bytes()]),
            }),
            (Protocol::Resp2, None) => {}
        }
        let mut replies = u32::from(!out.is_empty());
        if self.readonly {
            out.extend_from_slice(&reply::command(&[b"READONLY"]));
            replies += 1;
        }
        Ok((out.freeze(), replies))
    }

    /// Bumps whenever the credential changes, for sources that refresh.
    pub(crate) fn credential_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.credentials.as_ref().and_then(|c| c.changes())
    }

    /// `AUTH` with the current credential (for a live connection), or
    /// `None` when the upstream takes no credential.
    pub(crate) fn auth_command(&self) -> Result<Option<Bytes>, UpstreamError> {
        let Some(source) = &self.credentials else {
            return Ok(None);
        };
        let c = source
            .current()
            .map_err(|e| UpstreamError::Credential(self.id.clone(), e.to_string().into()))?;
        let user = c.username.as_deref().unwrap_or("default");
        Ok(Some(reply::command(&[
            b"AUTH",
            user.as_bytes(),
            c.password.expose().as_bytes(),
        ])))
    }

    /// The upstream refused the credential: ask its source for a new one
    /// now (in the background; connections re-`AUTH` when it arrives).
    pub(crate) fn refresh_credential(&self) {
        if let Some(source) = &self.credentials {
            source.refresh_soon();
        }
    }

    /// Fails with the upstream's own words if any handshake reply is an error.
    pub(crate) fn check_handshake(
        &self,
        replies: &[u8],
        protocol: Protocol,
    ) -> Result<(), UpstreamError> {
        let mut rest = replies;
        while !rest.is_empty() {
            let len = frame::reply_len(rest, protocol.is_resp3())
                .ok()
                .flatten()
                .unwrap_or(rest.len());
            if frame::is_error(rest) {
                let line = rest[1..len]
                    .split(|&b| b == b'\r')
                    .next()
                    .unwrap_or_default();
                return Err(UpstreamError::Handshake(
                    self.id.clone(),
                    String::from_utf8_lossy(line).into(),
                ));
            }
            rest = &rest[len..];
        }
        Ok(())
    }
}

/// `host:port`, bracketing IPv6 hosts.
pub(crate) fn authority(server: &ServerSpec) -> String {
    if server.host.contains(':') {
        format!("[{}]:{}", server.host, server.port)
    } else {
        format!("{}:{}", server.host, server.port)
    }
}

impl Connector {
    /// A TCP connection to one of the host's current addresses (round
    /// robin; on failure the next ones are tried).
    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let failed = |cause: String| UpstreamError::Connect(self.id.clone(), cause.into());
        let addrs: Arc<[SocketAddr]> = match &self.reach.resolver {
            Some(resolver) => self
                .watched
                .get_or_try_init(|| resolver.watch(&self.server.host, self.server.port))
                .await
                .map_err(|e| failed(e.to_string()))?
                .addrs(),
            None => tokio::net::lookup_host((self.server.host.as_str(), self.server.port))
                .await
                .map_err(|e| failed(e.to_string()))?
                .collect(),
        };
        let first = self.next_addr.fetch_add(1, Ordering::Relaxed);
        let (mut looping, mut last_error) = (None, None);
        for i in 0..addrs.len() {
            let addr = addrs[(first + i) % addrs.len()];
            if let Err(why) = self.reach.own.refuse(addr) {
                looping = Some(why);
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        // A loop is the cause to fix, whatever the other addresses said.
        let cause = looping.or(last_error);
        Err(failed(cause.unwrap_or_else(|| "no addresses".into())))
    }

    /// The host's addresses as they change, once it has been resolved by
    /// name (a connection drains when its address leaves the set).
    /// `None` for an IP literal, whose address never changes (and whose
    /// connections then watch nothing).
    pub(crate) fn addresses(&self) -> Option<tokio::sync::watch::Receiver<Arc<[SocketAddr]>>> {
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        self.watched.get().map(Watched::subscribe)
    }

    /// A read or write failed during the handshake. With TLS 1.3 a server
    /// that refuses attache's client certificate says so only at the first
    /// read after the TLS handshake: the TLS error names that cause.
    fn io_error(&self, error: io::Error) -> UpstreamError {
        match &self.tls {
            Some(tls) => UpstreamError::Tls(
                self.id.clone(),
                tls.session_error(&self.server.host, error)
                    .to_string()
                    .into(),
            ),
            None => UpstreamError::Io(self.id.clone(), error.to_string().into()),
        }
    }
}

/// Reads exactly `count` replies from a stream that nothing else reads yet.
async fn read_replies(
    stream: &mut UpstreamStream,
    count: u32,
    protocol: Protocol,
    connector: &Connector,
) -> Result<Bytes, UpstreamError> {
    let id = &connector.id;
    let mut buf = BytesMut::with_capacity(512);
    let mut seen = 0;
    let mut scanned = 0;
    loop {
        while seen < count {
            match frame::reply_len(&buf[scanned..], protocol.is_resp3()) {
                Ok(Some(n)) => {
                    scanned += n;
                    seen += 1;
                }
                Ok(None) => break,
                Err(e) => return Err(UpstreamError::Protocol(id.clone(), e.to_string().into())),
            }
        }
        if seen == count {
            return Ok(buf.freeze());
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| connector.io_error(e))?;
        if n == 0 {
            return Err(UpstreamError::Closed(id.clone()));
        }
    }
}
