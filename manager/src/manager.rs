//! A manager process: its data dir, identity, Raft node, gRPC server, and the leader-only
//! components started and stopped with leadership.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::config::AdminConfig;
use shoal_proto::limits;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::{self, CertRole, Identity};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controlapi::Linearized;
use crate::membership::status::wait_removed;
use crate::membership::{ClusterAdminService, RaftService};
use crate::node_record::{demoted_node, manager_node, runs_agent};
use crate::raft::{
    ClusterProposer, Dialer, GrpcTransport, PeerBook, RaftConfig, RaftGate, RaftNode,
    MAX_RAFT_MESSAGE,
};
use crate::store::Store;

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

/// Exit status of `shoal-manager` when it stopped because it was removed from the Raft group, so
/// a supervisor (an agent that started it for `node promote`) does not start it again.
pub const EXIT_REMOVED: u8 = 3;

/// What a manager keeps about itself in `DATA_DIR/manager.json` (written last at init, so its
/// presence marks a complete data dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagerState {
    /// Cluster id.
    pub cluster_id: String,
    /// This manager's node id.
    pub node_id: String,
    /// This manager's Raft id.
    pub raft_id: u64,
    /// Address the gRPC server binds.
    pub listen_addr: String,
    /// Address other nodes use to reach this manager.
    pub advertise_addr: String,
    /// True for a manager that joined an existing cluster (it never bootstraps a Raft group).
    #[serde(default)]
    pub joined: bool,
    /// The managers known at join time, `(raft id, address)`, until the store knows them.
    #[serde(default)]
    pub peers: Vec<(u64, String)>,
    /// Manager certificate fingerprints trusted before the store has caught up.
    #[serde(default)]
    pub trusted_fingerprints: Vec<String>,
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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError + '_ {
    move |source| ManagerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file of the data dir owner-only (0600) from its first byte: everything a manager
