//! The command line: every command, flag and value parser of `shoalctl` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shoal_proto::units;

/// How listings and inspections are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON object per line (docker's field names), or a JSON array for inspect.
    Json,
}

/// shoalctl: manage a Shoal cluster (services, nodes, join tokens), in the style of docker.
#[derive(Debug, Parser)]
#[command(name = "shoalctl", version, propagate_version = true)]
pub struct Cli {
    /// admin.conf to use (written by `shoal-manager init` as DATA_DIR/admin.conf).
    /// Default: $HOME/.shoal/admin.conf, then /var/lib/shoal/manager/admin.conf.
    #[arg(long, global = true, env = "SHOAL_CONFIG", value_name = "FILE")]
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
    /// Manage the cluster's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage the cluster itself (join tokens).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `shoalctl service ...`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service and wait until its tasks run (unless --detach).
    Create(Box<CreateArgs>),
    /// List services.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// List the tasks of a service, newest first within each slot.
    Ps(PsArgs),
    /// Show services in detail (JSON array like docker).
    Inspect(InspectArgs),
    /// Scale one or more replicated services (NAME=REPLICAS).
    Scale(ScaleArgs),
    /// Remove one or more services.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Print the logs of a service's tasks.
    Logs(LogsArgs),
}

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

/// `shoalctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print (or rotate) the token a new worker or manager joins with.
    JoinToken(JoinTokenArgs),
    /// Show every manager: Raft id, address, leader, term, commit and applied indexes.
    #[command(alias = "inspect")]
    Status,
}

/// Service mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Mode {
    /// A fixed number of tasks (--replicas).
    #[default]
    Replicated,
    /// One task on every eligible node.
    Global,
}

/// When a task's container is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RestartCondition {
    /// Whenever it stops.
    #[default]
    Any,
    /// Only when it exits with a non-zero code.
    OnFailure,
    /// Never.
    None,
}

/// Arguments of `service create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name (letters, digits, '-' and '_').
    #[arg(long)]
    pub name: String,

    /// Number of tasks of a replicated service [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_replicas)]
    pub replicas: Option<u64>,

    /// Service mode.
    #[arg(long, value_enum, default_value_t = Mode::Replicated)]
    pub mode: Mode,

    /// Environment variable for the containers (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<String>,

    /// Memory limit per task (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    pub limit_memory: Option<i64>,

    /// CPU limit per task, in CPUs (e.g. 0.5).
    #[arg(long, value_name = "CPUS", allow_hyphen_values = true, value_parser = parse_cpus)]
    pub limit_cpu: Option<i64>,

    /// Maximum number of processes per task (0 = unlimited).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_pids)]
    pub limit_pids: Option<i64>,

    /// Memory reserved per task for scheduling (e.g. 32M).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    pub reserve_memory: Option<i64>,

    /// CPUs reserved per task for scheduling (e.g. 0.25).
    #[arg(long, value_name = "CPUS", allow_hyphen_values = true, value_parser = parse_cpus)]
    pub reserve_cpu: Option<i64>,

    /// When to restart a task's container.
    #[arg(long, value_enum, default_value_t = RestartCondition::Any)]
    pub restart_condition: RestartCondition,

    /// Delay between restart attempts (e.g. 5s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "5s", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub restart_delay: i64,

    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_max_attempts)]
    pub restart_max_attempts: Option<u64>,

    /// Placement constraint, e.g. node.hostname==host1 or node.labels.zone!=east (repeatable).
    #[arg(long, value_name = "EXPR")]
    pub constraint: Vec<String>,

    /// Placement preference: spread tasks evenly over the values of a label first, e.g.
    /// spread=node.labels.zone (repeatable; the first is the outermost).
    #[arg(long = "placement-pref", value_name = "PREF", value_parser = parse_placement_pref)]
    pub placement_pref: Vec<String>,

    /// Most tasks of this service on one node (0 = unlimited).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_max_attempts)]
    pub max_replicas_per_node: Option<u64>,

    /// Time between the stop signal and SIGKILL when a task is stopped (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub stop_grace_period: i64,

    /// Return right after the service is created instead of waiting for it to converge.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// How long to wait for the service to converge (without --detach).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Image to run (e.g. busybox, 127.0.0.1:5000/demo:1).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Command and arguments, replacing the image's Cmd.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// Arguments of `service ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only the service IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `service ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Service name or ID.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Do not truncate IDs and errors.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print only the task IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `service inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Service names or IDs.
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
    /// Print a human-readable summary instead of JSON.
    #[arg(long)]
    pub pretty: bool,
}

