//! `shoal-agent`: joins a Shoal cluster and runs its tasks.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_agent::agent::{self, AgentOptions};
use shoal_proto::secure_file::{TokenSource, JOIN_TOKEN_ENV, TOKEN_ON_COMMAND_LINE_WARNING};

/// A Shoal agent: runs the cluster's tasks on this host as containers.
#[derive(Parser)]
#[command(name = "shoal-agent", version, about)]
struct Cli {
    /// Log filter (overridden by RUST_LOG), e.g. info or shoal_agent=debug.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of `Join` next to `Load` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Join a cluster (or restart from DATA_DIR) and run its tasks here.
    Join {
        /// Directory for the agent's state (certificates, images, containers).
        #[arg(long, default_value = "/var/lib/shoal/agent")]
        data_dir: PathBuf,
        /// File whose first line is the worker join token (`shoalctl cluster join-token worker
        /// -q`); or set SHOAL_JOIN_TOKEN. Unused on restart.
        #[arg(long, value_name = "PATH", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The worker join token. Deprecated: every user of the host can read a command line;
        /// use --token-file or SHOAL_JOIN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        /// Agent label, matched by `engine.labels.KEY` constraints (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Hostname to report (default: this machine's).
        #[arg(long)]
        hostname: Option<String>,
        /// Registry to reach over plain HTTP (loopback registries always are; repeatable).
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registries: Vec<String>,
        /// Docker Hub mirror to pull through before Docker Hub itself (`http://HOST:PORT` or
        /// `https://HOST[:PORT]`; repeatable, tried in order).
        #[arg(long = "registry-mirror", value_name = "URL")]
        registry_mirrors: Vec<shoal_agent::image::RegistryMirror>,
        /// Address to report to the cluster.
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Subnet of the local bridge network containers are attached to.
        #[arg(long, default_value = shoal_agent::network::DEFAULT_SUBNET)]
        bridge_subnet: ipnet::Ipv4Net,
        /// Port of the manager this host runs once promoted (`shoalctl node promote`); it
        /// listens on the advertised address, else on the one that reaches the managers.
        #[arg(long, default_value_t = shoal_agent::manager_proc::DEFAULT_MANAGER_PORT)]
        manager_port: u16,
        /// UDP port of this node's WireGuard mesh device (encrypted overlay networks).
        #[arg(long, default_value_t = shoal_agent::network::mesh::DEFAULT_PORT)]
        wg_port: u16,
        /// Give this node no WireGuard mesh device: it then cannot carry encrypted overlay networks.
        #[arg(long)]
        no_wg: bool,
        /// Run containers even where this host cannot enforce a protection every container
        /// gets (the device cgroup, the seccomp filter); the protection is then left out. Without
        /// it such a host refuses to start containers, naming what is missing.
        #[arg(long)]
        allow_unconfined: bool,
        /// The static init binary that `service create --init` runs as PID 1 in a container
        /// (Debian's tini-static).
        #[arg(long, value_name = "PATH", default_value = shoal_agent::runtime::DEFAULT_INIT_PATH)]
        init_path: PathBuf,
        /// Manager address (IP:PORT).
        manager: String,
    },
    /// Import images from a `docker save` or OCI image-layout archive into this host's image
    /// store, for hosts that cannot reach a registry (like `docker load`).
    Load {
        /// The agent's data directory.
        #[arg(long, default_value = "/var/lib/shoal/agent")]
        data_dir: PathBuf,
        /// The archive (tar).
        #[arg(short, long)]
        input: PathBuf,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            shoal_proto::spec::check_label(k, v)?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Internal modes run before any thread or tokio runtime exists: the shim forks containers.
    match args.get(1).map(String::as_str) {
        Some("shim") => std::process::exit(shoal_agent::runtime::shim_main(&args)),
        Some("bench-run") => {
            std::process::exit(shoal_agent::runtime::bench::bench_main(&args[2..]))
        }
        _ => {}
    }
    let cli = Cli::parse();
    // Read once and removed while this is the only thread: no shim, container or promoted
    // manager inherits the worker token.
    let env_token = std::env::var(JOIN_TOKEN_ENV).ok();
    std::env::remove_var(JOIN_TOKEN_ENV);
    let result = shoal_proto::daemon::run(&cli.log_level, run(cli.command, env_token))
        .context("starting the async runtime")
        .and_then(|r| r);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, env_token: Option<String>) -> anyhow::Result<()> {
    match command {
        Command::Load { data_dir, input } => {
            let store = shoal_agent::image::ImageStore::open(&data_dir.join("images"))
                .context("opening the image store")?;
            let images = tokio::task::spawn_blocking(move || store.import_archive(&input))
                .await
                .context("import task")?
                .context("importing the archive")?;
            for img in images {
                tracing::info!(image = %img.reference, digest = %img.digest, "image loaded");
                println!("Loaded image: {} ({})", img.reference, img.digest);
            }
            Ok(())
        }
        Command::Join {
            data_dir,
            token_file,
            token,
            labels,
            hostname,
            insecure_registries,
            registry_mirrors,
            advertise_addr,
            bridge_subnet,
            manager_port,
            wg_port,
            no_wg,
            allow_unconfined,
            init_path,
            manager,
        } => {
            let token = match shoal_proto::secure_file::join_token(
                token.as_deref(),
                token_file.as_deref(),
                env_token.as_deref(),
            )
            .context("--token-file")?
            {
                Some((token, source)) => {
                    if source == TokenSource::CommandLine {
                        eprintln!("{TOKEN_ON_COMMAND_LINE_WARNING}");
                    }
                    token
                }
                None if data_dir.join("agent.json").exists() => String::new(),
                None => anyhow::bail!(
                    "a worker join token is required to join: --token-file PATH (its first line) or the {JOIN_TOKEN_ENV} environment variable (get it with `shoalctl cluster join-token worker -q`)"
                ),
            };
            agent::run(
                AgentOptions {
                    data_dir,
                    token,
                    manager,
                    labels: labels.into_iter().collect::<HashMap<_, _>>(),
                    hostname: hostname.unwrap_or_else(agent::hostname),
                    allow_unconfined,
                    init_path,
                    insecure_registries,
                    registry_mirrors,
                    advertise_addr,
                    bridge_subnet,
                    manager_port,
                    wg_port: (!no_wg).then_some(wg_port),
                },
                shoal_proto::host::shutdown_signal(),
            )
            .await
            .context("agent")
        }
    }
}
