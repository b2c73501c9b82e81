//! Finding admin.conf and opening the mutual-TLS connection to a manager.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use shoal_proto::config::{AdminConfig, NOTHING_PROPOSED_KEY};
use shoal_proto::limits;
use shoal_proto::pki::{self, Identity, Trust};
use shoal_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

/// The gRPC client of the manager's Control service.
pub type Control = ControlClient<ManagerChannel>;

/// A live connection: the client and the manager address that answered.
pub struct Connection {
    /// The Control API client.
    pub control: Control,
    /// The manager address (IP:PORT) the connection went to first.
    pub manager_addr: String,
    /// The channel itself, for the other services the manager serves.
    pub channel: ManagerChannel,
}

/// A gRPC channel to the managers of `admin.conf` that fails over between them: a call goes to
/// the manager that answered last; when that one cannot serve it (unreachable, or "no quorum")
/// the call is sent to the next manager that connects, if that cannot apply it twice:
/// - reads (`List*`, `Get*`, `ClusterStatus`) are always sent again;
/// - writes only when the connection was refused (the call never left) or the manager said it
///   proposed nothing ([`NOTHING_PROPOSED_KEY`]: its read barrier found no quorum). After any
///   other failure a write may have been applied, so the error is reported as it is.
#[derive(Clone)]
pub struct ManagerChannel {
    shared: Arc<Shared>,
}

struct Shared {
    addrs: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    /// The manager in use: its index in `addrs` and its channel.
    current: std::sync::Mutex<(usize, Channel)>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ManagerChannel {
    fn new(
        addrs: Vec<String>,
        tls: Arc<rustls::ClientConfig>,
        at: usize,
        channel: Channel,
    ) -> Self {
        ManagerChannel {
            shared: Arc::new(Shared {
                addrs,
                tls,
                current: std::sync::Mutex::new((at, channel)),
            }),
        }
    }

    fn current(&self) -> (usize, Channel) {
        self.shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Connects to the manager after `after` that answers; `None` once every other was tried.
    async fn next(&self, after: usize, tried: &mut usize) -> Option<(usize, Channel)> {
        let n = self.shared.addrs.len();
        let mut at = after;
        while *tried < n {
            at = (at + 1) % n;
            *tried += 1;
            if let Ok(channel) = pki::connect(&self.shared.addrs[at], self.shared.tls.clone()).await
            {
                *self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (at, channel.clone());
                return Some((at, channel));
            }
        }
        None
    }
}

/// Whether a gRPC method only reads (sending it to another manager is always safe).
pub fn is_read(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    method.starts_with("List")
        || method.starts_with("Get")
        || method == "ClusterStatus"
        || method == "ServiceLogs"
}

/// Whether an answer (its headers: a failed unary call carries its status there) says another
/// manager should be asked: "unavailable" (no quorum, not reachable, stopping), and for a write
/// only with the manager's word that it proposed nothing.
pub fn should_fail_over(headers: &http::HeaderMap, read: bool) -> bool {
    let unavailable = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"14");
    unavailable && (read || headers.contains_key(NOTHING_PROPOSED_KEY))
}

/// Whether a transport error certainly happened before the call left (connection refused).
fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

impl tower::Service<http::Request<tonic::body::Body>> for ManagerChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each call readies the channel it picks.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let this = self.clone();
        Box::pin(async move {
            let read = is_read(req.uri().path());
            let (parts, body) = req.into_parts();
            // Requests are unary here: keep the body to send it again.
            let body: bytes::Bytes = body.collect().await?.to_bytes();
            let (mut at, mut channel) = this.current();
            let mut tried = 1;
            loop {
                let attempt = http::Request::from_parts(
                    parts.clone(),
                    tonic::body::Body::new(http_body_util::Full::new(body.clone())),
                );
                let result = channel.clone().oneshot(attempt).await;
                let again = match &result {
                    Ok(resp) => should_fail_over(resp.headers(), read),
                    Err(e) => read || never_sent(e),
                };
                if !again {
                    return result.map_err(Into::into);
                }
                match this.next(at, &mut tried).await {
                    Some((next_at, next)) => {
                        tracing::debug!(manager = %this.shared.addrs[next_at], "failing over");
                        at = next_at;
                        channel = next;
                    }
                    None => return result.map_err(Into::into),
                }
            }
        })
    }
}

/// Where admin.conf is looked for when neither --config nor SHOAL_CONFIG is given, in order.
pub fn default_config_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(home) = home {
        paths.push(home.join(".shoal").join("admin.conf"));
    }
    paths.push(PathBuf::from("/var/lib/shoal/manager/admin.conf"));
    paths
}

/// The admin.conf to use: the explicit one, or the first default that exists.
pub fn find_config(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = default_config_paths(home.as_deref());
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            anyhow!(
                "no admin.conf found (tried {}): pass --config FILE or set SHOAL_CONFIG to the admin.conf that `shoal-manager init` wrote in its data dir",
                tried.join(", ")
            )
        })
}

