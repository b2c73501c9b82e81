//! The command line: every command, flag and value parser of `shoalctl` (clap derive).
//!
//! One module per noun; the value parsers live in `parse`. Everything is re-exported here, so
//! callers name `crate::cli::X` whatever file `X` is in.

mod cluster;
mod mounts;
mod network;
mod node;
mod parse;
mod resources;
mod rollout;
mod service;
mod stack;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use cluster::*;
#[cfg(test)]
pub use mounts::{parse_mount, parse_secret};
pub use network::*;
pub use node::*;
pub use parse::*;
pub use resources::*;
pub use rollout::*;
pub use service::*;
pub use stack::*;

/// How listings and inspections are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON object per line (docker's field names), or a JSON array for inspect.
    Json,
}

/// shoalctl: manage a Shoal cluster (services, networks, nodes, join tokens), in the style of docker.
#[derive(Debug, Parser)]
#[command(name = "shoalctl", version, propagate_version = true)]
pub struct Cli {
    /// admin.conf to use (written by `shoal-manager init` as DATA_DIR/admin.conf).
    /// Default: $HOME/.shoal/admin.conf, then /var/lib/shoal/manager/admin.conf. Give it before
    /// the command (`shoalctl --config FILE service ls`): after it, `--config` is a service's
    /// config file (`service create --config`), as in docker.
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output format of listings and inspections.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage networks (overlay networks across hosts, local bridges, host, none).
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage the cluster's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage the cluster itself (join tokens).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage secrets (sensitive data given to services as files on a tmpfs).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage configs (data given to services as files).
    #[command(subcommand, name = "config")]
    ConfigObj(ConfigCommand),
    /// Manage the named volumes on the cluster's nodes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Deploy and manage stacks of services from compose files.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Log in to a registry (credentials kept in docker's config.json).
    Login(LoginArgs),
    /// Log out from a registry (forget its credentials).
    Logout(LogoutArgs),
}

#[cfg(test)]
mod tests;
