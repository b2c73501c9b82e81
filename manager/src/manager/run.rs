//! The running manager: store, Raft node, transport, gRPC services, and the components that run
//! while it leads, until shutdown or its removal from the cluster's managers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::config::AdminConfig;
use shoal_proto::limits;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::Identity;
use shoal_proto::v1::cluster_admin_client::ClusterAdminClient;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{read_file, DockerApiOptions, ManagerError, ManagerOptions, ManagerState};
use crate::controlapi::Linearized;
use crate::membership::status::wait_removed;
use crate::membership::{ClusterAdminService, RaftService};
use crate::node_record::{demoted_node, runs_agent};
use crate::raft::{
    ClusterProposer, Dialer, GrpcTransport, PeerBook, RaftConfig, RaftGate, RaftNode,
    MAX_RAFT_MESSAGE,
};
use crate::serve::stopped;
use crate::store::Store;

/// Waits (up to 10 s) until this manager leads; `what` names the step in the error.
pub(super) async fn wait_for_leadership(raft: &RaftNode, what: &str) -> Result<(), ManagerError> {
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

/// What `init` does once the bootstrap entries are applied (write admin.conf, manager.json).
pub(super) type AfterBootstrap = Box<dyn FnOnce(PathBuf) -> Result<(), ManagerError> + Send>;

/// Runs the manager until `shutdown` turns true or it is removed from the cluster's managers.
pub(super) async fn run(
    opts: ManagerOptions,
    state: ManagerState,
    bootstrap: Option<(Vec<StoreAction>, AfterBootstrap)>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    let certs = opts.data_dir.join("certs");
    let ca_pem = read_file(&certs.join("ca.pem"))?;
    let identity = Identity {
        cert_pem: read_file(&certs.join("node.pem"))?,
        key_pem: read_file(&certs.join("node-key.pem"))?,
    };
    // Waits here, serving only `Unlock`, while autolock keeps the data key sealed.
    let store = crate::lock::open_store(&opts.data_dir, opts.listen_addr, shutdown.clone()).await?;
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
    let dialer = Dialer::new(tls.clone());
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

    // Stops every part of this manager: on `shutdown`, or when it was removed from the group.
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
    // Bound before anything is served, so a bad address fails the start.
    let docker_api = docker_api_settings(&opts, &state)?;
    let docker_bound = if docker_api.any() {
        Some(crate::dockerapi::server::bind(&docker_api).await?)
    } else {
        None
    };
    let docker_api_addr = docker_bound
        .as_ref()
        .and_then(|b| b.tcp_addr())
        .map(|a| reported_addr(a, &advertise))
        .unwrap_or_default();
    let raft_service = std::sync::Arc::new(
        RaftService::new(
            raft.clone(),
            store.clone(),
            book.clone(),
            dialer.clone(),
            state.node_id.clone(),
            advertise.clone(),
        )
        .with_docker_api_addr(docker_api_addr.clone()),
    );
    let cluster_admin = ClusterAdminService::new(
        raft.clone(),
        store.clone(),
        dialer.clone(),
        dispatcher.sessions(),
    )
    .with_docker_api_addr(docker_api_addr);

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
            _ = stopped(&mut shutdown) => info!("shutting down"),
            _ = wait_removed(watched) => {
                warn!("this manager was removed from the raft group: stopping");
                removed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _ = shutdown_tx.send(true);
    });
    // The Docker API gateway calls this manager's own gRPC API, so it starts with it.
    let docker_task = match docker_bound {
        Some(bound) => {
            let apps = docker_apps(
                &live,
                &tls,
                &advertise,
                &state.node_id,
                &raft,
                shutdown_rx.clone(),
            )?;
            let setup = crate::dockerapi::server::TlsSetup {
                store: store.clone(),
                live: live.clone(),
                node_id: state.node_id.clone(),
                advertise: advertise.clone(),
            };
            let stop = shutdown_rx.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::dockerapi::server::run(bound, setup, apps, stop).await {
                    warn!(error = %e, "docker API not served");
                }
            }))
        }
        None => None,
    };
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
    if let Some(task) = docker_task {
        // Its listeners stop at once; this waits for the socket file to be removed.
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    raft.shutdown().await;
    if removed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ManagerError::Removed);
    }
    Ok(())
}

