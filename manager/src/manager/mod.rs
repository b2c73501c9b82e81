//! A manager process: its data dir and identity (`init`, `join`, `restart`), then [`run`] starts
//! its Raft node, gRPC server, and the leader-only components started and stopped with
//! leadership. Every entry point runs until the shutdown future it is given completes.

mod run;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::config::AdminConfig;
use shoal_proto::limits;
use shoal_proto::pki::{self, CertRole, Identity};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tracing::info;

pub use crate::dockerapi::server::DockerApiOptions;
pub use shoal_proto::manager_dir::{ManagerState, EXIT_REMOVED};

use crate::node_record::manager_node;
use crate::serve::shutdown_watch;
use run::run;

/// Errors starting or running a manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// A file in the data dir could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The data dir is not usable.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Certificates.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The store.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The data key, autolock, or the wait to be unlocked.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// Raft.
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::RaftError),
    /// The gRPC server.
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The Docker Engine API listeners.
    #[error("docker API: {0}")]
    DockerApi(#[from] crate::dockerapi::server::ServeError),
    /// Joining a cluster failed.
    #[error("join: {0}")]
    Join(String),
    /// A private file or directory of the data dir could not be written or secured.
    #[error(transparent)]
    Private(#[from] shoal_proto::secure_file::SecureFileError),
    /// Leadership was not reached in time.
    #[error("{0}")]
    NotReady(String),
    /// This manager was removed from the Raft group (`node demote`, `node rm`): it stops.
    #[error("this manager was removed from the cluster's managers (node demote or node rm); it stops. Remove its data dir: it can no longer rejoin")]
    Removed,
}

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address to bind.
    pub listen_addr: SocketAddr,
    /// Address to advertise (defaults to listen_addr).
    pub advertise_addr: Option<String>,
    /// Heartbeat period for agents.
    pub heartbeat_period: Duration,
    /// Raft log entries between snapshots.
    pub snapshot_interval: u64,
    /// Restart an existing data dir as a new single-manager cluster (disaster recovery).
    pub force_new_cluster: bool,
    /// `init --cert-expiry`: lifetime of the certificates the new cluster issues (default 90
    /// days); unused on restart and join.
    pub cert_expiry: Option<Duration>,
    /// Where to serve the Docker Engine API (`--docker-api-addr`, `--docker-api-socket`); what
    /// is not given here is taken from the data dir's recorded state.
    pub docker_api: DockerApiOptions,
}