/// keeps is private (its key, admin.conf, the peers it trusts), certificates included, so one
/// rule covers the whole directory.
fn write_private(path: &Path, contents: &str) -> Result<(), ManagerError> {
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

fn read_file(path: &Path) -> Result<String, ManagerError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

pub use shoal_proto::host::{hostname, machine_resources};

/// Waits (up to 10 s) until this manager leads; `what` names the step in the error.
async fn wait_for_leadership(raft: &RaftNode, what: &str) -> Result<(), ManagerError> {
    let mut leadership = raft.leadership();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !*leadership.borrow() {
        if tokio::time::timeout_at(deadline, leadership.changed())
            .await
            .is_err()
        {
            return Err(ManagerError::NotReady(format!(
                "{what}: this manager did not become leader within 10 s"
            )));
        }
    }
    Ok(())
}

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
fn saved_state(data_dir: &std::path::Path) -> Result<Option<ManagerState>, ManagerError> {
    let state_path = data_dir.join("manager.json");
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
pub async fn init(opts: ManagerOptions) -> Result<(), ManagerError> {
    secure_data_dir(&opts.data_dir)?;
    if let Some(state) = saved_state(&opts.data_dir)? {
        return run(opts, state, None).await;
    }
    if opts.force_new_cluster {
        return Err(ManagerError::DataDir {
            path: opts.data_dir.clone(),
            reason: "--force-new-cluster restarts an existing manager data dir, and this one holds no manager state (manager.json)".into(),
        });
    }
    if opts.data_dir.exists()
        && std::fs::read_dir(&opts.data_dir)
            .map_err(io_err(&opts.data_dir))?
            .next()
            .is_some()
    {
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
    };
    let now = shoal_proto::now_ns();
    let cluster = Cluster {
        id: cluster_id,
        meta: Some(Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        }),
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
            &data_dir.join("manager.json"),
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
    )
    .await
}

type AfterBootstrap = Box<dyn FnOnce(PathBuf) -> Result<(), ManagerError> + Send>;

/// Runs the manager until SIGINT/SIGTERM.
async fn run(
    opts: ManagerOptions,
    state: ManagerState,
    bootstrap: Option<(Vec<StoreAction>, AfterBootstrap)>,
) -> Result<(), ManagerError> {
    let certs = opts.data_dir.join("certs");
    let ca_pem = read_file(&certs.join("ca.pem"))?;
    let identity = Identity {
        cert_pem: read_file(&certs.join("node.pem"))?,
        key_pem: read_file(&certs.join("node-key.pem"))?,
    };
    // Waits here, serving only `Unlock`, while autolock keeps the data key sealed.
    let store = crate::lock::open_store(&opts.data_dir, opts.listen_addr).await?;
    // The certificate and trusted CAs change at run time (renewal, CA rotation): every TLS
    // configuration of this process reads them from here at each handshake.
    let live = LiveTls::new(identity, &ca_pem)?;
    let tls = std::sync::Arc::new(live.client_config()?);
    let book = PeerBook::new(
        store.clone(),
        &state.peers,
        state.trusted_fingerprints.clone(),
    );
    let raft = RaftNode::start_with(
        RaftConfig {
            id: state.raft_id,
            data_dir: opts.data_dir.join("raft"),
            tick: Duration::from_millis(100),
            snapshot_interval: opts.snapshot_interval,
            peers: state.peers.clone(),
            force_new_cluster: opts.force_new_cluster,
        },
        store.clone(),
        GrpcTransport::reconnecting(book.clone(), tls.clone(), live.subscribe()),
    )?;
    for (id, addr) in &state.peers {
        raft.set_peer(*id, addr.clone());
    }
    let dialer = Dialer::new(tls);
    dialer.reset_on(live.subscribe());
    // Followers forward writes to the leader; reads wait for a ReadIndex round.
    store.set_proposer(std::sync::Arc::new(ClusterProposer::new(
        raft.clone(),
        dialer.clone(),
    )));
    if opts.force_new_cluster {
        force_new_cluster(&store, &raft, state.raft_id).await?;
    }
    if let Some((actions, after)) = bootstrap {
        // A single voter elects itself at once; a few seconds covers a slow disk.
        wait_for_leadership(&raft, "bootstrap").await?;
        store.propose(actions).await?;
        after(opts.data_dir.clone())?;
    }
    let advertise = opts
        .advertise_addr
        .clone()
        .unwrap_or_else(|| opts.listen_addr.to_string());
    tokio::spawn(crate::certs::keep_certificates(
        store.clone(),
        live.clone(),
        opts.data_dir.clone(),
    ));
    tokio::spawn(crate::certs::finish_rotations(
        store.clone(),
        raft.leadership(),
    ));
    // Manager addresses of the store's manager nodes are Raft peers' addresses too.
    tokio::spawn(keep_peers_and_admin_conf(
        store.clone(),
        raft.clone(),
        opts.data_dir.join("admin.conf"),
        advertise.clone(),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher = crate::dispatcher::Dispatcher::start_leader_only(
        store.clone(),
        shutdown_rx.clone(),
        Some(raft.leadership()),
    );
    let control =
        crate::controlapi::ControlApi::new(store.clone(), dispatcher.logs(), advertise.clone());
    let ca = crate::ca::CaService::new(store.clone(), vec![advertise.clone()]);
    tokio::spawn(leader_components(
        store.clone(),
        raft.clone(),
        shutdown_rx.clone(),
    ));
    let raft_service = std::sync::Arc::new(RaftService::new(
        raft.clone(),
        store.clone(),
        book.clone(),
        dialer.clone(),
        state.node_id.clone(),
        advertise.clone(),
    ));
    let cluster_admin = ClusterAdminService::new(
        raft.clone(),
        store.clone(),
        dialer.clone(),
        dispatcher.sessions(),
    );

    let listener = crate::serve::bind(opts.listen_addr)
        .await
        .map_err(|source| ManagerError::Listen {
            addr: opts.listen_addr,
            source,
        })?;
    let incoming = crate::serve::tls_incoming(listener, std::sync::Arc::new(live.server_config()?));
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(
            Linearized::new(
                shoal_proto::v1::control_server::ControlServer::new(control)
                    .max_decoding_message_size(limits::MAX_CONTROL_REQUEST_BYTES)
                    .max_encoding_message_size(limits::MAX_CONTROL_RESPONSE_BYTES),
                store.clone(),
            )
            .forward_logs(raft.clone(), dialer.clone()),
        )
        .add_service(
            shoal_proto::v1::ca_server::CaServer::new(ca)
                .max_decoding_message_size(limits::MAX_CA_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_CA_MESSAGE_BYTES),
        )
        .add_service(
            shoal_proto::v1::dispatcher_server::DispatcherServer::new(dispatcher)
                .max_decoding_message_size(limits::MAX_AGENT_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_ASSIGNMENTS_MESSAGE_BYTES),
        )
        .add_service(RaftGate::new(
            shoal_proto::v1::raft_server::RaftServer::from_arc(raft_service.clone())
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
            shoal_proto::v1::raft_server::RaftServer::from_arc(raft_service)
                .max_decoding_message_size(limits::MAX_UNAUTHENTICATED_RAFT_REQUEST_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
            book,
        ))
        .add_service(
            shoal_proto::v1::cluster_admin_server::ClusterAdminServer::new(cluster_admin)
                .max_decoding_message_size(limits::MAX_CONTROL_REQUEST_BYTES)
                .max_encoding_message_size(limits::MAX_CONTROL_RESPONSE_BYTES),
        );
    info!(listen = %opts.listen_addr, advertise = %advertise, node.id = %state.node_id, "manager serving");
    let mut stop = shutdown_rx.clone();
    let removed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let removed_flag = removed.clone();
    let watched = raft.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => info!("shutting down"),
            _ = wait_removed(watched) => {
                warn!("this manager was removed from the raft group: stopping");
                removed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _ = shutdown_tx.send(true);
    });
    let mut stop_wait = shutdown_rx.clone();
    let serve = server.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    // Graceful shutdown waits for every connection to end, and other managers' Raft streams and
    // agents' sessions are long-lived: give them a few seconds, then stop anyway (Raft state is
    // flushed by `raft.shutdown` below either way).
    tokio::select! {
        r = serve => r?,
        _ = async move {
            let _ = stop_wait.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => warn!("connections still open after 3 s: stopping anyway"),
    }
    raft.shutdown().await;
    if removed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ManagerError::Removed);
    }
    Ok(())
}

/// Starts the orchestrator and scheduler while this manager leads, and stops them when it doesn't.
async fn leader_components(store: Store, raft: RaftNode, mut shutdown: watch::Receiver<bool>) {
    let mut leadership = raft.leadership();
    loop {
        if *leadership.borrow() {
            info!("leading: starting orchestrator and scheduler");
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(crate::leader::run_orchestrator(
                store.clone(),
                stop_rx.clone(),
            ));
            tokio::spawn(crate::membership::run_manager_status(
                raft.clone(),
                store.clone(),
                stop_rx.clone(),
            ));
            tokio::spawn(crate::allocator::run(store.clone(), stop_rx.clone()));
            tokio::spawn(crate::leader::run_scheduler(store.clone(), stop_rx));
            tokio::select! {
                _ = leadership.wait_for(|l| !*l) => {
                    warn!("lost leadership: stopping orchestrator and scheduler");
                    let _ = stop_tx.send(true);
                }
                _ = shutdown.wait_for(|s| *s) => { let _ = stop_tx.send(true); return; }
            }
        } else {
            tokio::select! {
                r = leadership.wait_for(|l| *l) => if r.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

use shoal_proto::host::shutdown_signal;

/// Keeps the Raft node's address book and this manager's `admin.conf` manager list in line with
/// the manager nodes of the store (this manager first), so shoalctl can fail over to any of them.
async fn keep_peers_and_admin_conf(
    store: Store,
    raft: RaftNode,
    admin_conf: PathBuf,
    advertise: String,
) {
    let mut last: Vec<String> = Vec::new();
    let mut events = store.watch();
    loop {
        let peers: Vec<(u64, String)> = store.read(|s| {
            s.nodes()
                .filter_map(|n| {
                    n.manager_status
                        .as_ref()
                        .map(|m| (m.raft_id, m.addr.clone()))
                })
                .collect()
        });
        for (id, addr) in &peers {
            raft.set_peer(*id, addr.clone());
        }
        let mut addrs = vec![advertise.clone()];
        let mut others: Vec<String> = peers
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| *a != advertise)
            .collect();
        others.sort();
        addrs.extend(others);
        if addrs != last && addrs.len() > 1 {
            match AdminConfig::load(&admin_conf) {
                Ok(mut conf) if conf.managers != addrs => {
                    conf.managers = addrs.clone();
                    if let Err(e) = conf.save(&admin_conf) {
                        warn!(error = %e, "could not update admin.conf");
                    }
                }
                _ => {}
            }
            last = addrs;
        }
        match events.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `shoal-manager run`: restarts a manager from its data dir, whichever way it was made (`init`
/// or `join`), with the addresses it recorded there. Agents use it to restart the manager they
/// started for `node promote`.
pub async fn restart(data_dir: PathBuf, snapshot_interval: u64) -> Result<(), ManagerError> {
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
    };
    run(opts, state, None).await
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
pub async fn join(opts: ManagerOptions, join: JoinOptions) -> Result<(), ManagerError> {
    use shoal_proto::v1::raft_client::RaftClient;
    secure_data_dir(&opts.data_dir)?;
    if let Some(state) = saved_state(&opts.data_dir)? {
        return run(opts, state, None).await;
    }
    if opts.data_dir.exists()
        && std::fs::read_dir(&opts.data_dir)
            .map_err(io_err(&opts.data_dir))?
            .next()
            .is_some()
    {
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
    };
    write_private(
        &opts.data_dir.join("manager.json"),
        &serde_json::to_string_pretty(&state).unwrap_or_default(),
    )?;
    println!(
        "This node ({}) joined the cluster as a manager (raft id {}).\n\nTo manage the cluster, point shoalctl at the admin configuration:\n\n    export SHOAL_CONFIG={}\n",
        resp.node_id,
        resp.raft_id,
        admin_path.display()
    );
    run(opts, state, None).await
}

/// After `--force-new-cluster`: once this manager leads alone, removes the other managers' nodes
/// from the store (they are no longer members; they must be wiped and join again).
async fn force_new_cluster(
    store: &Store,
    raft: &RaftNode,
    raft_id: u64,
) -> Result<(), ManagerError> {
    wait_for_leadership(raft, "--force-new-cluster").await?;
    let removed = store
        .propose_fresh(|s| {
            let gone: Vec<StoreAction> = s
                .nodes()
                .filter(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.raft_id != raft_id)
                })
                .map(|n| {
                    // A promoted worker stays a worker (its agent runs tasks); a manager-only
                    // node goes.
                    let action = if runs_agent(n) {
                        Action::PutNode(demoted_node(n))
                    } else {
                        Action::RemoveNode(n.id.clone())
                    };
                    StoreAction {
                        action: Some(action),
                    }
                })
                .collect();
            let removed = gone.len();
            Ok::<_, ManagerError>((gone, removed))
        })
        .await?;
    if removed > 0 {
        warn!(removed, "--force-new-cluster: removed the other managers");
    }
    Ok(())
}