/// The admin.conf found (see [`find_config`]), where it was, and the TLS client setup its
/// certificates make.
pub fn load_admin(
    explicit_config: Option<&Path>,
) -> Result<(PathBuf, AdminConfig, Arc<rustls::ClientConfig>)> {
    let path = find_config(explicit_config)?;
    let cfg = AdminConfig::load(&path)?;
    // A configuration without a client certificate still connects (the managers then refuse
    // every call with a clear "no client certificate" error instead of a TLS failure).
    let identity = (!cfg.cert.trim().is_empty()).then(|| Identity {
        cert_pem: cfg.cert.clone(),
        key_pem: cfg.key.clone(),
    });
    let tls = pki::client_config(&Trust::Ca(cfg.ca_cert.clone()), identity.as_ref())
        .with_context(|| format!("{}: unusable certificates", path.display()))?;
    Ok((path, cfg, Arc::new(tls)))
}

/// Loads admin.conf and connects to the first manager that answers.
pub async fn connect(explicit_config: Option<&Path>) -> Result<Connection> {
    let (path, cfg, tls) = load_admin(explicit_config)?;
    if cfg.managers.is_empty() {
        return Err(anyhow!("{}: lists no manager address", path.display()));
    }
    // Tried one by one (rather than pki::connect_any) to know which manager answered, and to
    // report every address that failed.
    let mut failures = Vec::new();
    for (at, addr) in cfg.managers.iter().enumerate() {
        match pki::connect(addr, tls.clone()).await {
            Ok(channel) => {
                let channel = ManagerChannel::new(cfg.managers.clone(), tls, at, channel);
                return Ok(Connection {
                    control: ControlClient::new(channel.clone())
                        .max_encoding_message_size(limits::MAX_CONTROL_REQUEST_BYTES)
                        .max_decoding_message_size(limits::MAX_CONTROL_RESPONSE_BYTES),
                    manager_addr: addr.clone(),
                    channel,
                });
            }
            Err(e) => failures.push(crate::error_chain(&anyhow::Error::new(e))),
        }
    }
    Err(anyhow!("no manager reachable: {}", failures.join("; ")))
}

/// A `ClusterAdmin` client on `channel`, with the control API's message limits.
pub fn cluster_admin(
    channel: ManagerChannel,
) -> shoal_proto::v1::cluster_admin_client::ClusterAdminClient<ManagerChannel> {
    shoal_proto::v1::cluster_admin_client::ClusterAdminClient::new(channel)
        .max_encoding_message_size(limits::MAX_CONTROL_REQUEST_BYTES)
        .max_decoding_message_size(limits::MAX_CONTROL_RESPONSE_BYTES)
}

/// Turns a gRPC status into an error whose text is the manager's message (which names the field).
pub fn status(s: tonic::Status) -> anyhow::Error {
    let msg = s.message().trim();
    if msg.is_empty() {
        anyhow!("{}", s.code().description())
    } else {
        anyhow!("{msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_in_order() {
        let p = default_config_paths(Some(Path::new("/home/a")));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/home/a/.shoal/admin.conf"),
                PathBuf::from("/var/lib/shoal/manager/admin.conf")
            ]
        );
        assert_eq!(default_config_paths(None).len(), 1);
    }

    #[test]
    fn explicit_config_wins() {
        let p = find_config(Some(Path::new("/x/admin.conf"))).expect("explicit");
        assert_eq!(p, PathBuf::from("/x/admin.conf"));
    }

    #[test]
    fn reads_are_told_from_writes() {
        assert!(is_read("/shoal.v1.Control/ListServices"));
        assert!(is_read("/shoal.v1.Control/GetNode"));
        assert!(is_read("/shoal.v1.ClusterAdmin/ClusterStatus"));
        assert!(!is_read("/shoal.v1.Control/CreateService"));
        assert!(!is_read("/shoal.v1.Control/JoinToken"), "it may rotate");
        assert!(!is_read("/shoal.v1.ClusterAdmin/DemoteManager"));
    }

    #[test]
    fn fail_over_only_when_safe() {
        let mut h = http::HeaderMap::new();
        // A success, or another error: stay.
        assert!(!should_fail_over(&h, true));
        h.insert("grpc-status", http::HeaderValue::from_static("6"));
        assert!(!should_fail_over(&h, true));
        // No quorum: a read goes elsewhere, a write only if nothing was proposed.
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert!(should_fail_over(&h, true));
        assert!(!should_fail_over(&h, false));
        h.insert(NOTHING_PROPOSED_KEY, http::HeaderValue::from_static("true"));
        assert!(should_fail_over(&h, false));
    }

    #[test]
    fn refused_connections_were_never_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_sent(&refused));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_sent(&reset));
    }

    #[test]
    fn status_message_is_the_error() {
        let e = status(tonic::Status::invalid_argument(
            "--replicas: must be 0 or more",
        ));
        assert_eq!(e.to_string(), "--replicas: must be 0 or more");
        let e = status(tonic::Status::unavailable(""));
        assert!(!e.to_string().is_empty());
    }
}