/// Arguments of `service scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=REPLICAS pairs, e.g. web=3.
    #[arg(value_name = "SERVICE=REPLICAS", required = true, value_parser = parse_scale)]
    pub targets: Vec<(String, u64)>,
    /// Return right after scaling instead of waiting for convergence.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// How long to wait for each service to converge (without --detach).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Arguments of `service rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Service names or IDs.
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

/// Arguments of `service logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service name or ID.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Keep streaming new lines.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Number of lines to show from the end of each task's log, or "all".
    #[arg(long, short = 'n', value_name = "N|all", default_value = "all",
          allow_negative_numbers = true, value_parser = parse_tail)]
    pub tail: i64,
    /// Show timestamps (RFC 3339, nanoseconds).
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Do not truncate task IDs.
    #[arg(long)]
    pub no_trunc: bool,
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

/// Which join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The token a worker joins with.
    Worker,
    /// The token a manager joins with.
    Manager,
}

/// Arguments of `cluster join-token`.
#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Which token.
    #[arg(value_enum)]
    pub role: Role,
    /// Replace the token with a new one; the old one stops working.
    #[arg(long)]
    pub rotate: bool,
    /// Print only the token.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Parses a replica count: a whole number, 0 or more.
pub fn parse_replicas(s: &str) -> Result<u64, String> {
    parse_non_negative(s)
}

fn parse_max_attempts(s: &str) -> Result<u64, String> {
    parse_non_negative(s)
}

fn parse_non_negative(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.parse::<i128>() {
        Ok(n) if n < 0 => Err("must be 0 or more".into()),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{t:?} is too large")),
        Err(_) => Err(format!(
            "invalid number {t:?}: expected a whole number, 0 or more"
        )),
    }
}

fn parse_pids(s: &str) -> Result<i64, String> {
    let n = parse_non_negative(s)?;
    i64::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

fn parse_size(s: &str) -> Result<i64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("invalid size {s:?}: must not be negative"));
    }
    units::parse_bytes(s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<i64, String> {
    units::parse_nano_cpus(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<i64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    units::parse_duration_ns(s).map_err(|e| e.to_string())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let ns = parse_duration(s)?;
    Ok(Duration::from_nanos(ns.unsigned_abs()))
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parses `--placement-pref spread=node.labels.K` (also node.id, node.hostname, node.role,
/// engine.labels.K).
pub fn parse_placement_pref(s: &str) -> Result<String, String> {
    shoal_proto::spec::parse_placement_pref(s)
        .map(|key| format!("spread={key}"))
        .map_err(|e| e.reason)
}

/// Parses a node label `K=V` of `--label-add` (the value may be empty).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    let k = parse_label_key(k)?;
    Ok((k, v.to_string()))
}

/// Parses a label key: not empty, no whitespace, no `=`.
pub fn parse_label_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a label key must not be empty (e.g. zone=a)".into());
    }
    if s.contains(char::is_whitespace) || s.contains('=') {
        return Err(format!("invalid label key {s:?}: no whitespace or '='"));
    }
    Ok(s.to_string())
}

/// Parses `SERVICE=REPLICAS` of `service scale`.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=REPLICAS (e.g. web=3)"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no service name (e.g. web=3)"));
    }
    let n = parse_non_negative(n).map_err(|e| format!("{s:?}: replicas {e}"))?;
    Ok((name.to_string(), n))
}

