//! `shoalctl node ...`.

use clap::{Args, Subcommand, ValueEnum};

use super::parse::{parse_label, parse_label_key, parse_timeout};

/// `shoalctl node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the cluster.
    #[command(visible_alias = "list")]
    Ls(NodeLsArgs),
    /// Show nodes in detail (JSON array like docker).
    Inspect(NodeInspectArgs),
    /// Change a node's availability or labels.
    Update(NodeUpdateArgs),
    /// Remove nodes from the cluster (a node that is up only with --force).
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
    /// Turn a manager into a worker: it leaves the Raft group first (refused if the remaining
    /// managers would lose quorum).
    Demote(NodeDemoteArgs),
    /// Turn workers into managers: each node's agent starts a manager on its host, which joins
    /// the Raft group as the same node (its tasks keep running).
    Promote(NodePromoteArgs),
}

/// Arguments of `node ls`.
#[derive(Debug, Args)]
pub struct NodeLsArgs {
    /// Print only the node IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `node inspect`.
#[derive(Debug, Args)]
pub struct NodeInspectArgs {
    /// Node IDs or hostnames.
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// A node's availability for tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Availability {
    /// Accepts new tasks.
    Active,
    /// Keeps its tasks but accepts no new ones.
    Pause,
    /// Moves its tasks to other nodes and accepts no new ones.
    Drain,
}

/// Arguments of `node update`.
#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// New availability of the node.
    #[arg(long, value_enum)]
    pub availability: Option<Availability>,
    /// Add or replace a node label, matched by node.labels.K (repeatable).
    #[arg(long = "label-add", value_name = "K=V", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a node label by key (repeatable).
    #[arg(long = "label-rm", value_name = "K", value_parser = parse_label_key)]
    pub label_rm: Vec<String>,
    /// Node ID or hostname.
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Arguments of `node rm`.
#[derive(Debug, Args)]
pub struct NodeRmArgs {
    /// Remove a node even if it is up (its certificate stops working at once).
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Node IDs or hostnames.
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// Arguments of `node promote`.
#[derive(Debug, Args)]
pub struct NodePromoteArgs {
    /// Return once the promotion is asked for, without waiting for the node to become a manager.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// How long to wait for each node to become a manager.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    /// Worker node IDs or hostnames.
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// Arguments of `node demote`.
#[derive(Debug, Args)]
pub struct NodeDemoteArgs {
    /// Manager node IDs or hostnames.
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}
