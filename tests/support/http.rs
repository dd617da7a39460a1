//! In-process HTTP upstreams (hyper; HTTP/1.1 and HTTP/2, plain or TLS
//! with the test PKI, upgrades allowed) with a per-test handler, and a
//! bare hyper client that talks to attache as an app would.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::tls::TestPki;

/// Bodies the test upstream and client send.
pub type TestBody = BoxBody<Bytes, std::io::Error>;

pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A response with `status` and a text body.
pub fn text(status: u16, body: &str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .body(full(body.to_owned()))
        .unwrap()
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: Version,
    pub headers: hyper::HeaderMap,
}

/// A running upstream; stops (listener and connections) on drop or kill.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted, and open now.
    pub connections: Arc<(AtomicUsize, AtomicUsize)>,
    task: Option<JoinHandle<()>>,
}

impl TestUpstream {
    /// Plain HTTP on `127.0.0.1:0`.
    pub async fn plain(handler: Handler) -> Self {
        Self::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            None,
            handler,
        )
    }

    /// TLS with the test PKI's server certificate, offering `alpn`.
    pub async fn tls(pki: &TestPki, alpn: &[&[u8]], handler: Handler) -> Self {
        let config = server_tls(pki, alpn);
        Self::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Some(config),
            handler,
        )
    }

    /// Serves on `listener`.
    pub fn on(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let recorded = seen.clone();
        let connections = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let counts = connections.clone();
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, seen, acceptor) =
                    (handler.clone(), recorded.clone(), acceptor.clone());
                counts.0.fetch_add(1, Ordering::SeqCst);
                counts.1.fetch_add(1, Ordering::SeqCst);
                let open = OpenGuard(counts.clone());
                tasks.spawn(async move {
                    let _open = open;
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: request.method().to_string(),
                            path: request.uri().path().to_owned(),
                            version: request.version(),
                            headers: request.headers().clone(),
                        });
                        let answer = handler(request);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            seen,
            connections,
            task: Some(task),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.connections.0.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.connections.1.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Closes the listener and every connection (as a crash would).
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<(AtomicUsize, AtomicUsize)>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0 .1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// TLS that requires a client certificate issued by the test CA.
pub fn mutual_tls(pki: &TestPki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let (certs, key) = server_identity(pki);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn server_identity(pki: &TestPki) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = CertificateDer::pem_file_iter(pki.path("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (
        certs,
        PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap(),
    )
}

fn server_tls(pki: &TestPki, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let (certs, key) = server_identity(pki);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An app's keep-alive HTTP/1.1 connection to attache.
pub struct AppClient {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl AppClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection.with_upgrades());
        Self { sender }
    }

    /// Sends `request` (its Host defaults to `localhost`).
    pub async fn send(
        &mut self,
        mut request: Request<TestBody>,
    ) -> hyper::Result<Response<Incoming>> {
        if !request.headers().contains_key(hyper::header::HOST) {
            request
                .headers_mut()
                .insert(hyper::header::HOST, "localhost".parse().unwrap());
        }
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    /// `GET path`, answered with status and body text.
    pub async fn get(&mut self, path: &str) -> (u16, hyper::HeaderMap, String) {
        let request = Request::get(path).body(empty()).unwrap();
        read(self.send(request).await.unwrap()).await
    }
}

/// One request on a new connection.
pub async fn send(addr: SocketAddr, request: Request<TestBody>) -> (u16, hyper::HeaderMap, String) {
    let mut client = AppClient::connect(addr).await;
    read(client.send(request).await.unwrap()).await
}

/// Status, headers and the whole body as text.
pub async fn read(response: Response<Incoming>) -> (u16, hyper::HeaderMap, String) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// attache with one `[http.api]` listener; `extra` goes in its table.
pub async fn attache_for(upstream: &str, extra: &str) -> (attache::Running, std::net::SocketAddr) {
    let running = super::start_attache(&format!(
        "[http.api]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{extra}\n"
    ))
    .await;
    let addr = running.http_addr("api").expect("listener api");
    (running, addr)
}

/// attache with one `[http.api]` listener in front of `upstream`, a TLS
/// upstream with the test PKI's certificate, reached as `localhost`.
pub async fn attache_for_tls(
    pki: &TestPki,
    upstream: &TestUpstream,
) -> (attache::Running, std::net::SocketAddr) {
    attache_for(
        &format!("https://localhost:{}", upstream.addr.port()),
        &format!(
            "[http.api.tls]\nca_file = \"{}\"",
            pki.path("ca.pem").display()
        ),
    )
    .await
}

/// Answers `upstream saw <uri>`.
pub fn echo_path() -> Handler {
    handler(|request| async move { text(200, &format!("upstream saw {}", request.uri())) })
}