/// Parses `--tail`: a number of lines, or "all" (-1).
pub fn parse_tail(s: &str) -> Result<i64, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    let n = parse_non_negative(s).map_err(|e| format!("{e} (or \"all\")"))?;
    i64::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_takes_command_and_args_after_image() {
        let cli = parse(&[
            "service", "create", "--name", "x", "busybox", "sh", "-c", "echo hi",
        ])
        .expect("parses");
        let Command::Service(ServiceCommand::Create(a)) = cli.command else {
            panic!("not create")
        };
        assert_eq!(a.image, "busybox");
        assert_eq!(a.args, vec!["sh", "-c", "echo hi"]);
        assert_eq!(a.replicas, None);
        assert_eq!(a.restart_delay, 5_000_000_000);
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert_eq!(a.restart_condition, RestartCondition::Any);
    }

    #[test]
    fn negative_replicas_reach_the_value_parser() {
        for args in [
            &[
                "service",
                "create",
                "--name",
                "x",
                "--replicas",
                "-1",
                "busybox",
            ][..],
            &[
                "service",
                "create",
                "--name",
                "x",
                "--replicas=-1",
                "busybox",
            ][..],
        ] {
            let e = parse(args).expect_err("must fail");
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(e.to_string().contains("must be 0 or more"), "{e}");
        }
    }

    #[test]
    fn format_after_the_verb() {
        let cli = parse(&["service", "ls", "--format", "json"]).expect("parses");
        let Command::Service(ServiceCommand::Ls(a)) = cli.command else {
            panic!("not ls")
        };
        assert!(!a.quiet);
        assert_eq!(cli.format, Format::Json);
        let cli = parse(&["--format", "json", "node", "ls"]).expect("parses");
        assert_eq!(cli.format, Format::Json);
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_scale("web=3"), Ok(("web".into(), 3)));
        assert!(parse_scale("web=-1").is_err_and(|e| e.contains("must be 0 or more")));
        assert!(parse_scale("web").is_err());
        assert_eq!(parse_tail("all"), Ok(-1));
        assert_eq!(parse_tail("10"), Ok(10));
        assert!(parse_tail("-3").is_err());
        assert!(parse_size("lots").is_err_and(|e| e.starts_with("invalid size \"lots\"")));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert!(parse_env("NOEQ").is_err());
        assert_eq!(parse_replicas("0"), Ok(0));
        assert_eq!(
            parse_placement_pref("spread=node.labels.zone"),
            Ok("spread=node.labels.zone".into())
        );
        assert!(parse_placement_pref("pack=node.labels.zone").is_err());
        assert!(parse_placement_pref("spread=node.colour").is_err());
        assert_eq!(parse_label("zone=a"), Ok(("zone".into(), "a".into())));
        assert_eq!(parse_label("ssd"), Ok(("ssd".into(), String::new())));
        assert!(parse_label("=a").is_err());
        assert!(parse_label_key("a b").is_err());
    }

    #[test]
    fn node_update_and_rm() {
        let cli = parse(&[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=a",
            "--label-add",
            "disk=ssd",
            "--label-rm",
            "old",
            "w1",
        ])
        .expect("parses");
        let Command::Node(NodeCommand::Update(a)) = cli.command else {
            panic!("not update")
        };
        assert_eq!(a.availability, Some(Availability::Drain));
        assert_eq!(a.label_add.len(), 2);
        assert_eq!(a.label_rm, vec!["old"]);
        assert_eq!(a.node, "w1");
        let cli = parse(&["node", "rm", "-f", "w1", "w2"]).expect("parses");
        let Command::Node(NodeCommand::Rm(a)) = cli.command else {
            panic!("not rm")
        };
        assert!(a.force);
        assert_eq!(a.nodes, vec!["w1", "w2"]);
        assert!(parse(&["node", "update", "--availability", "gone", "w1"]).is_err());
    }
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
