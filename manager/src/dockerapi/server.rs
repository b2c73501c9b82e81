//! The listeners: TLS on `--docker-api-addr` (client certificates checked against the cluster's
//! admin credentials, as the gRPC API does) and the unix socket `--docker-api-socket` (0660,
//! root); `/vX.Y` prefixes, docker's response headers.
//!
//! Each connection is served by hyper's HTTP/1.1 server over the router of [`super::router`]
//! wrapped by [`app`]; bodies stream as handlers produce them (`logs --follow`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::v1::NodeRole;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::cert::{self, CertError, DockerTls};
use super::{ApiError, ApiVersion, MAX_API_VERSION, MIN_API_VERSION};
use crate::auth::{caller_of, Caller};
use crate::serve::stopped;
use crate::store::Store;

/// How long open connections get to finish their responses after shutdown.
const DRAIN: Duration = Duration::from_secs(2);

/// Errors setting up the listeners.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TCP address cannot be bound.
    #[error("--docker-api-addr {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The unix socket cannot be made.
    #[error("--docker-api-socket {path}: {reason}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listener's certificate.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Where the Docker API is served (`--docker-api-addr`, `--docker-api-socket`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerApiOptions {
    /// TLS address.
    pub addr: Option<SocketAddr>,
    /// Unix socket path.
    pub socket: Option<PathBuf>,
}

impl DockerApiOptions {
    /// Whether anything is to be served.
    pub fn any(&self) -> bool {
        self.addr.is_some() || self.socket.is_some()
    }
}

/// The listeners, bound (so a bad address fails the manager's start) but not serving yet.
#[derive(Debug)]
pub struct Bound {
    tcp: Option<(TcpListener, SocketAddr)>,
    unix: Option<(UnixListener, PathBuf)>,
}

impl Bound {
    /// The bound TLS address (with the port chosen when `:0` was asked).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|(_, a)| *a)
    }
}

/// Binds what `opts` asks for.
pub async fn bind(opts: &DockerApiOptions) -> Result<Bound, ServeError> {
    let tcp = match opts.addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            let local = l
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            Some((l, local))
        }
        None => None,
    };
    let unix = match &opts.socket {
        Some(path) => Some((bind_unix(path)?, path.clone())),
        None => None,
    };
    Ok(Bound { tcp, unix })
}

/// Binds the unix socket at `path`: a stale socket left by a previous run is replaced (any other
/// kind of file is not touched), and the socket is made 0660 (the owner is this process's user,
/// root in production: its permissions are the authentication).
fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |reason: String| ServeError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| err(format!("removing the stale socket: {e}")))?,
        Ok(_) => return Err(err("exists and is not a socket".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(format!("chmod 0660: {e}")))?;
    Ok(listener)
}

/// What the TLS listener needs to issue its certificate.
pub struct TlsSetup {
    /// The store (the cluster's CA; callers' credentials).
    pub store: Store,
    /// This manager's TLS material: the CAs trusted, ticks at renewal and rotation.
    pub live: Arc<LiveTls>,
    /// This manager's node id (the certificate's subject).
    pub node_id: String,
    /// This manager's advertised address (a SAN of the certificate).
    pub advertise: String,
}

