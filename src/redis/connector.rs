//! Making an upstream connection: TCP, then the handshake (`AUTH` and/or
//! `HELLO 3`) with the credential current at that moment.

use std::time::Duration;

use attache_resp::frame::{self, reply};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{UpstreamError, UpstreamId};
use crate::credentials::RedisCredentials;
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
    connect_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        listener: &str,
        server: ServerSpec,
        credentials: Option<RedisCredentials>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            id: UpstreamId {
                listener: listener.into(),
                addr: authority(&server).into(),
            },
            readonly: false,
            server,
            credentials,
            connect_timeout,
        }
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
            read_replies(&mut stream, 1, Protocol::Resp2, &self.id).await
        };
        tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(self.id.clone(), self.connect_timeout))?
    }

    /// A connected, authenticated stream speaking `protocol`.
    pub(crate) async fn connect(&self, protocol: Protocol) -> Result<TcpStream, UpstreamError> {
        let attempt = async {
            let mut stream = TcpStream::connect((self.server.host.as_str(), self.server.port))
                .await
                .map_err(|e| UpstreamError::Connect(self.id.clone(), e.to_string().into()))?;
            stream
                .set_nodelay(true)
                .map_err(|e| UpstreamError::Connect(self.id.clone(), e.to_string().into()))?;
            let (commands, replies) = self.handshake(protocol)?;
            if replies > 0 {
                stream
                    .write_all(&commands)
                    .await
                    .map_err(|e| UpstreamError::Io(self.id.clone(), e.to_string().into()))?;
                let answer = read_replies(&mut stream, replies, protocol, &self.id).await?;
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

/// Reads exactly `count` replies from a stream that nothing else reads yet.
async fn read_replies(
    stream: &mut TcpStream,
    count: u32,
    protocol: Protocol,
    id: &UpstreamId,
) -> Result<Bytes, UpstreamError> {
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
            .map_err(|e| UpstreamError::Io(id.clone(), e.to_string().into()))?;
        if n == 0 {
            return Err(UpstreamError::Closed(id.clone()));
        }
    }
}
