//! Service discovery: the resolver every task with an overlay network finds at 127.0.0.11.
//!
//! One resolver per task. Its UDP and TCP sockets are created on a thread that entered the task's
//! network namespace (a socket stays in the namespace it was created in), then handed to tokio:
//! the server runs on the agent's runtime, so the queries it forwards leave from the agent's own
//! namespace and reach the host's resolvers (127.0.0.53 included).
//!
//! What it answers comes from [`records_for`], a pure function of the networks the task is on;
//! [`ResolverHandle::update`] swaps the table at once, so a task starting or stopping elsewhere is
//! visible to the next query. Names it does not know are forwarded upstream, as Docker does.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use rand::seq::SliceRandom;
use shoal_proto::v1::NetworkView;
use shoal_proto::wire::EndpointMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::netns::{self, NetnsError};
use super::parse_ip;

/// Where a task finds its resolver (Docker's embedded DNS address).
pub const RESOLVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);

/// How long one upstream gets to answer a forwarded query before the next one is tried.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// TTL of the answers for service names: 0, so nothing caches an address that may go away.
const TTL: u32 = 0;

/// How long an idle TCP client connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// Errors of starting a resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The task's namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The loopback interface of the task namespace could not be brought up.
    #[error("bringing lo up in {netns}: {source}")]
    LoopbackUp {
        /// The task namespace.
        netns: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A socket could not be bound to 127.0.0.11:53 inside the task namespace.
    #[error("binding {proto} {addr} in {netns}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddrV4,
        /// The task namespace.
        netns: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What the resolver of one task answers by itself: lower-case names without the trailing dot,
/// each with its addresses (possibly none: the name is ours, it just has no running task).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    names: HashMap<String, Vec<Ipv4Addr>>,
}