/// Serves `bound` until `shutdown` turns true, with the router `apps` holds at each new
/// connection (already wrapped by [`app`]; replaced when the manager's own identity is renewed).
/// The unix socket is removed on the way out.
pub async fn run(
    bound: Bound,
    setup: TlsSetup,
    apps: watch::Receiver<Router>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let mut tasks = Vec::new();
    if let Some((listener, path)) = bound.unix {
        info!(socket = %path.display(), "docker API serving");
        tasks.push(tokio::spawn(serve_unix(
            listener,
            path,
            apps.clone(),
            shutdown.clone(),
        )));
    }
    if let Some((listener, addr)) = bound.tcp {
        let mut stop = shutdown.clone();
        let Some(cluster) = cert::wait_for_cluster(&setup.store, &mut stop).await else {
            return Ok(());
        };
        let sans = cert::sans(addr, &setup.advertise, &cert::host_addresses());
        let tls = DockerTls::new(&cluster, &setup.live.roots_pem(), &setup.node_id, sans)?;
        tokio::spawn(cert::keep_current(
            tls.clone(),
            setup.store.clone(),
            setup.live.clone(),
            shutdown.clone(),
        ));
        let config = Arc::new(tls.server_config(setup.live.client_verifier(true))?);
        info!(%addr, "docker API serving");
        tasks.push(tokio::spawn(serve_tls(
            listener,
            config,
            setup.store,
            apps,
            shutdown,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Accepts TLS connections until `shutdown`; each is served with the caller's credentials
/// checked at every request.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    store: Store,
    apps: watch::Receiver<Router>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut incoming = crate::serve::tls_incoming(listener, config);
    loop {
        let tls = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(tls)) => tls,
                Some(Err(e)) => { debug!(error = %e, "docker API accept failed"); continue; }
                None => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let fingerprint = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| shoal_proto::pki::fingerprint_der(c.as_ref()));
        let app = apps.borrow().clone();
        let store = store.clone();
        let svc = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            let allowed = authorize(&store, fingerprint.as_deref());
            async move {
                match allowed {
                    Ok(()) => app.oneshot(req).await,
                    Err(e) => Ok::<_, Infallible>(with_headers(e.into_response())),
                }
            }
        });
        tokio::spawn(serve_connection(tls, svc, shutdown.clone()));
    }
}

/// Accepts unix socket connections until `shutdown`, then removes the socket.
async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    apps: watch::Receiver<Router>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    debug!(error = %e, "docker API socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let app = apps.borrow().clone();
        tokio::spawn(serve_connection(stream, app, shutdown.clone()));
    }
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(socket = %path.display(), error = %e, "could not remove the docker API socket");
    }
}

/// Serves one HTTP/1.1 connection until it ends, or until `shutdown` plus [`DRAIN`].
async fn serve_connection<I, S>(io: I, svc: S, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "docker API connection ended");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}

/// Admits an admin certificate, or a manager's (as the gRPC API's `require_admin` does); a
/// node's or an unknown certificate is refused with a 403 saying why.
fn authorize(store: &Store, fingerprint: Option<&str>) -> Result<(), ApiError> {
    let fp = fingerprint.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no client certificate: use the admin certificate of admin.conf",
        )
    })?;
    match store.read(|s| caller_of(s, fp)) {
        Ok(Caller::Admin)
        | Ok(Caller::Node {
            role: NodeRole::RoleManager,
            ..
        }) => Ok(()),
        Ok(Caller::Node { .. }) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the Docker API needs the admin certificate (admin.conf): a node's certificate is not enough",
        )),
        Err(status) => Err(ApiError::new(StatusCode::FORBIDDEN, status.message())),
    }
}

/// `router` behind the `/vX.Y` prefix handling and docker's response headers: what the
/// listeners serve.
pub fn app(router: Router) -> Router {
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn(versioned))
}

/// Splits `/v1.41/services` into the version and the unversioned path; `None` for a path
/// without a version prefix.
fn split_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (version, tail) = rest.split_at(end);
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Some((version, tail))
}

/// The request's API version, checked against the window served; the request's path loses its
/// prefix.
fn take_version(req: &mut Request) -> Result<ApiVersion, ApiError> {
    let Some((raw, tail)) = split_version(req.uri().path()) else {
        return Ok(MAX_API_VERSION);
    };
    let version = ApiVersion::parse(raw)
        .ok_or_else(|| ApiError::bad_request(format!("invalid API version {raw:?}")))?;
    if version > MAX_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {MAX_API_VERSION}"
        )));
    }
    if version < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    let path = if tail.is_empty() { "/" } else { tail };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ApiError::bad_request("invalid request path"))?,
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ApiError::bad_request("invalid request path"))?;
    Ok(version)
}

async fn versioned(mut req: Request, next: Next) -> Response {
    let resp = match take_version(&mut req) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    with_headers(resp)
}