/// True when `dir` exists and is not empty.
fn holds_anything(dir: &Path) -> Result<bool, ManagerError> {
    Ok(dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .next()
            .is_some())
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError + '_ {
    move |source| ManagerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file of the data dir owner-only (0600) from its first byte: everything a manager
/// keeps is private (its key, admin.conf, the peers it trusts), certificates included, so one
/// rule covers the whole directory.
pub(super) fn write_private(path: &Path, contents: &str) -> Result<(), ManagerError> {
    Ok(shoal_proto::secure_file::write_private(
        path,
        contents.as_bytes(),
    )?)
}

/// Makes the data dir owner-only (0700), creating it if missing, and takes group and other
/// access away from everything already in it (what an older version left open, the Raft and
/// store databases included: they hold the CA key and the join-token secrets).
pub fn secure_data_dir(data_dir: &Path) -> Result<(), ManagerError> {
    shoal_proto::secure_file::ensure_private_dir(data_dir)?;
    let changed = shoal_proto::secure_file::tighten_tree(data_dir)?;
    if changed > 0 {
        info!(data_dir = %data_dir.display(), changed, "data dir made private to its owner");
    }
    Ok(())
}

pub(super) fn read_file(path: &Path) -> Result<String, ManagerError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

pub use shoal_proto::host::{hostname, machine_resources};

/// The join instructions `init` prints.
fn print_join_help(node_id: &str, advertise: &str, worker: &str, manager: &str, admin: &Path) {
    println!("Cluster initialized: current node ({node_id}) is now a manager.\n");
    // The token goes into a root-only file (echo is a shell builtin: it never shows in ps), not
    // on the join command line, where every user of the host could read it.
    println!("To add a worker to this cluster, run the following commands:\n");
    println!("    (umask 077; echo {worker} > /etc/shoal/join-token)");
    println!("    shoal-agent join --data-dir /var/lib/shoal/agent --token-file /etc/shoal/join-token {advertise}\n");
    println!("To add a manager to this cluster, run the following commands:\n");
    println!("    (umask 077; echo {manager} > /etc/shoal/join-token)");
    println!(
        "    shoal-manager join --data-dir /var/lib/shoal/manager --listen-addr IP:4242 --token-file /etc/shoal/join-token {advertise}\n"
    );
    println!(
        "To manage the cluster, point shoalctl at the admin configuration:\n\n    export SHOAL_CONFIG={}\n",
        admin.display()
    );
}

/// The state a manager saved in `data_dir` (`manager.json`), if it ran there before: the same
/// `init` or `join` command line then restarts it.
fn saved_state(data_dir: &Path) -> Result<Option<ManagerState>, ManagerError> {
    let state_path = shoal_proto::manager_dir::state_path(data_dir);
    if !state_path.exists() {
        return Ok(None);
    }
    info!(data_dir = %data_dir.display(), "restarting manager from its data dir");
    serde_json::from_str(&read_file(&state_path)?)
        .map(Some)
        .map_err(|e| ManagerError::DataDir {
            path: data_dir.to_path_buf(),
            reason: format!("manager.json: {e}"),
        })
}

/// `shoal-manager init`: creates a cluster in a new data dir, or restarts from an existing one.
pub async fn init(
    opts: ManagerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ManagerError> {
    let shutdown = shutdown_watch(shutdown);
    secure_data_dir(&opts.data_dir)?;
    if let Some(state) = saved_state(&opts.data_dir)? {
        return run(opts, state, None, shutdown).await;
    }
    if opts.force_new_cluster {
        return Err(ManagerError::DataDir {
            path: opts.data_dir.clone(),
            reason: "--force-new-cluster restarts an existing manager data dir, and this one holds no manager state (manager.json)".into(),
        });
    }
    if holds_anything(&opts.data_dir)? {
        return Err(ManagerError::DataDir {
            path: opts.data_dir.clone(),
            reason: "is not empty but holds no manager state (manager.json): a previous init did not finish; remove the directory and run init again".into(),
        });
    }
    shoal_proto::secure_file::ensure_private_dir(&opts.data_dir.join("certs"))?;
    let cluster_id = shoal_proto::new_id();
    let node_id = shoal_proto::new_id();
    let ca = pki::generate_ca(&cluster_id)?;
    let cert_expiry_ns = opts.cert_expiry.map_or(0, |d| d.as_nanos() as i64);
    let lifetime =
        Duration::from_nanos(shoal_proto::limits::cert_expiry_or_default(cert_expiry_ns) as u64);
    let manager_id = pki::issue(&ca, &node_id, CertRole::Manager, lifetime)?;
    let admin_id = pki::issue(&ca, "admin", CertRole::Admin, lifetime)?;
    let ca_fp = pki::fingerprint_pem(&ca.cert_pem)?;
    let advertise = opts
        .advertise_addr
        .clone()
        .unwrap_or_else(|| opts.listen_addr.to_string());
    let certs = opts.data_dir.join("certs");
    write_private(&certs.join("ca.pem"), &ca.cert_pem)?;
    write_private(&certs.join("node.pem"), &manager_id.cert_pem)?;
    write_private(&certs.join("node-key.pem"), &manager_id.key_pem)?;
    crate::lock::create_data_key(&opts.data_dir)?;
    let state = ManagerState {
        cluster_id: cluster_id.clone(),
        node_id: node_id.clone(),
        raft_id: 1,
        listen_addr: opts.listen_addr.to_string(),
        advertise_addr: advertise.clone(),
        joined: false,
        peers: Vec::new(),
        trusted_fingerprints: Vec::new(),
        docker_api_addr: opts.docker_api.addr.map(|a| a.to_string()),
        docker_api_socket: opts.docker_api.socket.clone(),
    };
    let now = shoal_proto::now_ns();
    let cluster = Cluster {
        id: cluster_id,
        meta: Some(Meta::new_at(now)),
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        worker_token_secret: shoal_proto::token::new_secret(),
        manager_token_secret: shoal_proto::token::new_secret(),
        heartbeat_period_ns: opts.heartbeat_period.as_nanos() as i64,
        admin_fingerprints: Vec::new(),
        admin_credentials: vec![shoal_proto::v1::AdminCredential {
            fingerprint: pki::fingerprint_pem(&admin_id.cert_pem)?,
            holder: crate::auth::INIT_HOLDER.into(),
            issued_at: now,
            expires_at: pki::validity(&admin_id.cert_pem)?.not_after_ns(),
        }],
        cert_expiry_ns,
        ..Default::default()
    };
    let mut node = manager_node(
        &node_id,
        NodeDescription {
            hostname: hostname(),
            resources: Some(machine_resources()),
            os: std::env::consts::OS.into(),
            architecture: std::env::consts::ARCH.into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
        &advertise,
        1,
        true,
        pki::fingerprint_pem(&manager_id.cert_pem)?,
        now,
    );
    node.cert_issuer_fingerprint = ca_fp.clone();
    node.cert_expires_at = pki::validity(&manager_id.cert_pem)?.not_after_ns();
    let admin_conf = AdminConfig {
        managers: vec![advertise.clone()],
        ca_cert: ca.cert_pem.clone(),
        cert: admin_id.cert_pem.clone(),
        key: admin_id.key_pem.clone(),
    };
    let fp = ca_fp;
    let worker_token = JoinToken::new(&fp, &cluster.worker_token_secret).to_string();
    let manager_token = JoinToken::new(&fp, &cluster.manager_token_secret).to_string();
    let mut bootstrap = vec![
        StoreAction {
            action: Some(Action::PutCluster(cluster)),
        },
        StoreAction {
            action: Some(Action::PutNode(node)),
        },
    ];
    // ingress, bridge, host and none exist from the start, written with the cluster.
    bootstrap.extend(
        crate::allocator::ipam::predefined_networks(now)
            .into_iter()
            .map(|n| StoreAction {
                action: Some(Action::CreateNetwork(n)),
            }),
    );
    let admin_path = opts.data_dir.join("admin.conf");
    let run_state = state.clone();
    let after_bootstrap = move |data_dir: PathBuf| -> Result<(), ManagerError> {
        admin_conf
            .save(&admin_path)
            .map_err(|e| ManagerError::DataDir {
                path: data_dir.clone(),
                reason: e.to_string(),
            })?;
        write_private(
            &shoal_proto::manager_dir::state_path(&data_dir),
            &serde_json::to_string_pretty(&state).unwrap_or_default(),
        )?;
        print_join_help(
            &node_id,
            &advertise,
            &worker_token,
            &manager_token,
            &admin_path,
        );
        Ok(())
    };
    run(
        opts,
        run_state,
        Some((bootstrap, Box::new(after_bootstrap))),
        shutdown,
    )
    .await
}

/// `shoal-manager run`: restarts a manager from its data dir, whichever way it was made (`init`
/// or `join`), with the addresses it recorded there. Agents use it to restart the manager they
/// started for `node promote`.
pub async fn restart(
    data_dir: PathBuf,
    snapshot_interval: u64,
    docker_api: DockerApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ManagerError> {
    let shutdown = shutdown_watch(shutdown);
    secure_data_dir(&data_dir)?;
    let state = saved_state(&data_dir)?.ok_or_else(|| ManagerError::DataDir {
        path: data_dir.clone(),
        reason: "no manager.json: no manager ever ran here (use init or join)".into(),
    })?;
    let listen_addr = state
        .listen_addr
        .parse()
        .map_err(|e| ManagerError::DataDir {
            path: data_dir.clone(),
            reason: format!("manager.json: listen_addr {:?}: {e}", state.listen_addr),
        })?;
    info!(data_dir = %data_dir.display(), "restarting manager from its data dir");
    let opts = ManagerOptions {
        data_dir,
        listen_addr,
        advertise_addr: Some(state.advertise_addr.clone()),
        // The cluster's heartbeat period is in its store; this one is unused after init.
        heartbeat_period: Duration::from_secs(5),
        snapshot_interval,
        force_new_cluster: false,
        cert_expiry: None,
        docker_api,
    };
    run(opts, state, None, shutdown).await
}

/// What `shoal-manager join` needs besides the usual options.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The manager join token.
    pub token: String,
    /// Addresses of managers of the cluster, tried in order.
    pub remotes: Vec<String>,
    /// Join as an existing worker node (`node promote`): that node's current certificate and
    /// key, presented as the TLS client certificate of the join, which proves the identity.
    pub as_node: Option<Identity>,
}

/// `shoal-manager join`: joins an existing cluster as a new Raft voter, or restarts from an
/// existing data dir (the same command line).
pub async fn join(
    opts: ManagerOptions,
    join: JoinOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ManagerError> {
    use shoal_proto::v1::raft_client::RaftClient;
    let shutdown = shutdown_watch(shutdown);
    secure_data_dir(&opts.data_dir)?;
    if let Some(state) = saved_state(&opts.data_dir)? {
        return run(opts, state, None, shutdown).await;
    }
    if holds_anything(&opts.data_dir)? {
        return Err(ManagerError::DataDir {
            path: opts.data_dir.clone(),
            reason: "is not empty but holds no manager state (manager.json): remove the directory and join again".into(),
        });
    }
    let token = JoinToken::parse(&join.token).map_err(|e| ManagerError::Join(e.to_string()))?;
    let advertise = opts
        .advertise_addr
        .clone()
        .unwrap_or_else(|| opts.listen_addr.to_string());
    let pinned = pki::client_config(
        &pki::Trust::Pinned(token.ca_fingerprint.clone()),
        join.as_node.as_ref(),
    )?;
    // Asking the cluster may wait on unreachable managers: a shutdown meanwhile stops it.
    let ask = async {
        let channel = pki::connect_any(&join.remotes, std::sync::Arc::new(pinned)).await?;
        let host = hostname();
        let (csr_pem, key_pem) = pki::generate_csr(&host)?;
        let resp = RaftClient::new(channel)
            .max_encoding_message_size(limits::MAX_UNAUTHENTICATED_RAFT_REQUEST_BYTES)
            .max_decoding_message_size(limits::MAX_CA_MESSAGE_BYTES)
            .join_manager(JoinManagerRequest {
                token: join.token.clone(),
                csr_pem,
                hostname: host,
                addr: advertise.clone(),
                // The server takes the node from the certificate; this only says what we meant.
                node_id: String::new(),
            })
            .await
            .map_err(|s| {
                ManagerError::Join(format!("the cluster refused this manager: {}", s.message()))
            })?
            .into_inner();
        Ok::<_, ManagerError>((resp, key_pem))
    };
    let mut stop = shutdown.clone();
    let (resp, key_pem) = tokio::select! {
        r = ask => r?,
        _ = crate::serve::stopped(&mut stop) => return Ok(()),
    };
    if pki::fingerprint_pem(&resp.ca_cert_pem)? != token.ca_fingerprint {
        return Err(ManagerError::Join(
            "the manager sent a CA that does not match the join token".into(),
        ));
    }
    let certs = opts.data_dir.join("certs");
    shoal_proto::secure_file::ensure_private_dir(&certs)?;
    write_private(&certs.join("ca.pem"), &resp.ca_cert_pem)?;
    write_private(&certs.join("node.pem"), &resp.cert_pem)?;
    write_private(&certs.join("node-key.pem"), &key_pem)?;
    crate::lock::create_data_key(&opts.data_dir)?;
    let mut managers = vec![advertise.clone()];
    managers.extend(
        resp.peers
            .iter()
            .map(|p| p.addr.clone())
            .filter(|a| *a != advertise),
    );
    let admin_path = opts.data_dir.join("admin.conf");
    AdminConfig {
        managers,
        ca_cert: resp.ca_cert_pem.clone(),
        cert: resp.admin_cert_pem.clone(),
        key: resp.admin_key_pem.clone(),
    }
    .save(&admin_path)
    .map_err(|e| ManagerError::DataDir {
        path: opts.data_dir.clone(),
        reason: e.to_string(),
    })?;
    let state = ManagerState {
        cluster_id: resp.cluster_id.clone(),
        node_id: resp.node_id.clone(),
        raft_id: resp.raft_id,
        listen_addr: opts.listen_addr.to_string(),
        advertise_addr: advertise,
        joined: true,
        peers: resp
            .peers
            .iter()
            .map(|p| (p.raft_id, p.addr.clone()))
            .collect(),
        trusted_fingerprints: resp.manager_fingerprints.clone(),
        docker_api_addr: opts.docker_api.addr.map(|a| a.to_string()),
        docker_api_socket: opts.docker_api.socket.clone(),
    };
    write_private(
        &shoal_proto::manager_dir::state_path(&opts.data_dir),
        &serde_json::to_string_pretty(&state).unwrap_or_default(),
    )?;
    println!(
        "This node ({}) joined the cluster as a manager (raft id {}).\n\nTo manage the cluster, point shoalctl at the admin configuration:\n\n    export SHOAL_CONFIG={}\n",
        resp.node_id,
        resp.raft_id,
        admin_path.display()
    );
    run(opts, state, None, shutdown).await
}
