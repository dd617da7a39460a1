//! An in-process token endpoint on `127.0.0.1:0` for `tests/tokens.rs`:
//! OAuth2 client credentials (any path), Entra (`/{tenant}/oauth2/v2.0/token`,
//! whose access tokens are unsigned JWTs with an `oid`), the GCP metadata
//! server (GET) and STS `AssumeRoleWithWebIdentity` (`/sts`, XML). It can be
//! switched down (listener and connections closed: connection refused),
//! slow, failing (HTTP 500), or answering garbage or an empty token.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ok,
    /// Not listening: connections are refused.
    Down,
    /// Answers after this long.
    Slow(Duration),
    Error500,
    Garbage,
    EmptyToken,
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) form: BTreeMap<String, String>,
    /// The decoded `Authorization: Basic` pair.
    pub(crate) basic: Option<(String, String)>,
}

/// Called with each token before it is handed out (tests that make an
/// upstream accept it first).
pub(crate) type OnIssue = Arc<dyn Fn(&str) + Send + Sync>;

struct State {
    on_issue: Option<OnIssue>,
    mode: Mode,
    lifetime_secs: u64,
    latency: Duration,
    issued: u64,
    seen: Vec<Seen>,
}

pub(crate) struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    serving: Mutex<Option<JoinHandle<()>>>,
}

/// The `oid` claim of every Entra token.
pub(crate) const OID: &str = "9f1c2d3e-0000-4000-8000-00000000abcd";

impl TokenEndpoint {
    /// Starts serving tokens that live `lifetime_secs`.
    pub(crate) async fn start(lifetime_secs: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Self {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                on_issue: None,
                mode: Mode::Ok,
                lifetime_secs,
                latency: Duration::ZERO,
                issued: 0,
                seen: Vec::new(),
            })),
            serving: Mutex::new(None),
        };
        endpoint.serve(listener);
        endpoint
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests seen so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Runs `hook` with every token before it is handed out.
    #[allow(dead_code)]
    pub(crate) fn on_issue(&self, hook: OnIssue) {
        self.state.lock().unwrap().on_issue = Some(hook);
    }

    /// Every answer waits this long first (without failing).
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub(crate) async fn set_mode(&self, mode: Mode) {
        let was = std::mem::replace(&mut self.state.lock().unwrap().mode, mode);
        if mode == Mode::Down {
            // Dropping the accept task drops the listener and, through its
            // JoinSet, every open connection: new connections are refused.
            let serving = self.serving.lock().unwrap().take();
            if let Some(task) = serving {
                task.abort();
                let _ = task.await;
            }
        } else if was == Mode::Down {
            let listener = TcpListener::bind(self.addr).await.unwrap();
            self.serve(listener);
        }
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.serving.lock().unwrap() = Some(task);
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        if let Some(task) = self.serving.lock().unwrap().take() {
            task.abort();
        }
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let basic = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok()?.strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b64| String::from_utf8(STANDARD.decode(b64).ok()?).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some((form_decode(id), form_decode(secret)))
        });
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
        basic,
    };
    let (mode, latency, lifetime) = {
        let mut state = state.lock().unwrap();
        state.seen.push(seen.clone());
        (state.mode, state.latency, state.lifetime_secs)
    };
    tokio::time::sleep(latency).await;
    let reply = |status: u16, content_type: &str, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    };
    match mode {
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Error500 => {
            return reply(
                500,
                "application/json",
                r#"{"error":"server_error"}"#.into(),
            )
        }
        Mode::Garbage => return reply(200, "application/json", "{\"access_tok".into()),
        Mode::EmptyToken => {
            let body =
                format!(r#"{{"access_token":"","token_type":"Bearer","expires_in":{lifetime}}}"#);
            return reply(200, "application/json", body);
        }
        Mode::Ok | Mode::Down => {}
    }
    let n = {
        let mut state = state.lock().unwrap();
        state.issued += 1;
        state.issued
    };
    if seen.path == "/sts" {
        return reply(200, "text/xml", sts_response(n));
    }
    let token = if seen.path.ends_with("/oauth2/v2.0/token") {
        let claims = format!(r#"{{"oid":"{OID}","n":{n}}}"#);
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    } else {
        format!("token-{n}")
    };
    let hook = state.lock().unwrap().on_issue.clone();
    if let Some(hook) = hook {
        hook(&token);
    }
    let body =
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{lifetime}}}"#);
    reply(200, "application/json", body)
}

/// STS's answer, credentials numbered `n`, valid for decades.
fn sts_response(n: u64) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>session/token+{n}=</SessionToken>
      <SecretAccessKey>sts-s3cr3t-{n}</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIATEST{n}</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#
    )
}

fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
