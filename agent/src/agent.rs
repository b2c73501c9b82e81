//! Starting an agent: join (or reload the identity), open the image store, runtime and network,
//! then run the dispatcher session until shutdown.

use std::collections::HashMap;
use std::path::PathBuf;

use shoal_proto::v1::NodeDescription;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::image::ImageStore;
use crate::network::mesh::Mesh;
use crate::network::{BridgeNetwork, Networks};
use crate::runtime::Runtime;
use crate::worker::Worker;

/// Command-line settings of `shoal-agent join`.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Join token.
    pub token: String,
    /// Manager address to join through.
    pub manager: String,
    /// Agent labels (engine.labels.K).
    pub labels: HashMap<String, String>,
    /// Hostname reported to the cluster.
    pub hostname: String,
    /// Run containers even where this host cannot enforce the device cgroup or seccomp.
    pub allow_unconfined: bool,
    /// The static init binary `--init` runs as PID 1 of a container.
    pub init_path: PathBuf,
    /// Registries reachable over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors pulls try first, in order (`--registry-mirror`).
    pub registry_mirrors: Vec<crate::image::RegistryMirror>,
    /// Address reported to the cluster.
    pub advertise_addr: Option<String>,
    /// Subnet of the local bridge network.
    pub bridge_subnet: ipnet::Ipv4Net,
    /// Port of the manager this host runs once promoted (`node promote`).
    pub manager_port: u16,
    /// UDP port of the WireGuard mesh device; `None` gives the node no mesh (`--no-wg`).
    pub wg_port: Option<u16>,
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Joining or loading the identity.
    #[error(transparent)]
    Join(#[from] crate::join::JoinError),
    /// Images.
    #[error("image store: {0}")]
    Image(#[from] crate::image::ImageError),
    /// Runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// Network.
    #[error("network: {0}")]
    Network(#[from] crate::network::NetworkError),
    /// The WireGuard mesh (its key).
    #[error("WireGuard mesh: {0}")]
    Mesh(#[from] crate::network::mesh::MeshError),
    /// The session.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// The node's certificate.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
}

pub use shoal_proto::host::{hostname, machine_resources};

/// Runs the agent until `shutdown` completes (SIGINT/SIGTERM in the binary). Containers keep
/// running under their shims.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {
                info!("shutting down (containers keep running under their shims)");
                let _ = shutdown_tx.send(true);
            }
            // The agent stopped on its own: nobody waits any more.
            _ = shutdown_tx.closed() => {}
        }
    });
    let joined = match crate::join::load(&opts.data_dir)? {
        Some(j) => {
            info!(node.id = %j.state.node_id, "restarting agent from its data dir");
            j
        }
        None => {
            let join =
                crate::join::join(&opts.data_dir, &opts.token, &opts.manager, &opts.hostname);
            let j = tokio::select! {
                j = join => j?,
                // Stopped before it joined: nothing to run.
                Ok(()) = async { shutdown_rx.wait_for(|s| *s).await.map(|_| ()) } => return Ok(()),
            };
            info!(node.id = %j.state.node_id, manager = %opts.manager, "joined the cluster");
            println!(
                "This node joined the cluster as a worker ({}).",
                j.state.node_id
            );
            j
        }
    };
    crate::certs::check_not_expired(&joined, &opts.data_dir)?;
    let certs = crate::certs::NodeCerts::new(&joined, &opts.data_dir)?;
    // Only the public key leaves the node; the device itself appears with the first encrypted
    // network the dispatcher sends, with this node's mesh address and peers (Networks::apply).
    let mesh = match opts.wg_port {
        Some(port) => Some(Mesh::open(
            &opts.data_dir,
            &joined.state.node_id,
            port,
            None,
        )?),
        None => None,
    };
    let images = ImageStore::open(&opts.data_dir.join("images"))?
        .with_registry_mirrors(opts.registry_mirrors.clone());
    let cgroup_parent = format!("shoal/{}", joined.state.node_id);
    let mut runtime = Runtime::new(&opts.data_dir.join("runtime"), &cgroup_parent)?
        .with_allow_unconfined(opts.allow_unconfined)
        .with_init_path(&opts.init_path)
        .with_node_name(&opts.hostname);
    for missing in runtime.missing_protections() {
        if opts.allow_unconfined {
            warn!(protection = %missing, "this host cannot enforce a protection: containers run without it (--allow-unconfined)");
        } else {
            warn!(protection = %missing, "this host cannot enforce a protection: containers will be refused (start with --allow-unconfined to run them without it)");
        }
    }
    // A dedicated shim binary next to ours keeps each container's shim small; without one, the
    // agent binary itself serves as the shim.
    if let Some(shim) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("shoal-shim")))
        .filter(|p| p.is_file())
    {
        info!(shim = %shim.display(), "using the dedicated shim binary");
        runtime = runtime.with_shim_exe(&shim);
    }
    // Task namespaces live in the data dir, not /run/netns: several agents on one machine (test
    // hosts) stay apart, and removing an agent's data dir takes its namespaces with it.
    let network = BridgeNetwork::new(
        &opts.data_dir,
        crate::network::DEFAULT_BRIDGE,
        opts.bridge_subnet,
    )?
    .with_netns_dir(opts.data_dir.join("network").join("netns"));
    network.ensure().await?;
    let description = NodeDescription {
        hostname: opts.hostname.clone(),
        resources: Some(machine_resources()),
        engine_labels: opts.labels.clone(),
        addresses: opts.advertise_addr.iter().cloned().collect(),
        os: std::env::consts::OS.into(),
        architecture: std::env::consts::ARCH.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        wg_public_key: mesh
            .as_ref()
            .map(|m| m.public_key().to_string())
            .unwrap_or_default(),
        wg_port: mesh.as_ref().map(|m| u32::from(m.port())).unwrap_or(0),
    };
    let mut networks = Networks::new(&joined.state.node_id, &opts.data_dir, network);
    if let Some(mesh) = mesh {
        networks = networks.with_mesh(mesh);
    }
    let (worker, status_rx) = Worker::new(
        runtime,
        images,
        Some(networks),
        opts.insecure_registries.clone(),
    );
    // The manager this host runs after `node promote` (started again now if it ran before).
    let manager = crate::manager_proc::ManagerProc::start(
        crate::manager_proc::ManagerSettings::next_to_agent(
            opts.data_dir.clone(),
            opts.advertise_addr.clone(),
            opts.manager_port,
        ),
    );
    tokio::spawn(certs.clone().run(shutdown_rx.clone()));
    let result = crate::session::run(
        joined,
        certs,
        description,
        worker.clone(),
        manager,
        status_rx,
        shutdown_rx,
    )
    .await;
    if let Err(crate::session::SessionError::Rpc(status)) = &result {
        if status.code() == tonic::Code::PermissionDenied {
            tracing::warn!(
                "this node was removed from the cluster: stopping and removing its containers"
            );
            worker.remove_all().await;
        }
    }
    result?;
    Ok(())
}
