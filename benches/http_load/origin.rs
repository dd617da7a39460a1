//! The builtin upstream: a minimal HTTP/1.1 server that answers
//! `GET /bytes/N` with N bytes held in memory, run as its own process (this
//! bench binary re-executed with [`SERVE_FLAG`]) so that its CPU time is its
//! own and not the load generator's.
//!
//! Hand-written rather than hyper's server: it does the least work an
//! origin can (find the end of each request head, write a prepared
//! response), so that the 2 cores of a small machine go to the proxy under
//! test. It understands only what the bench sends: GET without a body,
//! keep-alive, pipelining, `connection: close`. Anything else gets a 400
//! and the connection closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::options::body_path;

/// The first argument that makes this binary the upstream.
pub(crate) const SERVE_FLAG: &str = "--serve-upstream";

/// A request head larger than this is refused (431) and the connection closed.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Parser, Debug)]
#[command(name = "http_load --serve-upstream")]
struct ServeArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, value_delimiter = ',', required = true)]
    body_sizes: Vec<usize>,
}

/// The arguments that start the upstream on `listen`.
pub(crate) fn serve_args(listen: SocketAddr, threads: usize, body_sizes: &[usize]) -> Vec<String> {
    let sizes: Vec<String> = body_sizes.iter().map(usize::to_string).collect();
    vec![
        SERVE_FLAG.into(),
        "--listen".into(),
        listen.to_string(),
        "--threads".into(),
        threads.max(1).to_string(),
        "--body-sizes".into(),
        sizes.join(","),
    ]
}

/// The upstream process's `main` (`args` as the process got them, the
/// program and [`SERVE_FLAG`] first): serves until killed.
pub(crate) fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = ServeArgs::parse_from(args.into_iter().filter(|a| a != SERVE_FLAG));
    let mut runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("upstream: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let responses = Arc::new(Responses::new(&args.body_sizes));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                eprintln!("upstream: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let responses = Arc::clone(&responses);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &responses).await {
                eprintln!("upstream: {peer}: {e}");
            }
        });
    }
}

/// Every response, prepared once.
struct Responses {
    by_path: HashMap<String, Vec<u8>>,
    not_found: Vec<u8>,
    bad_request: Vec<u8>,
    too_large: Vec<u8>,
}

impl Responses {
    fn new(body_sizes: &[usize]) -> Self {
        let by_path = body_sizes
            .iter()
            .map(|&size| {
                (
                    body_path(size),
                    response("200 OK", &vec![b'x'; size], false),
                )
            })
            .collect();
        Self {
            by_path,
            not_found: response("404 Not Found", b"no such body\n", false),
            bad_request: response("400 Bad Request", b"GET without a body only\n", true),
            too_large: response("431 Request Header Fields Too Large", b"", true),
        }
    }
}

fn response(status: &str, body: &[u8], close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n{connection}\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// Serves one connection: answers every complete request head in what has
/// arrived (pipelined requests in one write), then reads more.
async fn connection(mut stream: TcpStream, responses: &Responses) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let mut start = 0;
        let mut close = false;
        while let Some(end) = head_end(&input[start..]) {
            let request = parse_head(&input[start..start + end]);
            let reply = match &request {
                Some(r) => responses
                    .by_path
                    .get(r.path)
                    .unwrap_or(&responses.not_found),
                None => &responses.bad_request,
            };
            output.extend_from_slice(reply);
            start += end;
            close = request.is_none_or(|r| r.close);
            if close {
                break;
            }
        }
        input.drain(..start);
        if !close && input.len() > MAX_HEAD {
            output.extend_from_slice(&responses.too_large);
            close = true;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if close || stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// The length of the first request head in `input` (through its blank
/// line), if it has all arrived.
fn head_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

struct RequestHead<'a> {
    path: &'a str,
    /// `connection: close`, or HTTP/1.0 without keep-alive.
    close: bool,
}

/// A GET without a body, or `None` for anything this server won't serve.
fn parse_head(head: &[u8]) -> Option<RequestHead<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if method != "GET" || request_line.next().is_some() {
        return None;
    }
    let mut close = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || (close && !value.eq_ignore_ascii_case("keep-alive"));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return None;
        }
    }
    Some(RequestHead { path, close })
}