impl Records {
    /// The addresses of `name` (any case, trailing dot or not), or `None` when the name is not
    /// ours and goes upstream.
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.names.get(&normalize(name)).map(Vec::as_slice)
    }

    /// How many names are known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Records `name` → `addrs` unless an earlier network or form already claimed the name.
    fn claim(&mut self, name: &str, addrs: &[Ipv4Addr]) {
        let name = normalize(name);
        if !name.is_empty() {
            self.names.entry(name).or_insert_with(|| addrs.to_vec());
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The names a task on `task_networks` (in `Task.networks` order) can resolve by itself.
///
/// Per service of each network: `NAME`, `NAME.NETWORK` and its aliases (bare and `.NETWORK`) answer
/// the VIP in vip mode or the running task addresses in dnsrr mode; `tasks.NAME` and
/// `tasks.NAME.NETWORK` answer the running task addresses. A bare name on several networks
/// resolves on the first one (Docker's order); a service name wins over an alias. The ingress
/// network carries no discovery, as in swarm mode: a service is visible only through a network it
/// shares with the task.
pub fn records_for(task_networks: &[NetworkView]) -> Records {
    let mut records = Records::default();
    for view in task_networks {
        let Some(network) = view.network.as_ref() else {
            continue;
        };
        let spec = network.spec.as_ref();
        if spec.is_some_and(|s| s.ingress) {
            continue;
        }
        let net_name = spec.map(|s| s.name.as_str()).unwrap_or_default();

        // (names, addresses) per service, service names before aliases.
        let mut primary: Vec<(String, Vec<Ipv4Addr>)> = Vec::new();
        let mut aliases: Vec<(String, Vec<Ipv4Addr>)> = Vec::new();
        for service in &view.services {
            if service.name.is_empty() {
                continue;
            }
            let mut tasks: Vec<Ipv4Addr> = view
                .endpoints
                .iter()
                .filter(|e| e.running && !e.task_id.is_empty())
                .filter(|e| e.service_id == service.service_id)
                .filter_map(|e| parse_ip(&e.addr))
                .collect();
            tasks.sort();
            tasks.dedup();
            let answer = if service.mode_kind() == Ok(EndpointMode::Dnsrr) {
                tasks.clone()
            } else {
                parse_ip(&service.vip).into_iter().collect()
            };
            primary.push((service.name.clone(), answer.clone()));
            primary.push((format!("tasks.{}", service.name), tasks));
            for alias in &service.aliases {
                aliases.push((alias.clone(), answer.clone()));
            }
        }
        for (name, addrs) in primary.iter().chain(&aliases) {
            records.claim(name, addrs);
            if !net_name.is_empty() {
                records.claim(&format!("{name}.{net_name}"), addrs);
            }
        }
    }
    records
}

/// The host's resolvers, from `/etc/resolv.conf` of the agent (port 53 each). Loopback ones are
/// kept: forwarding happens from the agent's own namespace.
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

/// The `nameserver` lines of a resolv.conf, as socket addresses on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                // IPv6 zone ids (fe80::1%eth0) do not parse; such a server is skipped.
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Starts resolvers in task namespaces.
#[derive(Debug)]
pub struct Resolver;

impl Resolver {
    /// Serves DNS on 127.0.0.11:53 (UDP and TCP) inside the namespace at `netns` for `task_id`,
    /// answering nothing by itself until [`ResolverHandle::update`] and forwarding the rest to
    /// `upstreams` in order. Must be called within the agent's tokio runtime.
    pub async fn start(
        task_id: &str,
        netns: &Path,
        upstreams: Vec<SocketAddr>,
    ) -> Result<ResolverHandle, DnsError> {
        Resolver::start_with_timeout(task_id, netns, upstreams, DEFAULT_FORWARD_TIMEOUT).await
    }

    /// [`Resolver::start`] with the time each upstream gets to answer.
    pub async fn start_with_timeout(
        task_id: &str,
        netns: &Path,
        upstreams: Vec<SocketAddr>,
        forward_timeout: Duration,
    ) -> Result<ResolverHandle, DnsError> {
        let ns = netns.to_path_buf();
        let (udp, tcp) =
            netns::on_thread(Some(ns.clone()), "dns-bind", move || bind_in(&ns)).await??;
        // Registering with tokio's reactor needs no namespace: the sockets already have theirs.
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(|source| DnsError::Bind {
            proto: "udp",
            addr: RESOLVER_ADDR,
            netns: netns.to_path_buf(),
            source,
        })?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| DnsError::Bind {
            proto: "tcp",
            addr: RESOLVER_ADDR,
            netns: netns.to_path_buf(),
            source,
        })?;

        let records = Arc::new(RwLock::new(Arc::new(Records::default())));
        let handler = Handler {
            task_id: task_id.to_string(),
            records: records.clone(),
            upstreams: upstreams.clone(),
            timeout: forward_timeout,
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64);
        let (stop, stopped) = oneshot::channel::<()>();
        let task_id_owned = task_id.to_string();
        let task = tokio::spawn(async move {
            // A dropped handle stops the server too.
            let _ = stopped.await;
            if let Err(error) = server.shutdown_gracefully().await {
                tracing::warn!(task_id = %task_id_owned, %error, "DNS server ended with an error");
            }
        });
        tracing::info!(task_id, netns = %netns.display(), ?upstreams, "DNS resolver started on 127.0.0.11:53");
        Ok(ResolverHandle {
            task_id: task_id.to_string(),
            records,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// On a thread inside the task namespace: lo up, then the two sockets, non-blocking for tokio.
fn bind_in(ns: &Path) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    loopback_up().map_err(|source| DnsError::LoopbackUp {
        netns: ns.to_path_buf(),
        source,
    })?;
    let bind_err = |proto: &'static str| {
        let netns = ns.to_path_buf();
        move |source| DnsError::Bind {
            proto,
            addr: RESOLVER_ADDR,
            netns,
            source,
        }
    };
    let udp = std::net::UdpSocket::bind(RESOLVER_ADDR).map_err(bind_err("udp"))?;
    udp.set_nonblocking(true).map_err(bind_err("udp"))?;
    let tcp = std::net::TcpListener::bind(RESOLVER_ADDR).map_err(bind_err("tcp"))?;
    tcp.set_nonblocking(true).map_err(bind_err("tcp"))?;
    Ok((udp, tcp))
}

/// Brings the calling thread's `lo` up (127.0.0.11 is only bindable then). Written here with two
/// ioctls rather than borrowed from `link`, to keep this module free of the netlink plumbing.
fn loopback_up() -> std::io::Result<()> {
    // Any socket serves as the ioctl handle; binding to the wildcard works with lo down.
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: ifreq is a plain C struct (names, integers, a union of them): all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags of the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::IFF_UP as libc::c_short;
    if flags & up != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: SIOCSIFFLAGS reads the name and flags of the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A running resolver: swap its records with `update`, end it with `stop` (or by dropping it).
#[derive(Debug)]
pub struct ResolverHandle {
    task_id: String,
    records: Arc<RwLock<Arc<Records>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ResolverHandle {
    /// The task this resolver serves.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Replaces what the resolver answers; the next query sees it.
    pub fn update(&self, records: Records) {
        let count = records.len();
        let mut slot = self.records.write().unwrap_or_else(|p| p.into_inner());
        if **slot != records {
            *slot = Arc::new(records);
            tracing::debug!(task_id = %self.task_id, names = count, "DNS records updated");
        }
    }

    /// What the resolver answers now.
    pub fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops serving and closes both sockets (they are gone when this returns).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::warn!(task_id = %self.task_id, %error, "DNS server task failed");
            }
        }
        tracing::info!(task_id = %self.task_id, "DNS resolver stopped");
    }
}

impl Drop for ResolverHandle {
    fn drop(&mut self) {
        // Dropping the sender wakes the server task, which shuts the server down on its own.
        self.stop.take();
    }
}

/// The per-task request handler: our names from the records, the rest upstream.
struct Handler {
    task_id: String,
    records: Arc<RwLock<Arc<Records>>>,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let builder = || {
            let mut b = MessageResponseBuilder::new(&request.queries, None);
            if let Some(edns) = edns.as_ref() {
                b.edns(edns);
            }
            b
        };
        let code = |code: ResponseCode| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            metadata.recursion_available = true;
            metadata
        };

        let query = match request.queries.queries() {
            [query] if request.metadata.op_code == OpCode::Query => query,
            [_] => {
                let m = code(ResponseCode::NotImp);
                return send(&mut response, builder().build_no_records(m)).await;
            }
            _ => {
                let m = code(ResponseCode::FormErr);
                return send(&mut response, builder().build_no_records(m)).await;
            }
        };

        let name = query.name().to_string();
        let ours = (query.query_class() == DNSClass::IN)
            .then(|| {
                let records = self
                    .records
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                records.lookup(&name).map(<[Ipv4Addr]>::to_vec)
            })
            .flatten();

        if let Some(mut addrs) = ours {
            // Our name: A answers, NODATA for any other type (as Docker does for AAAA).
            addrs.shuffle(&mut rand::rng());
            let owner = Name::from(query.name().clone());
            let answers: Vec<Record> = match query.query_type() {
                RecordType::A | RecordType::ANY => addrs
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
                    .collect(),
                _ => Vec::new(),
            };
            let mut m = code(ResponseCode::NoError);
            m.authoritative = true;
            tracing::trace!(task_id = %self.task_id, %name, answers = answers.len(), "DNS answered");
            let resp = builder().build(m, answers.iter(), [], [], []);
            return send(&mut response, resp).await;
        }

        match forward(&self.upstreams, request.as_slice(), self.timeout).await {
            Some(upstream) => {
                let mut m = upstream.metadata;
                m.id = request.metadata.id;
                let additionals: Vec<&Record> = upstream
                    .additionals
                    .iter()
                    .filter(|r| r.record_type() != RecordType::OPT)
                    .collect();
                let resp = builder().build(
                    m,
                    upstream.answers.iter(),
                    upstream.authorities.iter(),
                    [],
                    additionals,
                );
                send(&mut response, resp).await
            }
            None => {
                tracing::debug!(task_id = %self.task_id, %name, "no upstream answered; SERVFAIL");
                let m = code(ResponseCode::ServFail);
                send(&mut response, builder().build_no_records(m)).await
            }
        }
    }
}

