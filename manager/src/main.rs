//! `shoal-manager`: runs a Shoal manager.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shoal_manager::manager::{self, ManagerOptions};
use shoal_proto::host::shutdown_signal;
use shoal_proto::secure_file::{TokenSource, JOIN_TOKEN_ENV, TOKEN_ON_COMMAND_LINE_WARNING};

/// A Shoal manager: keeps the cluster state in Raft, schedules services, serves shoalctl.
#[derive(Parser)]
#[command(name = "shoal-manager", version, about)]
struct Cli {
    /// Log filter (overridden by RUST_LOG), e.g. info or shoal_manager=debug.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// Where a manager keeps its state and how it is reached, as `init` and `join` take it.
#[derive(Args)]
struct ManagerAt {
    /// Directory for the manager's state (Raft log, store, certificates).
    #[arg(long, default_value = "/var/lib/shoal/manager")]
    data_dir: PathBuf,
    /// Address to listen on for shoalctl, agents and other managers.
    #[arg(long, default_value = "0.0.0.0:4242")]
    listen_addr: SocketAddr,
    /// Address other nodes use to reach this manager (default: the listen address).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Where to serve the Docker Engine API.
    #[command(flatten)]
    docker_api: DockerApiFlags,
}

/// Where a manager serves the Docker Engine API (the `docker` CLI's swarm commands, docker-py,
/// Portainer). Recorded in the data dir: `run` keeps serving it unless told otherwise.
#[derive(Args)]
struct DockerApiFlags {
    /// Serve the Docker Engine API over TLS on IP:PORT (e.g. 0.0.0.0:2376). Clients need the
    /// admin certificate (admin.conf's): DOCKER_HOST=tcp://IP:PORT DOCKER_TLS_VERIFY=1 with
    /// ca.pem, cert.pem and key.pem from admin.conf in DOCKER_CERT_PATH.
    #[arg(long, value_name = "IP:PORT")]
    docker_api_addr: Option<SocketAddr>,
    /// Also serve the Docker Engine API on this unix socket (mode 0660: whoever can open it is
    /// an admin of the cluster), e.g. /run/shoal/docker.sock; a stale socket is replaced.
    #[arg(long, value_name = "PATH")]
    docker_api_socket: Option<PathBuf>,
}

impl DockerApiFlags {
    fn options(self) -> manager::DockerApiOptions {
        manager::DockerApiOptions {
            addr: self.docker_api_addr,
            socket: self.docker_api_socket,
        }
    }
}

impl ManagerAt {
    /// The address other nodes use: --advertise-addr, else the listen address unless it is
    /// unspecified, else this host's address on the listen port.
    fn advertised(&self) -> String {
        let listen = self.listen_addr;
        self.advertise_addr
            .clone()
            .or_else(|| (!listen.ip().is_unspecified()).then(|| listen.to_string()))
            .unwrap_or_else(|| format!("{}:{}", guess_address(), listen.port()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a new cluster with this manager as its first member, or restart from DATA_DIR.
    Init {
        /// Where the manager keeps its state and how it is reached.
        #[command(flatten)]
        at: ManagerAt,
        /// How often agents send heartbeats (a node is marked down after 1.5 periods of silence).
        #[arg(long, default_value = "5s", value_parser = humantime_duration)]
        heartbeat_period: std::time::Duration,
        /// Raft log entries between snapshots (older entries are removed).
        #[arg(long, default_value_t = shoal_manager::raft::DEFAULT_SNAPSHOT_INTERVAL)]
        snapshot_interval: u64,
        /// Disaster recovery: restart this manager's existing data dir as the only manager of
        /// the cluster, keeping its state (as swarm's --force-new-cluster). Other managers must
        /// be wiped and join again.
        #[arg(long)]
        force_new_cluster: bool,
        /// Lifetime of node and admin certificates (default 90d; at least 1m). Every node renews
        /// its own at a random point between 50 % and 80 % of it; change it later with
        /// `shoalctl cluster update --cert-expiry`. Unused on restart.
        #[arg(long, value_name = "DURATION", value_parser = cert_expiry)]
        cert_expiry: Option<std::time::Duration>,
    },
    /// Join an existing cluster as an additional manager (a Raft voter), or restart from DATA_DIR.
    Join {
        /// Where the manager keeps its state and how it is reached.
        #[command(flatten)]
        at: ManagerAt,
        /// File whose first line is the manager join token (`shoalctl cluster join-token
        /// manager -q`); or set SHOAL_JOIN_TOKEN. Unused on restart.
        #[arg(long, value_name = "PATH", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The manager join token. Deprecated: every user of the host can read a command line;
        /// use --token-file or SHOAL_JOIN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        /// Raft log entries between snapshots (older entries are removed).
        #[arg(long, default_value_t = shoal_manager::raft::DEFAULT_SNAPSHOT_INTERVAL)]
        snapshot_interval: u64,
        /// Join as the existing worker node whose certificate and key are DIR/node.pem and
        /// DIR/node-key.pem (an agent's `certs` dir): the node becomes a manager and keeps its id
        /// (`shoalctl node promote` makes the agent run this).
        #[arg(long, value_name = "DIR")]
        node_cert_dir: Option<PathBuf>,
        /// Addresses (IP:PORT) of the leader or any managers of the cluster, tried in order.
        #[arg(required = true)]
        managers: Vec<String>,
    },
    /// Restart a manager from DATA_DIR (made by init or join) with the addresses recorded there.
    Run {
        /// The manager's data directory.
        #[arg(long, default_value = "/var/lib/shoal/manager")]
        data_dir: PathBuf,
        /// Raft log entries between snapshots (older entries are removed).
        #[arg(long, default_value_t = shoal_manager::raft::DEFAULT_SNAPSHOT_INTERVAL)]
        snapshot_interval: u64,
        /// Where to serve the Docker Engine API (default: what init or join recorded).
        #[command(flatten)]
        docker_api: DockerApiFlags,
    },
}

fn cert_expiry(s: &str) -> Result<std::time::Duration, String> {
    let ns = shoal_proto::units::parse_duration_ns(s).map_err(|e| e.to_string())?;
    shoal_proto::limits::check_cert_expiry(ns).map_err(|e| e.to_string())?;
    Ok(std::time::Duration::from_nanos(ns as u64))
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    let ns = shoal_proto::units::parse_duration_ns(s).map_err(|e| e.to_string())?;
    if ns <= 0 {
        return Err("must be positive".into());
    }
    Ok(std::time::Duration::from_nanos(ns as u64))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Everything a manager writes is private, the Raft and store databases (which hold the CA key)
    // included, and those are created by a library that does not choose their modes.
    shoal_proto::secure_file::restrict_umask();
    // Read once and removed while this is the only thread, so no child inherits the token.
    let env_token = std::env::var(JOIN_TOKEN_ENV).ok();
    std::env::remove_var(JOIN_TOKEN_ENV);
    let result = shoal_proto::daemon::run(&cli.log_level, run(cli.command, env_token))
        .context("starting the async runtime")
        .and_then(|r| r);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e)
            if matches!(
                e.downcast_ref::<manager::ManagerError>(),
                Some(manager::ManagerError::Removed)
            ) =>
        {
            eprintln!("{e:#}");
            std::process::ExitCode::from(manager::EXIT_REMOVED)
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The token of `join`: `--token` (with a warning), `--token-file` or SHOAL_JOIN_TOKEN; empty
/// when none is given, which only a restart from an existing data dir accepts.
fn join_token(
    flag: Option<&str>,
    file: Option<&std::path::Path>,
    env: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<String> {
    match shoal_proto::secure_file::join_token(flag, file, env).context("--token-file")? {
        Some((token, source)) => {
            if source == TokenSource::CommandLine {
                eprintln!("{TOKEN_ON_COMMAND_LINE_WARNING}");
            }
            Ok(token)
        }
        None if shoal_proto::manager_dir::is_member(data_dir) => Ok(String::new()),
        None => anyhow::bail!(
            "a manager join token is required to join: --token-file PATH (its first line) or the {JOIN_TOKEN_ENV} environment variable (get it with `shoalctl cluster join-token manager -q`)"
        ),
    }
}

async fn run(command: Command, env_token: Option<String>) -> anyhow::Result<()> {
    match command {
        Command::Run {
            data_dir,
            snapshot_interval,
            docker_api,
        } => manager::restart(
            data_dir,
            snapshot_interval,
            docker_api.options(),
            shutdown_signal(),
        )
        .await
        .context("manager"),
        Command::Init {
            at,
            heartbeat_period,
            snapshot_interval,
            force_new_cluster,
            cert_expiry,
        } => {
            let advertise_addr = Some(at.advertised());
            let ManagerAt {
                data_dir,
                listen_addr,
                docker_api,
                ..
            } = at;
            manager::init(
                ManagerOptions {
                    data_dir,
                    listen_addr,
                    advertise_addr,
                    heartbeat_period,
                    snapshot_interval,
                    force_new_cluster,
                    cert_expiry,
                    docker_api: docker_api.options(),
                },
                shutdown_signal(),
            )
            .await
            .context("manager")
        }
        Command::Join {
            at,
            token_file,
            token,
            snapshot_interval,
            node_cert_dir,
            managers,
        } => {
            let advertise_addr = at.advertised();
            let ManagerAt {
                data_dir,
                listen_addr,
                docker_api,
                ..
            } = at;
            let token = join_token(
                token.as_deref(),
                token_file.as_deref(),
                env_token.as_deref(),
                &data_dir,
            )?;
            let as_node = match node_cert_dir {
                Some(dir) => {
                    let read = |name: &str| {
                        let p = dir.join(name);
                        std::fs::read_to_string(&p)
                            .with_context(|| format!("--node-cert-dir: reading {}", p.display()))
                    };
                    Some(shoal_proto::pki::Identity {
                        cert_pem: read("node.pem")?,
                        key_pem: read("node-key.pem")?,
                    })
                }
                None => None,
            };
            manager::join(
                ManagerOptions {
                    data_dir,
                    listen_addr,
                    advertise_addr: Some(advertise_addr),
                    // The cluster's heartbeat period is in its store; this one is unused.
                    heartbeat_period: std::time::Duration::from_secs(5),
                    snapshot_interval,
                    force_new_cluster: false,
                    cert_expiry: None,
                    docker_api: docker_api.options(),
                },
                manager::JoinOptions {
                    token,
                    remotes: managers,
                    as_node,
                },
                shutdown_signal(),
            )
            .await
            .context("manager")
        }
    }
}

/// The address of the interface holding the default route, for advertising a 0.0.0.0 listener.
fn guess_address() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            // connect() on UDP sends nothing; it only selects the source address via routing.
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}