/// Adds the headers moby sets on every response.
fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&MAX_API_VERSION.to_string()) {
        h.insert("api-version", v);
    }
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert("swarm", HeaderValue::from_static("active/manager"));
    h.insert(
        "server",
        HeaderValue::from_static(concat!("Shoal/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerapi::{router, Ctx};
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::routing::get;
    use http_body_util::BodyExt;

    /// A Ctx whose clients point at a channel never connected (the routes tested make no call).
    fn ctx() -> crate::dockerapi::State {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        Arc::new(Ctx {
            control: shoal_proto::v1::control_client::ControlClient::new(channel.clone()),
            cluster: shoal_proto::v1::cluster_admin_client::ClusterAdminClient::new(channel),
            node_id: "n1".into(),
            advertise_addr: "127.0.0.1:4242".into(),
            leadership: watch::channel(true).1,
        })
    }

    async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, Response) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        (resp.status(), resp)
    }

    async fn body(resp: Response) -> String {
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn only_admin_and_manager_certificates_are_served() {
        use crate::test_support::{apply, counted_store, cred, manager};
        use shoal_proto::v1::store_action::Action;
        use shoal_proto::v1::Cluster;
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = counted_store(dir.path());
        let worker = shoal_proto::v1::Node {
            id: "w1".into(),
            cert_fingerprint: "fp-worker".into(),
            ..Default::default()
        };
        apply(
            &store,
            1,
            vec![
                Action::PutCluster(Cluster {
                    id: "c".into(),
                    admin_credentials: vec![cred("fp-admin", "init")],
                    ..Default::default()
                }),
                Action::PutNode(manager("m1", "fp-manager", 1)),
                Action::PutNode(worker),
            ],
        );
        assert_eq!(authorize(&store, Some("fp-admin")), Ok(()));
        assert_eq!(authorize(&store, Some("fp-manager")), Ok(()));
        let e = authorize(&store, Some("fp-worker")).expect_err("a worker");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = authorize(&store, Some("fp-revoked")).expect_err("unknown");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = authorize(&store, None).expect_err("no certificate");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn version_prefixes_are_recognised() {
        assert_eq!(
            split_version("/v1.41/services"),
            Some(("1.41", "/services"))
        );
        assert_eq!(split_version("/v1.45"), Some(("1.45", "")));
        assert_eq!(split_version("/volumes"), None);
        assert_eq!(split_version("/version"), None);
        assert_eq!(split_version("/services"), None);
    }

    #[tokio::test]
    async fn the_prefix_is_stripped_and_the_version_passed_on() {
        let inner = Router::new().route(
            "/echo",
            get(|v: Option<Extension<ApiVersion>>, uri: Uri| async move {
                let v = v.map(|Extension(v)| v).unwrap_or(ApiVersion(0, 0));
                format!("{v} {uri}")
            }),
        );
        let app = app(inner);
        let (st, resp) = call(&app, "GET", "/v1.41/echo?a=1").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body(resp).await, "1.41 /echo?a=1");
        let (_, resp) = call(&app, "GET", "/echo").await;
        assert_eq!(body(resp).await, "1.45 /echo");
    }

    #[tokio::test]
    async fn versions_outside_the_window_are_refused_with_dockers_words() {
        let app = app(router(ctx()));
        let (st, resp) = call(&app, "GET", "/v1.99/version").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(header(&resp, "api-version"), "1.45");
        assert_eq!(
            body(resp).await,
            r#"{"message":"client version 1.99 is too new. Maximum supported API version is 1.45"}"#
        );
        let (st, resp) = call(&app, "GET", "/v1.12/version").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(
            body(resp).await,
            r#"{"message":"client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"}"#
        );
    }

    #[tokio::test]
    async fn ping_and_version_answer_with_dockers_headers() {
        let app = app(router(ctx()));
        let (st, resp) = call(&app, "HEAD", "/_ping").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(header(&resp, "api-version"), "1.45");
        assert_eq!(header(&resp, "ostype"), "linux");
        assert_eq!(header(&resp, "docker-experimental"), "false");
        assert_eq!(header(&resp, "swarm"), "active/manager");
        assert!(header(&resp, "server").starts_with("Shoal/"));
        assert_eq!(header(&resp, "content-type"), "text/plain; charset=utf-8");
        assert_eq!(header(&resp, "content-length"), "0");
        assert_eq!(
            header(&resp, "cache-control"),
            "no-cache, no-store, must-revalidate"
        );
        let (st, resp) = call(&app, "GET", "/v1.41/_ping").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(header(&resp, "pragma"), "no-cache");
        assert_eq!(body(resp).await, "OK");
        let (st, resp) = call(&app, "GET", "/v1.24/version").await;
        assert_eq!(st, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body(resp).await).expect("json");
        assert_eq!(v["ApiVersion"], "1.45");
        assert_eq!(v["Platform"]["Name"], "Shoal");
        // Unknown paths get docker's JSON 404, with the headers too.
        let (st, resp) = call(&app, "GET", "/v1.41/nothing/here").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(header(&resp, "ostype"), "linux");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let first = bind_unix(&path).expect("bind");
            drop(first);
            // The file stays behind after the listener is dropped: a stale socket.
            assert!(path.exists());
            let _second = bind_unix(&path).expect("rebind over the stale socket");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o660);
            let file = dir.path().join("plain");
            std::fs::write(&file, "x").expect("write");
            assert!(matches!(bind_unix(&file), Err(ServeError::Socket { .. })));
            assert!(file.exists());
        });
    }

    /// A free TCP port on the loopback address (the manager advertises what it listens on, so
    /// port 0 would not do).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    }

    fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("ca")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("cert"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Sends `GET /_ping` over `io` and returns what came back (empty when the server closed
    /// the connection or the TLS layer failed).
    async fn ping_over<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = b"GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
        if io.write_all(req).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let _ = io.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A real manager (`init`) serving the Docker API on TLS and a unix socket: the admin
    /// certificate of its admin.conf gets `/_ping`, a client without a certificate does not,
    /// the socket needs none, and it is removed at shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manager_serves_the_docker_api_to_its_admin_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("manager");
        let socket = dir.path().join("docker.sock");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let docker: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = crate::manager::ManagerOptions {
            data_dir: data_dir.clone(),
            listen_addr: grpc,
            advertise_addr: Some(grpc.to_string()),
            heartbeat_period: Duration::from_secs(5),
            snapshot_interval: 10_000,
            force_new_cluster: false,
            cert_expiry: None,
            docker_api: DockerApiOptions {
                addr: Some(docker),
                socket: Some(socket.clone()),
            },
        };
        let manager = tokio::spawn(crate::manager::init(opts, async move {
            let _ = stop_rx.await;
        }));
        // Ready once a TLS connection with the admin certificate answers.
        let admin_conf = data_dir.join("admin.conf");
        let mut answer = String::new();
        for _ in 0..200 {
            if let Ok(conf) = shoal_proto::config::AdminConfig::load(&admin_conf) {
                let config = client_config(&conf.ca_cert, Some((&conf.cert, &conf.key)));
                if let Ok(tcp) = tokio::net::TcpStream::connect(docker).await {
                    let name = rustls::pki_types::ServerName::IpAddress(docker.ip().into());
                    if let Ok(tls) = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                    {
                        answer = ping_over(tls).await;
                        if !answer.is_empty() {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("Api-Version: 1.45") || answer.contains("api-version: 1.45"),
            "{answer}"
        );
        assert!(answer.ends_with("OK"), "{answer}");
        // The manager's data dir recorded the settings for `run`.
        let state: crate::manager::ManagerState = serde_json::from_str(
            &std::fs::read_to_string(shoal_proto::manager_dir::state_path(&data_dir))
                .expect("manager.json"),
        )
        .expect("state");
        assert_eq!(state.docker_api_addr, Some(docker.to_string()));
        assert_eq!(state.docker_api_socket, Some(socket.clone()));

        // No client certificate: the handshake or the first read fails, nothing is served.
        let conf = shoal_proto::config::AdminConfig::load(&admin_conf).expect("admin.conf");
        let tcp = tokio::net::TcpStream::connect(docker)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::IpAddress(docker.ip().into());
        let refused = match tokio_rustls::TlsConnector::from(client_config(&conf.ca_cert, None))
            .connect(name, tcp)
            .await
        {
            Ok(tls) => ping_over(tls).await,
            Err(_) => String::new(),
        };
        assert!(refused.is_empty(), "{refused}");

        // The unix socket needs no certificate.
        let unix = tokio::net::UnixStream::connect(&socket)
            .await
            .expect("socket");
        let answer = ping_over(unix).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(20), manager)
            .await
            .expect("the manager stops")
            .expect("join")
            .expect("manager ran");
        assert!(!socket.exists(), "the socket is removed at shutdown");
    }
}
