//! An in-process authoritative DNS server for `attache.test.` on
//! `127.0.0.1:0` (UDP and TCP) whose records tests change while attache
//! watches them; it can answer SERVFAIL and counts A queries.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attache::dns::DnsConfig;
use hickory_server::authority::{AuthorityObject, Catalog, MessageResponseBuilder, ZoneType};
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
pub struct Control {
    servfail: AtomicBool,
    /// A queries served, by name (lowercase, no trailing dot).
    a_queries: Mutex<HashMap<String, usize>>,
}

/// The zone's catalog, behind a switch to SERVFAIL and a query counter.
pub struct Handler {
    catalog: Catalog,
    control: Arc<Control>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            if info.query.query_type() == RecordType::A {
                let name = info.query.name().to_string().to_ascii_lowercase();
                let name = name.trim_end_matches('.').to_owned();
                *self
                    .control
                    .a_queries
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_default() += 1;
            }
        }
        if !self.control.servfail.load(Ordering::SeqCst) {
            return self.catalog.handle_request(request, response).await;
        }
        let message = MessageResponseBuilder::from_message_request(request)
            .error_msg(request.header(), ResponseCode::ServFail);
        response.send_response(message).await.unwrap_or_else(|_| {
            let mut header = Header::new();
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        })
    }
}

/// The authoritative server for `attache.test.`.
pub struct TestDns {
    pub addr: SocketAddr,
    authority: Arc<InMemoryAuthority>,
    control: Arc<Control>,
    server: Option<ServerFuture<Handler>>,
}

impl TestDns {
    pub async fn start() -> Self {
        let origin = Name::from_ascii("attache.test.").unwrap();
        let mut authority = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(
            Name::from_ascii("ns.attache.test.").unwrap(),
            Name::from_ascii("admin.attache.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            1,
        );
        assert!(authority.upsert_mut(Record::from_rdata(origin, 3600, RData::SOA(soa)), 1));
        let mut dns = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            authority: Arc::new(authority),
            control: Arc::default(),
            server: None,
        };
        dns.serve().await;
        dns
    }

    /// Serves on `self.addr` (a new port the first time, the same one after
    /// a `stop`), UDP and TCP.
    pub async fn serve(&mut self) {
        let (udp, tcp) = bind_pair(self.addr).await;
        self.addr = udp.local_addr().unwrap();
        let mut catalog = Catalog::new();
        let authority: Arc<dyn AuthorityObject> = self.authority.clone();
        catalog.upsert(LowerName::new(authority.origin()), vec![authority]);
        let mut server = ServerFuture::new(Handler {
            catalog,
            control: self.control.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5));
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        let mut server = self.server.take().expect("running");
        server.shutdown_gracefully().await.unwrap();
    }

    /// Replaces the A records of `name` (relative to the zone); none removes
    /// the name.
    pub async fn set_a(&self, name: &str, ttl: u32, ips: &[[u8; 4]]) {
        let name = Name::from_ascii(format!("{name}.attache.test.")).unwrap();
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut set = RecordSet::with_ttl(name, RecordType::A, ttl);
        for ip in ips {
            set.add_rdata(RData::A(A::from(Ipv4Addr::from(*ip))));
        }
        let mut records = self.authority.records_mut().await;
        if ips.is_empty() {
            records.remove(&key);
        } else {
            records.insert(key, Arc::new(set));
        }
    }

    pub fn set_servfail(&self, on: bool) {
        self.control.servfail.store(on, Ordering::SeqCst);
    }

    pub fn a_queries(&self, name: &str) -> usize {
        let name = format!("{name}.attache.test");
        let queries = self.control.a_queries.lock().unwrap();
        queries.get(&name).copied().unwrap_or(0)
    }

    pub fn config(&self, min_ttl: u64, max_ttl: u64) -> DnsConfig {
        DnsConfig {
            min_ttl: Duration::from_secs(min_ttl),
            max_ttl: Duration::from_secs(max_ttl),
            nameservers: vec![self.addr],
            // Long enough that a slow answer on a busy machine is not asked
            // again (which would skew the query counts).
            timeout: Duration::from_secs(2),
        }
    }
}

/// A UDP socket and a TCP listener on one port: `addr`'s, or any free one
/// when it is 0 (retrying if its TCP twin is taken).
pub async fn bind_pair(addr: SocketAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair near {addr}");
}