/// Sends `resp`; a client gone away is only worth a debug line.
async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    resp: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let mut fallback = *resp.metadata();
    match handle.send_response(resp).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "sending a DNS response");
            fallback.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: fallback,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// Sends the raw query to each upstream in turn (UDP, then TCP when the answer was truncated) and
/// returns the first answer, or `None` when none came within `timeout` each.
async fn forward(upstreams: &[SocketAddr], query: &[u8], timeout: Duration) -> Option<Message> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    for upstream in upstreams {
        let answer = match tokio::time::timeout(timeout, forward_udp(*upstream, query, id)).await {
            Ok(Ok(m)) if m.metadata.truncation => {
                tokio::time::timeout(timeout, forward_tcp(*upstream, query, id)).await
            }
            other => other,
        };
        match answer {
            Ok(Ok(message)) => return Some(message),
            Ok(Err(error)) => tracing::debug!(%upstream, %error, "forwarding a DNS query"),
            Err(_) => tracing::debug!(%upstream, "forwarding a DNS query: timed out"),
        }
    }
    None
}

/// One query over UDP from a fresh socket (a random source port) connected to `upstream`.
async fn forward_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray datagram with another id is dropped, not taken for the answer.
        if let Ok(message) = Message::from_vec(&buf[..n]) {
            if message.metadata.id == id {
                return Ok(message);
            }
        }
    }
}

/// One query over TCP (two-byte length prefix each way).
async fn forward_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let answer_len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(answer_len)];
    stream.read_exact(&mut buf).await?;
    let message = Message::from_vec(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    if message.metadata.id != id {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer for another query",
        ));
    }
    Ok(message)
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