/// Where this run serves the Docker API: each flag given, else what the data dir recorded. A
/// flag that changes the recorded value is recorded (a later `run` keeps serving it).
fn docker_api_settings(
    opts: &ManagerOptions,
    state: &ManagerState,
) -> Result<DockerApiOptions, ManagerError> {
    let recorded_addr = match &state.docker_api_addr {
        Some(a) => Some(a.parse().map_err(|e| ManagerError::DataDir {
            path: opts.data_dir.clone(),
            reason: format!("manager.json: docker_api_addr {a:?}: {e}"),
        })?),
        None => None,
    };
    let settings = DockerApiOptions {
        addr: opts.docker_api.addr.or(recorded_addr),
        socket: opts
            .docker_api
            .socket
            .clone()
            .or_else(|| state.docker_api_socket.clone()),
    };
    let state_path = shoal_proto::manager_dir::state_path(&opts.data_dir);
    let addr = settings.addr.map(|a| a.to_string());
    // Before init's bootstrap there is no state file yet: init writes these fields itself.
    if (addr != state.docker_api_addr || settings.socket != state.docker_api_socket)
        && state_path.exists()
    {
        let updated = ManagerState {
            docker_api_addr: addr,
            docker_api_socket: settings.socket.clone(),
            ..state.clone()
        };
        super::write_private(
            &state_path,
            &serde_json::to_string_pretty(&updated).unwrap_or_default(),
        )?;
        info!(docker_api_addr = ?updated.docker_api_addr, docker_api_socket = ?updated.docker_api_socket, "docker API settings recorded");
    }
    Ok(settings)
}

/// The Docker API address as `cluster status` shows it: an unspecified IP (0.0.0.0) is replaced
/// by the host of the manager's advertised address.
fn reported_addr(addr: SocketAddr, advertise: &str) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = advertise
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .ok()
        .or_else(|| advertise.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| advertise.to_string());
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, addr.port()).to_string(),
        Err(_) => format!("{host}:{}", addr.port()),
    }
}

/// The Docker API's routes over a `Ctx` dialling this manager's own gRPC API with its own
/// identity, rebuilt whenever that identity is renewed (an open connection keeps the
/// certificate of its handshake, which the cluster stops accepting a renewal later).
fn docker_apps(
    live: &std::sync::Arc<LiveTls>,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    advertise: &str,
    node_id: &str,
    raft: &RaftNode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<watch::Receiver<axum::Router>, ManagerError> {
    let make = {
        let tls = tls.clone();
        let advertise = advertise.to_string();
        let node_id = node_id.to_string();
        let leadership = raft.leadership();
        move || -> Result<axum::Router, ManagerError> {
            let channel = shoal_proto::pki::channel(&advertise, tls.clone())?;
            let ctx = crate::dockerapi::Ctx {
                control: ControlClient::new(channel.clone()),
                cluster: ClusterAdminClient::new(channel),
                node_id: node_id.clone(),
                advertise_addr: advertise.clone(),
                leadership: leadership.clone(),
            };
            Ok(crate::dockerapi::server::app(crate::dockerapi::router(
                std::sync::Arc::new(ctx),
            )))
        }
    };
    let (tx, rx) = watch::channel(make()?);
    let mut renewed = live.subscribe_identity();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = renewed.changed() => if r.is_err() { return },
                _ = stopped(&mut shutdown) => return,
            }
            match make() {
                Ok(app) => {
                    let _ = tx.send(app);
                }
                Err(e) => warn!(error = %e, "docker API: could not redial this manager"),
            }
        }
    });
    Ok(rx)
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
            // Under the file's lock: certificate renewal rewrites the same file.
            if admin_conf.exists() {
                let update = AdminConfig::update(&admin_conf, |conf| {
                    let changed = conf.managers != addrs;
                    conf.managers = addrs.clone();
                    changed
                });
                if let Err(e) = update {
                    warn!(error = %e, "could not update admin.conf");
                }
            }
            last = addrs;
        }
        match events.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
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
