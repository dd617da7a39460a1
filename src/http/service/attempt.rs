//! One attempt of a request on one endpoint of its upstream: attache's own
//! HTTP/1.1 client, or hyper's (HTTP/2, upgrades); what the app sees when
//! it gets no response.

use std::net::SocketAddr;
use std::time::Instant;

use attache_http::retry::Outcome;
use attache_http::{LocalError, Upstream};
use http::header::HOST;
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use tracing::debug;

use super::{HttpService, Outgoing};
use crate::http::balance;
use crate::http::body::{Body, BoxError};
use crate::http::h1::SendError;
use crate::http::pool::{ConnectError, Sender, UpstreamPool};

impl HttpService {
    /// One attempt on one endpoint. On failure, what happened and what
    /// the app sees if it is the last attempt.
    pub(super) async fn attempt(
        &self,
        pool: &UpstreamPool,
        upstream: &Upstream,
        avoid: &mut Option<SocketAddr>,
        outgoing: &mut Outgoing,
    ) -> Result<Response<Body>, (Outcome, LocalError)> {
        let connect_failed = |e: ConnectError| {
            (
                Outcome::ConnectFailed,
                LocalError::connect_failed(upstream, e),
            )
        };
        let endpoints = pool.endpoints().await.map_err(connect_failed)?;
        let endpoint = balance::pick(&endpoints, *avoid).ok_or_else(|| {
            connect_failed(ConnectError {
                addr: upstream.authority().to_string(),
                cause: "no addresses".into(),
            })
        })?;
        *avoid = Some(endpoint.addr);
        let _in_flight = endpoint.start();
        let sender = pool
            .checkout(&endpoint, outgoing.upgrade)
            .await
            .map_err(connect_failed)?;
        let Some(body) = outgoing.body.take() else {
            let cause = "the request body was already sent";
            return Err((
                Outcome::ResetBeforeResponse,
                LocalError::upstream_reset(upstream, cause),
            ));
        };
        let sent_at = Instant::now();
        let result = match sender {
            Sender::H1(connection) => {
                // Written from the request's own headers: nothing to copy,
                // and they stay for a later attempt.
                let target = outgoing.uri.path_and_query().map_or("/", |pq| pq.as_str());
                let home = pool.home(endpoint.clone());
                connection
                    .send(&outgoing.method, target, &outgoing.headers, body, home)
                    .await
                    .map_err(|e| match e {
                        SendError::Unsent { body, cause } => Failure {
                            unsent: Some((body, None)),
                            cause: cause.to_string(),
                            upstream_fault: true,
                            app_body: false,
                        },
                        SendError::AppBody(e) => Failure {
                            unsent: None,
                            cause: format!("the app's request body failed: {e}"),
                            upstream_fault: false,
                            app_body: true,
                        },
                        SendError::Failed(cause) => Failure {
                            unsent: None,
                            cause,
                            upstream_fault: true,
                            app_body: false,
                        },
                    })
            }
            // Boxed: hyper's send futures would make every request's
            // future (copied whole into its box) larger by half.
            Sender::Upgrade(sender) => {
                Box::pin(self.send_hyper(outgoing, body, HyperSender::Http1(sender))).await
            }
            Sender::H2(sender) => {
                Box::pin(self.send_hyper(outgoing, body, HyperSender::Http2(sender))).await
            }
        };
        match result {
            Ok(response) => {
                endpoint.succeeded(sent_at.elapsed());
                Ok(response)
            }
            Err(failure) => {
                let cause = format!("{}: {}", endpoint.addr, failure.cause);
                if let Some((body, headers)) = failure.unsent {
                    // The connection closed before the request was written
                    // (a keep-alive race): nothing reached the upstream.
                    if let Some(headers) = headers.filter(|_| outgoing.headers.is_empty()) {
                        outgoing.headers = headers;
                    }
                    outgoing.body.put_back(body);
                    return Err((
                        Outcome::Refused,
                        LocalError::upstream_reset(upstream, cause),
                    ));
                }
                if failure.upstream_fault {
                    pool.failed(&endpoint);
                }
                // The app's own body broke (bad chunked framing, cut
                // short): its fault, not the upstream's. A streamed body
                // is gone, so this is never retried.
                if failure.app_body {
                    debug!(listener = %self.name, %upstream, cause = %failure.cause, "the app's request body failed");
                    return Err((
                        Outcome::ResetBeforeResponse,
                        LocalError::BadRequest {
                            reason: "the request body could not be read",
                        },
                    ));
                }
                Err((
                    Outcome::ResetBeforeResponse,
                    LocalError::upstream_reset(upstream, cause),
                ))
            }
        }
    }

    /// Sends through hyper's client: an HTTP/2 connection, or a new
    /// HTTP/1.1 one for an upgrade.
    async fn send_hyper(
        &self,
        outgoing: &mut Outgoing,
        body: Body,
        sender: HyperSender,
    ) -> Result<Response<Body>, Failure> {
        let mut request = Request::new(body);
        *request.method_mut() = outgoing.method.clone();
        // Moved rather than cloned when no later attempt could send them
        // again (they come back with a request returned unsent).
        *request.headers_mut() = if self.may_resend(outgoing) {
            outgoing.headers.clone()
        } else {
            std::mem::take(&mut outgoing.headers)
        };
        // HTTP/2 carries it as :authority; kept for a request that comes
        // back unsent.
        let mut host = None;
        if matches!(sender, HyperSender::Http2(_)) {
            *request.version_mut() = Version::HTTP_2;
            *request.uri_mut() = outgoing.uri.clone();
            host = request.headers_mut().remove(HOST);
        } else {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = origin_form(&outgoing.uri);
        }
        let sent = match sender {
            HyperSender::Http1(mut sender) => sender.try_send_request(request).await,
            HyperSender::Http2(mut sender) => sender.try_send_request(request).await,
        };
        match sent {
            Ok(response) => Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync())),
            Err(mut failed) => {
                let unsent = failed.take_message().map(|request| {
                    let (mut parts, body) = request.into_parts();
                    if let Some(host) = host {
                        parts.headers.insert(HOST, host);
                    }
                    (body, Some(parts.headers))
                });
                let error = failed.into_error();
                Err(Failure {
                    unsent,
                    cause: error.to_string(),
                    upstream_fault: !error.is_user(),
                    app_body: false,
                })
            }
        }
    }
}

/// Why an attempt got no response.
struct Failure {
    /// Nothing was written: the body (and with hyper's client the
    /// headers) to send again.
    unsent: Option<(Body, Option<HeaderMap>)>,
    cause: String,
    /// Counts against the address (not so when the app's body failed).
    upstream_fault: bool,
    /// The app's request body failed (a 400, not the upstream's fault).
    app_body: bool,
}

/// hyper's two client connections, as [`HttpService::send_hyper`] uses them.
enum HyperSender {
    /// A new connection for an upgrade.
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// `/path?query` of an absolute URI (HTTP/1.1 requests to an origin).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"))
}
