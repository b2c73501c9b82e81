//! The command line: every command, flag and value parser of `shoalctl` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use shoal_proto::security;
use shoal_proto::spec::{self, port_protocol, port_publish_mode};
use shoal_proto::units;
use shoal_proto::v1::{DeviceMapping, NetworkAttachmentConfig, PortConfig, Ulimit};

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
    /// Manage networks (overlay networks across hosts, local bridges, host, none).
    #[command(subcommand)]
    Network(NetworkCommand),
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
    /// Change a service (image, replicas, networks, published ports, ...) and wait until its
    /// tasks run the new spec (unless --detach).
    Update(Box<UpdateArgs>),
    /// Scale one or more replicated services (NAME=REPLICAS).
    Scale(ScaleArgs),
    /// Remove one or more services.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Print the logs of a service's tasks.
    Logs(LogsArgs),
}

/// `shoalctl network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network and print its ID.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(NetworkLsArgs),
    /// Show networks in detail (always a JSON array, like docker).
    Inspect(NetworkInspectArgs),
    /// Remove networks (refused while a service uses them).
    #[command(visible_alias = "remove")]
    Rm(NetworkRmArgs),
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
    /// List, renew or revoke the admin credentials (admin.conf certificates) the cluster accepts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Change cluster-wide settings: the lifetime of certificates, autolock.
    Update(ClusterUpdateArgs),
    /// Show the cluster's root CA (fingerprint, certificate lifetime, a rotation under way), or
    /// rotate it with --rotate.
    Ca(CaArgs),
    /// Unlock the managers restarted while autolock is on; the unlock key is read from stdin (or
    /// --key-file), never from the command line.
    Unlock(UnlockArgs),
    /// Print the key that unlocks managers under autolock, or replace it with --rotate.
    UnlockKey(UnlockKeyArgs),
}

/// Arguments of `cluster update`.
#[derive(Debug, Args)]
pub struct ClusterUpdateArgs {
    /// Lifetime of the node and admin certificates issued from now on (e.g. 90d, 12h, 30m; at
    /// least 1m). Nodes renew at a random point between 50 % and 80 % of it.
    #[arg(long, value_parser = parse_cert_expiry)]
    pub cert_expiry: Option<i64>,
    /// Keep every manager's data key sealed under an unlock key (printed once): a restarted
    /// manager then waits for `shoalctl cluster unlock`. `--autolock=false` turns it off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub autolock: Option<bool>,
}

/// Arguments of `cluster ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Replace the root CA: every node gets a certificate from a new one, then the old one is
    /// trusted nowhere. The admin.conf in use is renewed in place.
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: return once the rotation started instead of showing its progress.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print only the CA fingerprint.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `cluster unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Unlock only the manager at this address ("IP:PORT"); by default every manager of the
    /// admin configuration that is locked.
    #[arg(long, value_name = "ADDR")]
    pub manager: Option<String>,
    /// Read the unlock key from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<std::path::PathBuf>,
}

/// Arguments of `cluster unlock-key`.
#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Make a new unlock key; the old one stops working once every manager re-sealed its key.
    #[arg(long)]
    pub rotate: bool,
    /// Print only the key.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Parses a certificate lifetime: a duration of at least one minute, in nanoseconds.
pub fn parse_cert_expiry(s: &str) -> Result<i64, String> {
    let ns = parse_duration(s)?;
    shoal_proto::limits::check_cert_expiry(ns).map_err(|e| e.to_string())?;
    Ok(ns)
}

/// `shoalctl cluster admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List admin credentials: short fingerprint, holder ("init", or the manager node it was
    /// issued to at join) and when it was issued; `*` marks the one this call uses.
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke an admin credential: every manager refuses it as soon as it applies the change.
    Revoke(AdminRevokeArgs),
    /// Get a new certificate for the admin configuration in use (a new key, from the current
    /// CA) and write it into that file in place.
    Renew,
}

/// Arguments of `cluster admin revoke`.
#[derive(Debug, Args)]
pub struct AdminRevokeArgs {
    /// Fingerprint of the credential, or a prefix naming only one (as `cluster admin ls` shows).
    pub fingerprint_prefix: String,
    /// Revoke it even if it is the credential this shoalctl uses (you lose admin access).
    #[arg(long)]
    pub force: bool,
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

/// How a service is reached by the other services on its networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EndpointMode {
    /// One virtual IP per network, load-balanced over the running tasks.
    #[default]
    Vip,
    /// DNS round robin: the service name resolves to the running tasks' addresses.
    Dnsrr,
}

impl EndpointMode {
    /// The wire spelling ("vip" | "dnsrr").
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
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

    /// Attach the tasks to a network: NAME, or name=NAME,alias=A[,alias=B] (repeatable; eth0,
    /// eth1, ... in this order).
    #[arg(long, value_name = "NETWORK", value_parser = parse_network)]
    pub network: Vec<NetworkAttachmentConfig>,

    /// Publish a port: PUBLISHED:TARGET[/udp], TARGET (the manager picks a published port), or
    /// published=P,target=T[,protocol=tcp|udp][,mode=ingress|host] (repeatable).
    #[arg(long, short = 'p', value_name = "PORT", value_parser = parse_publish)]
    pub publish: Vec<PortConfig>,

    /// How other services reach this one: a virtual IP, or DNS round robin over its tasks.
    #[arg(long, value_enum, default_value_t = EndpointMode::Vip)]
    pub endpoint_mode: EndpointMode,

    /// Add a Linux capability to docker's default set: NET_ADMIN, CAP_SYS_TIME, or ALL
    /// (repeatable).
    #[arg(long = "cap-add", value_name = "CAP", value_parser = parse_capability)]
    pub cap_add: Vec<String>,

    /// Drop a Linux capability from docker's default set, or ALL (repeatable).
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = parse_capability)]
    pub cap_drop: Vec<String>,

    /// Give the containers every capability, every host device and no seccomp filter.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub privileged: bool,

    /// Make a host device available: HOST[:CONTAINER][:PERMS], PERMS a combination of r, w, m
    /// (default rwm) (repeatable).
    #[arg(long, value_name = "HOST[:CONTAINER[:PERMS]]", value_parser = parse_device)]
    pub device: Vec<DeviceMapping>,

    /// Security option: no-new-privileges[=true|false], seccomp=default|unconfined|PATH.json
    /// (repeatable).
    #[arg(long = "security-opt", value_name = "OPT", value_parser = parse_security_opt)]
    pub security_opt: Vec<SecurityOpt>,

    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub read_only: bool,

    /// User (and group) the command runs as: USER[:GROUP], names or numbers.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Add a supplementary group, a name or number (repeatable).
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,

    /// Resource limit NAME=SOFT[:HARD], e.g. nofile=1024:2048; -1 is unlimited (repeatable).
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_ulimit)]
    pub ulimit: Vec<Ulimit>,

    /// Namespaced kernel parameter K=V, e.g. net.core.somaxconn=1024 (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_sysctl)]
    pub sysctl: Vec<(String, String)>,

    /// Run a minimal init as PID 1 that reaps zombies and forwards signals.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub init: bool,

    /// Hostname of the containers.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Working directory of the command inside the container (absolute).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,

    /// Replace the image's entrypoint, split like a shell command line (e.g. "/bin/sh -c").
    #[arg(long, value_name = "CMD", allow_hyphen_values = true, value_parser = parse_entrypoint)]
    pub entrypoint: Option<Entrypoint>,

    /// Signal that stops a container (default SIGTERM), e.g. SIGQUIT or 3.
    #[arg(long = "stop-signal", value_name = "SIGNAL", value_parser = parse_stop_signal)]
    pub stop_signal: Option<String>,

    /// Log driver of the containers (only json-file).
    #[arg(long = "log-driver", value_name = "DRIVER", value_parser = parse_log_driver)]
    pub log_driver: Option<String>,

    /// Log driver option: max-size=SIZE (default 10m) or max-file=N (default 3) (repeatable).
    #[arg(long = "log-opt", value_name = "K=V", value_parser = parse_log_opt)]
    pub log_opt: Vec<(String, String)>,

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

/// Arguments of `service update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// New image (e.g. busybox:1.36); the tasks are replaced.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// New number of tasks (replicated services only).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_replicas)]
    pub replicas: Option<u64>,

    /// Add or replace an environment variable (repeatable).
    #[arg(long = "env-add", value_name = "K=V", value_parser = parse_env)]
    pub env_add: Vec<String>,

    /// Remove an environment variable by name (repeatable).
    #[arg(long = "env-rm", value_name = "K")]
    pub env_rm: Vec<String>,

    /// Add a placement constraint, e.g. node.labels.zone==east (repeatable).
    #[arg(long = "constraint-add", value_name = "EXPR")]
    pub constraint_add: Vec<String>,

    /// Remove a placement constraint, written as it was added (repeatable).
    #[arg(long = "constraint-rm", value_name = "EXPR")]
    pub constraint_rm: Vec<String>,

    /// Attach to another network: NAME, or name=NAME,alias=A (repeatable).
    #[arg(long = "network-add", value_name = "NETWORK", value_parser = parse_network)]
    pub network_add: Vec<NetworkAttachmentConfig>,

    /// Detach from a network, by name or ID (repeatable).
    #[arg(long = "network-rm", value_name = "NETWORK")]
    pub network_rm: Vec<String>,

    /// Publish a port (same forms as `service create --publish`); replaces a port already
    /// published on the same port and protocol (repeatable).
    #[arg(long = "publish-add", value_name = "PORT", value_parser = parse_publish)]
    pub publish_add: Vec<PortConfig>,

    /// Stop publishing a port: PUBLISHED[/PROTOCOL], PUBLISHED:TARGET[/PROTOCOL], or
    /// published=P[,target=T][,protocol=tcp|udp][,mode=ingress|host]; without a protocol every
    /// protocol of that port goes (repeatable).
    #[arg(long = "publish-rm", value_name = "PORT", value_parser = parse_publish_rm)]
    pub publish_rm: Vec<PortMatch>,

    /// New endpoint mode.
    #[arg(long, value_enum)]
    pub endpoint_mode: Option<EndpointMode>,

    /// Add a capability (removing it from the dropped ones): NET_ADMIN, ALL, or RESET to
    /// clear the added list first (repeatable).
    #[arg(long = "cap-add", value_name = "CAP", value_parser = parse_capability_update)]
    pub cap_add: Vec<String>,

    /// Drop a capability (removing it from the added ones): NET_ADMIN, ALL, or RESET to clear
    /// the dropped list first (repeatable).
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = parse_capability_update)]
    pub cap_drop: Vec<String>,

    /// Every capability, every host device, no seccomp filter (--privileged=false undoes it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub privileged: Option<bool>,

    /// Add or replace a host device: HOST[:CONTAINER][:PERMS] (repeatable).
    #[arg(long = "device-add", visible_alias = "device", value_name = "HOST[:CONTAINER[:PERMS]]",
          value_parser = parse_device)]
    pub device_add: Vec<DeviceMapping>,

    /// Remove a device by its host path (repeatable).
    #[arg(long = "device-rm", value_name = "HOSTPATH")]
    pub device_rm: Vec<String>,

    /// Set a security option: no-new-privileges[=true|false],
    /// seccomp=default|unconfined|PATH.json (repeatable).
    #[arg(long = "security-opt", value_name = "OPT", value_parser = parse_security_opt)]
    pub security_opt: Vec<SecurityOpt>,

    /// Mount the root filesystem read-only (--read-only=false undoes it).
    #[arg(long = "read-only", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub read_only: Option<bool>,

    /// Run a minimal init as PID 1 (--init=false undoes it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub init: Option<bool>,

    /// User (and group) the command runs as, USER[:GROUP]; "" for the image's.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Add a supplementary group (repeatable).
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,

    /// Remove a supplementary group (repeatable).
    #[arg(long = "group-rm", value_name = "GROUP")]
    pub group_rm: Vec<String>,

    /// Add or replace a resource limit NAME=SOFT[:HARD] (repeatable).
    #[arg(long = "ulimit-add", visible_alias = "ulimit", value_name = "NAME=SOFT[:HARD]",
          value_parser = parse_ulimit)]
    pub ulimit_add: Vec<Ulimit>,

    /// Remove a resource limit by name (repeatable).
    #[arg(long = "ulimit-rm", value_name = "NAME")]
    pub ulimit_rm: Vec<String>,

    /// Add or replace a namespaced kernel parameter K=V (repeatable).
    #[arg(long = "sysctl-add", visible_alias = "sysctl", value_name = "K=V",
          value_parser = parse_sysctl)]
    pub sysctl_add: Vec<(String, String)>,

    /// Remove a kernel parameter by key (repeatable).
    #[arg(long = "sysctl-rm", value_name = "KEY")]
    pub sysctl_rm: Vec<String>,

    /// Hostname of the containers; "" for the default (the container ID).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Working directory of the command; "" for the image's.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,

    /// Replace the image's entrypoint, split like a shell command line; "" for the image's.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true, value_parser = parse_entrypoint)]
    pub entrypoint: Option<Entrypoint>,

    /// Signal that stops a container; "" for the default (SIGTERM).
    #[arg(long = "stop-signal", value_name = "SIGNAL", value_parser = parse_stop_signal_or_reset)]
    pub stop_signal: Option<String>,

    /// Log driver of the containers (only json-file).
    #[arg(long = "log-driver", value_name = "DRIVER", value_parser = parse_log_driver)]
    pub log_driver: Option<String>,

    /// Set a log driver option, max-size=SIZE or max-file=N (repeatable).
    #[arg(long = "log-opt", value_name = "K=V", value_parser = parse_log_opt)]
    pub log_opt: Vec<(String, String)>,

    /// Return right after the update is accepted instead of waiting for the tasks.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// How long to wait for the service to converge (without --detach).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Service name or ID.
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

impl UpdateArgs {
    /// True when no flag asks for a change.
    pub fn changes_nothing(&self) -> bool {
        self.image.is_none()
            && self.replicas.is_none()
            && self.env_add.is_empty()
            && self.env_rm.is_empty()
            && self.constraint_add.is_empty()
            && self.constraint_rm.is_empty()
            && self.network_add.is_empty()
            && self.network_rm.is_empty()
            && self.publish_add.is_empty()
            && self.publish_rm.is_empty()
            && self.endpoint_mode.is_none()
            && self.cap_add.is_empty()
            && self.cap_drop.is_empty()
            && self.privileged.is_none()
            && self.device_add.is_empty()
            && self.device_rm.is_empty()
            && self.security_opt.is_empty()
            && self.read_only.is_none()
            && self.init.is_none()
            && self.user.is_none()
            && self.group_add.is_empty()
            && self.group_rm.is_empty()
            && self.ulimit_add.is_empty()
            && self.ulimit_rm.is_empty()
            && self.sysctl_add.is_empty()
            && self.sysctl_rm.is_empty()
            && self.hostname.is_none()
            && self.workdir.is_none()
            && self.entrypoint.is_none()
            && self.stop_signal.is_none()
            && self.log_driver.is_none()
            && self.log_opt.is_empty()
    }
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

/// A network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum NetworkDriver {
    /// A VXLAN network spanning every host (scope swarm).
    #[default]
    Overlay,
    /// A bridge on each host, NAT to the outside (scope local).
    Bridge,
    /// The host's own network stack.
    Host,
    /// Loopback only.
    None,
}

impl NetworkDriver {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Overlay => "overlay",
            NetworkDriver::Bridge => "bridge",
            NetworkDriver::Host => "host",
            NetworkDriver::None => "none",
        }
    }
}

/// Arguments of `network create`.
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Driver of the network.
    #[arg(long, short = 'd', value_enum, default_value_t = NetworkDriver::Overlay)]
    pub driver: NetworkDriver,

    /// Subnet in CIDR form, e.g. 10.5.0.0/24 [default: the manager picks a free /24 of 10.0.0.0/8].
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,

    /// Gateway address inside --subnet [default: its first address].
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,

    /// Driver option KEY[=VALUE] (repeatable); `encrypted` runs an overlay over the WireGuard
    /// mesh between hosts.
    #[arg(long = "opt", short = 'o', value_name = "KEY[=VALUE]", value_parser = parse_option)]
    pub opt: Vec<(String, String)>,

    /// Let standalone containers attach too (recorded; services can always attach).
    #[arg(long)]
    pub attachable: bool,

    /// Label K=V on the network (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_label)]
    pub label: Vec<(String, String)>,

    /// Network name (letters, digits, '-' and '_').
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Arguments of `network ls`.
#[derive(Debug, Args)]
pub struct NetworkLsArgs {
    /// Print only the network IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
}

/// Arguments of `network inspect`.
#[derive(Debug, Args)]
pub struct NetworkInspectArgs {
    /// Network names or IDs.
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

/// Arguments of `network rm`.
#[derive(Debug, Args)]
pub struct NetworkRmArgs {
    /// Network names or IDs.
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
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

/// Parses a replica count: a whole number from 0 to the limit of replicas per service.
pub fn parse_replicas(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = match parse_non_negative(t) {
        Ok(n) => n,
        // Digits only, yet no u64: far over the limit, and the limit is what the user needs.
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => u64::MAX,
        Err(e) => return Err(e),
    };
    spec::check_replicas(n).map_err(|_| {
        format!(
            "{t} is more than the limit of {} replicas per service",
            shoal_proto::limits::MAX_REPLICAS
        )
    })?;
    Ok(n)
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
    spec::check_env_entry(s)?;
    Ok(s.to_string())
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
    spec::check_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses a label key: not empty, no whitespace, no `=`, within the key length limit.
pub fn parse_label_key(s: &str) -> Result<String, String> {
    spec::check_label_key(s)?;
    Ok(s.to_string())
}

/// One `--security-opt` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `no-new-privileges[=true|false]`: PR_SET_NO_NEW_PRIVS for the container's process.
    NoNewPrivileges(bool),
    /// `seccomp=default`: docker's default profile.
    SeccompDefault,
    /// `seccomp=unconfined`: no seccomp filter.
    SeccompUnconfined,
    /// `seccomp=PATH.json`: a profile in docker's JSON format, read by shoalctl.
    SeccompProfile(PathBuf),
}

/// Parses `--security-opt`: `no-new-privileges[=true|false]` or
/// `seccomp=default|unconfined|PATH.json` (docker's older `KEY:VALUE` spelling too).
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    let t = s.trim();
    let (key, value) = match t.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => match t.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (t, None),
        },
    };
    match (key, value) {
        ("no-new-privileges", None) => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", Some(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(SecurityOpt::NoNewPrivileges(true)),
            "false" | "0" => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => Err(format!("no-new-privileges takes true or false, not {v:?}")),
        },
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        ("seccomp", Some("default" | "builtin")) => Ok(SecurityOpt::SeccompDefault),
        ("seccomp", Some(path)) if !path.trim().is_empty() => {
            Ok(SecurityOpt::SeccompProfile(PathBuf::from(path)))
        }
        ("seccomp", _) => Err(
            "seccomp needs a value: seccomp=default, seccomp=unconfined or seccomp=PATH.json"
                .into(),
        ),
        _ => Err(format!(
            "unsupported security option {key:?}: only no-new-privileges and seccomp are supported"
        )),
    }
}

/// A command line split like a shell does (`--entrypoint "/bin/sh -c"`); empty resets to the
/// image's entrypoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entrypoint(pub Vec<String>);

/// Parses `--entrypoint`: shell-style words, quotes respected.
pub fn parse_entrypoint(s: &str) -> Result<Entrypoint, String> {
    shlex::split(s)
        .map(Entrypoint)
        .ok_or_else(|| format!("{s:?} has an unterminated quote or a trailing backslash"))
}

/// Parses `--cap-add`/`--cap-drop` of `service create`: a capability name, with or without
/// `CAP_`, any case, or ALL; normalized to `CAP_NAME` as docker stores it.
pub fn parse_capability(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("ALL") {
        return Ok("ALL".into());
    }
    security::capability_number(t)
        .and_then(security::capability_name)
        .map(str::to_string)
        .ok_or_else(|| {
            format!("unknown capability {s:?} (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")
        })
}

/// Parses `--cap-add`/`--cap-drop` of `service update`: as for create, plus RESET (clears the
/// list before the others apply).
pub fn parse_capability_update(s: &str) -> Result<String, String> {
    if s.trim().eq_ignore_ascii_case("RESET") {
        return Ok("RESET".into());
    }
    parse_capability(s).map_err(|e| e.replace(", or ALL)", ", ALL or RESET)"))
}

/// Parses `--device HOST[:CONTAINER][:PERMS]` as docker does: a second part that is a valid
/// permission string is the permissions, otherwise the container path.
pub fn parse_device(s: &str) -> Result<DeviceMapping, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let is_perms = |p: &str| spec::validate_device_permissions(p).is_ok();
    let (host, container, perms) = match parts[..] {
        [host] => (host, host, "rwm"),
        [host, second] if is_perms(second) => (host, host, second),
        [host, container] => (host, container, "rwm"),
        [host, container, perms] => (host, container, perms),
        _ => {
            return Err(format!(
                "{s:?} is not HOST[:CONTAINER[:PERMS]] (e.g. /dev/fuse or /dev/sda:/dev/xvda:r)"
            ))
        }
    };
    for (what, path) in [("host", host), ("container", container)] {
        if !path.starts_with('/') {
            return Err(format!(
                "{what} path {path:?} must be absolute (e.g. /dev/fuse)"
            ));
        }
    }
    spec::validate_device_permissions(perms)?;
    Ok(DeviceMapping {
        path_on_host: host.to_string(),
        path_in_container: container.to_string(),
        cgroup_permissions: perms.to_string(),
    })
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (docker's names, -1 unlimited).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    security::parse_ulimit(s).map(|(name, soft, hard)| Ulimit { name, soft, hard })
}

/// Parses `--sysctl K=V`; only namespaced keys (net.*, fs.mqueue.*, kernel IPC) are accepted.
pub fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. net.core.somaxconn=1024)"))?;
    let k = k.trim();
    security::validate_sysctl(k)?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses `--stop-signal`: a signal name (SIGTERM, TERM) or number.
pub fn parse_stop_signal(s: &str) -> Result<String, String> {
    let t = s.trim();
    match security::signal_number(t) {
        Some(_) => Ok(t.to_string()),
        None => Err(format!(
            "unknown signal {s:?} (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)"
        )),
    }
}

fn parse_stop_signal_or_reset(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    parse_stop_signal(s)
}

/// Parses `--log-driver`: json-file is the only driver the agent writes.
pub fn parse_log_driver(s: &str) -> Result<String, String> {
    if s.trim() == spec::LOG_DRIVER {
        Ok(spec::LOG_DRIVER.to_string())
    } else {
        Err(format!(
            "unsupported log driver {s:?} (only {} is supported)",
            spec::LOG_DRIVER
        ))
    }
}

/// Parses `--log-opt max-size=SIZE` (b, k, m, g) or `--log-opt max-file=N` (1 or more).
pub fn parse_log_opt(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. max-size=10m)"))?;
    let (k, v) = (k.trim(), v.trim());
    match k {
        "max-size" => spec::parse_log_size(v).map(|_| ())?,
        "max-file" => spec::parse_log_max_file(v).map(|_| ())?,
        other => {
            return Err(format!(
                "unknown option {other:?} of the {} log driver (use {})",
                spec::LOG_DRIVER,
                spec::LOG_OPTIONS.join(" or ")
            ))
        }
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses `SERVICE=REPLICAS` of `service scale`.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=REPLICAS (e.g. web=3)"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no service name (e.g. web=3)"));
    }
    let n = match parse_non_negative(n) {
        Err(e) if n.trim_start().starts_with('-') => return Err(format!("{s:?}: replicas {e}")),
        _ => parse_replicas(n).map_err(|e| format!("{s:?}: replicas {e}"))?,
    };
    Ok((name.to_string(), n))
}

/// Parses a `--opt KEY[=VALUE]` of `network create`.
pub fn parse_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("{s:?} has no option name (e.g. encrypted)"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `k=v,k=v` pairs of the long forms of --network and --publish.
fn pairs(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split(',')
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{part:?} in {s:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Parses `--network NAME` or `--network name=NAME,alias=A[,alias=B]`.
pub fn parse_network(s: &str) -> Result<NetworkAttachmentConfig, String> {
    if !s.contains('=') {
        let name = s.trim();
        if name.is_empty() {
            return Err("a network name is required".into());
        }
        return Ok(NetworkAttachmentConfig {
            target: name.to_string(),
            aliases: Vec::new(),
        });
    }
    let mut cfg = NetworkAttachmentConfig::default();
    for (k, v) in pairs(s)? {
        match k {
            "name" | "target" => cfg.target = v.to_string(),
            "alias" => cfg.aliases.push(v.to_string()),
            other => {
                return Err(format!(
                    "unknown key {other:?} in {s:?} (use name=NETWORK and alias=NAME)"
                ))
            }
        }
    }
    if cfg.target.is_empty() {
        return Err(format!("{s:?} has no name=NETWORK"));
    }
    Ok(cfg)
}

fn parse_port(what: &str, s: &str) -> Result<u32, String> {
    if s.contains('-') {
        return Err(format!(
            "{what} port {s:?}: port ranges are not supported, publish each port"
        ));
    }
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("invalid {what} port {s:?}: expected a number 1-65535"))
}

fn parse_protocol(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        p @ ("tcp" | "udp") => Ok(p.to_string()),
        other => Err(format!("unknown protocol {other:?} (use tcp or udp)")),
    }
}

fn parse_publish_mode(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        m @ ("ingress" | "host") => Ok(m.to_string()),
        other => Err(format!("unknown mode {other:?} (use ingress or host)")),
    }
}

/// Which ports `--publish-rm` removes: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMatch {
    /// The published port.
    pub published: Option<u32>,
    /// The target port.
    pub target: Option<u32>,
    /// "tcp" | "udp"; any when not given.
    pub protocol: Option<String>,
    /// "ingress" | "host"; any when not given.
    pub mode: Option<String>,
}

impl PortMatch {
    /// True if `p` is one of the ports this names.
    pub fn matches(&self, p: &PortConfig) -> bool {
        self.published.is_none_or(|x| x == p.published_port)
            && self.target.is_none_or(|x| x == p.target_port)
            && self
                .protocol
                .as_deref()
                .is_none_or(|x| x == port_protocol(&p.protocol))
            && self
                .mode
                .as_deref()
                .is_none_or(|x| x == port_publish_mode(&p.publish_mode))
    }
}

impl std::fmt::Display for PortMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.published {
            parts.push(format!("published={p}"));
        }
        if let Some(t) = self.target {
            parts.push(format!("target={t}"));
        }
        if let Some(p) = &self.protocol {
            parts.push(format!("protocol={p}"));
        }
        if let Some(m) = &self.mode {
            parts.push(format!("mode={m}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// The fields of a short or long port form, before defaults.
fn parse_port_fields(s: &str) -> Result<PortMatch, String> {
    let mut m = PortMatch::default();
    if s.contains('=') {
        for (k, v) in pairs(s)? {
            match k {
                "published" => m.published = Some(parse_port("published", v)?),
                "target" => m.target = Some(parse_port("target", v)?),
                "protocol" => m.protocol = Some(parse_protocol(v)?),
                "mode" => m.mode = Some(parse_publish_mode(v)?),
                other => {
                    return Err(format!(
                        "unknown key {other:?} in {s:?} (use published, target, protocol, mode)"
                    ))
                }
            }
        }
        return Ok(m);
    }
    let (ports, protocol) = match s.split_once('/') {
        Some((ports, proto)) => (ports, Some(parse_protocol(proto)?)),
        None => (s, None),
    };
    m.protocol = protocol;
    let parts: Vec<&str> = ports.split(':').collect();
    match parts[..] {
        [target] => m.target = Some(parse_port("target", target)?),
        [published, target] => {
            m.published = Some(parse_port("published", published)?);
            m.target = Some(parse_port("target", target)?);
        }
        _ => {
            return Err(format!(
                "{s:?} is not PUBLISHED:TARGET[/PROTOCOL] (binding to one address is not supported)"
            ))
        }
    }
    Ok(m)
}

/// Parses `-p/--publish`: `8080:80`, `8080:80/udp`, `80` (the manager picks the published
/// port), or `published=8080,target=80,protocol=tcp|udp,mode=ingress|host`.
pub fn parse_publish(s: &str) -> Result<PortConfig, String> {
    let m = parse_port_fields(s)?;
    let target = m
        .target
        .ok_or_else(|| format!("{s:?} has no target port (e.g. published=8080,target=80)"))?;
    Ok(PortConfig {
        name: String::new(),
        protocol: m.protocol.unwrap_or_else(|| "tcp".into()),
        target_port: target,
        published_port: m.published.unwrap_or(0),
        publish_mode: m.mode.unwrap_or_else(|| "ingress".into()),
    })
}

/// Parses `--publish-rm`: `8080` and `8080/udp` name a published port; `8080:80[/udp]` and the
/// long form `published=8080,protocol=udp` name it more closely.
pub fn parse_publish_rm(s: &str) -> Result<PortMatch, String> {
    let mut m = parse_port_fields(s)?;
    if !s.contains('=') && !s.contains(':') {
        // A bare number is the published port (the one users see and remember).
        m.published = m.target.take();
    }
    if m.published.is_none() && m.target.is_none() {
        return Err(format!("{s:?} names no port (e.g. 8080 or published=8080)"));
    }
    Ok(m)
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

    /// `service scale` input and what parse_scale makes of it.
    type ScaleCase = (&'static str, Result<(String, u64), &'static str>);

    #[test]
    fn limits_are_refused_with_the_flag_and_the_limit() {
        let e = parse(&[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "100000000000",
            "busybox",
        ])
        .expect_err("over the limit");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            e.to_string().contains(
                "for '--replicas <N>': 100000000000 is more than the limit of 100000 replicas per service"
            ),
            "{e}"
        );
        #[rustfmt::skip]
        let replicas: [(&str, Result<u64, &str>); 5] = [
            ("100000", Ok(100_000)),
            ("100001", Err("100001 is more than the limit of 100000 replicas per service")),
            ("99999999999999999999999999", Err("99999999999999999999999999 is more than the limit of 100000 replicas per service")),
            ("-1", Err("must be 0 or more")),
            ("ten", Err("invalid number \"ten\": expected a whole number, 0 or more")),
        ];
        for (s, want) in replicas {
            assert_eq!(parse_replicas(s), want.map_err(String::from), "{s}");
        }
        #[rustfmt::skip]
        let scales: [ScaleCase; 4] = [
            ("web=100000", Ok(("web".into(), 100_000))),
            ("web=100000000000", Err("\"web=100000000000\": replicas 100000000000 is more than the limit of 100000 replicas per service")),
            ("web=-1", Err("\"web=-1\": replicas must be 0 or more")),
            ("web=x", Err("\"web=x\": replicas invalid number \"x\": expected a whole number, 0 or more")),
        ];
        for (s, want) in scales {
            assert_eq!(parse_scale(s), want.map_err(String::from), "{s}");
        }
        let key = |n: usize| "k".repeat(n);
        assert!(parse_label(&format!("{}=v", key(128))).is_ok());
        assert_eq!(
            parse_label(&format!("{}=v", key(129))),
            Err(format!(
                "label key \"{}\"… is 129 bytes, more than the limit of 128 bytes",
                key(24)
            ))
        );
        assert!(parse_label(&format!("zone={}", "v".repeat(4096))).is_ok());
        assert_eq!(
            parse_label(&format!("zone={}", "v".repeat(4097))),
            Err(
                "the value of label \"zone\" is 4097 bytes, more than the limit of 4096 bytes"
                    .into()
            )
        );
        assert!(parse_label_key(&key(129)).is_err_and(|e| e.contains("limit of 128 bytes")));
        assert!(parse_env(&format!("A={}", "x".repeat(32 * 1024 - 2))).is_ok());
        assert!(
            parse_env(&format!("A={}", "x".repeat(32 * 1024 - 1))).is_err_and(
                |e| e.ends_with("is 32769 bytes, more than the limit of 32768 bytes per entry")
            )
        );
        let e = parse(&[
            "node",
            "update",
            "--label-add",
            &format!("{}=v", key(200)),
            "n1",
        ])
        .expect_err("key over the limit");
        assert!(
            e.to_string().contains("for '--label-add <K=V>': label key"),
            "{e}"
        );
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

    fn create(args: &[&str]) -> CreateArgs {
        let mut all = vec!["service", "create", "--name", "x"];
        all.extend_from_slice(args);
        all.push("busybox");
        match parse(&all).expect("parses").command {
            Command::Service(ServiceCommand::Create(a)) => *a,
            _ => panic!("not create"),
        }
    }

    fn update(args: &[&str]) -> UpdateArgs {
        let mut all = vec!["service", "update"];
        all.extend_from_slice(args);
        all.push("web");
        match parse(&all).expect("parses").command {
            Command::Service(ServiceCommand::Update(a)) => *a,
            _ => panic!("not update"),
        }
    }

    #[test]
    fn confinement_flags_of_create() {
        let a = create(&[
            "--cap-add",
            "net_admin",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "CAP_MKNOD",
            "--privileged",
            "--device",
            "/dev/fuse",
            "--device",
            "/dev/sda:/dev/xvda:r",
            "--device",
            "/dev/sdb:rw",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "-u",
            "1000:1000",
            "--group-add",
            "audio",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--init",
            "--hostname",
            "h1",
            "-w",
            "/srv",
            "--entrypoint",
            "/bin/sh -c 'echo hi'",
            "--stop-signal",
            "SIGQUIT",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
        ]);
        assert_eq!(a.cap_add, vec!["CAP_NET_ADMIN", "ALL"]);
        assert_eq!(a.cap_drop, vec!["CAP_MKNOD"]);
        assert!(a.privileged && a.read_only && a.init);
        let dev = |h: &str, c: &str, p: &str| DeviceMapping {
            path_on_host: h.into(),
            path_in_container: c.into(),
            cgroup_permissions: p.into(),
        };
        assert_eq!(
            a.device,
            vec![
                dev("/dev/fuse", "/dev/fuse", "rwm"),
                dev("/dev/sda", "/dev/xvda", "r"),
                dev("/dev/sdb", "/dev/sdb", "rw"),
            ]
        );
        assert_eq!(
            a.security_opt,
            vec![
                SecurityOpt::NoNewPrivileges(true),
                SecurityOpt::SeccompUnconfined
            ]
        );
        assert_eq!(a.user.as_deref(), Some("1000:1000"));
        assert_eq!(a.group_add, vec!["audio"]);
        assert_eq!(
            a.ulimit,
            vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        assert_eq!(a.sysctl, vec![("net.core.somaxconn".into(), "1024".into())]);
        assert_eq!(a.hostname.as_deref(), Some("h1"));
        assert_eq!(a.workdir.as_deref(), Some("/srv"));
        assert_eq!(
            a.entrypoint,
            Some(Entrypoint(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi".into()
            ]))
        );
        assert_eq!(a.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(a.log_driver.as_deref(), Some("json-file"));
        assert_eq!(a.log_opt.len(), 2);

        let plain = create(&[]);
        assert!(!plain.privileged && !plain.read_only && !plain.init);
        assert!(plain.entrypoint.is_none() && plain.security_opt.is_empty());
        let off = create(&["--privileged=false", "--read-only=true", "--init=false"]);
        assert!(!off.privileged && off.read_only && !off.init);
    }

    #[test]
    fn confinement_flags_of_update() {
        let a = update(&[
            "--cap-add",
            "RESET",
            "--cap-add",
            "sys_time",
            "--cap-drop",
            "net_raw",
            "--privileged",
            "--read-only=false",
            "--init=true",
            "--device",
            "/dev/fuse",
            "--device-add",
            "/dev/kvm",
            "--device-rm",
            "/dev/sda",
            "--security-opt",
            "no-new-privileges=false",
            "--security-opt",
            "seccomp=/tmp/p.json",
            "--user",
            "",
            "--group-add",
            "video",
            "--group-rm",
            "audio",
            "--ulimit",
            "core=0",
            "--ulimit-add",
            "nproc=-1",
            "--ulimit-rm",
            "nofile",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl-add",
            "kernel.shmmax=1",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--hostname",
            "",
            "--workdir",
            "/app",
            "--entrypoint",
            "",
            "--stop-signal",
            "",
            "--log-opt",
            "max-file=5",
        ]);
        assert_eq!(a.cap_add, vec!["RESET", "CAP_SYS_TIME"]);
        assert_eq!(a.cap_drop, vec!["CAP_NET_RAW"]);
        assert_eq!(
            (a.privileged, a.read_only, a.init),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(a.device_add.len(), 2);
        assert_eq!(a.device_rm, vec!["/dev/sda"]);
        assert_eq!(
            a.security_opt,
            vec![
                SecurityOpt::NoNewPrivileges(false),
                SecurityOpt::SeccompProfile(PathBuf::from("/tmp/p.json"))
            ]
        );
        assert_eq!(a.user.as_deref(), Some(""));
        assert_eq!(a.ulimit_add.len(), 2);
        assert_eq!(a.ulimit_rm, vec!["nofile"]);
        assert_eq!(a.sysctl_add.len(), 2);
        assert_eq!(a.entrypoint, Some(Entrypoint(Vec::new())));
        assert_eq!(a.stop_signal.as_deref(), Some(""));
        assert!(!a.changes_nothing());
        // a bare optional bool does not swallow the service name
        let a = update(&["--privileged"]);
        assert_eq!(a.privileged, Some(true));
        assert!(!a.changes_nothing());
        for flag in [
            "--init",
            "--read-only",
            "--hostname=h",
            "--cap-drop=ALL",
            "--log-driver=json-file",
        ] {
            assert!(!update(&[flag]).changes_nothing(), "{flag}");
        }
    }

    #[test]
    fn confinement_value_parsers() {
        assert_eq!(parse_capability("cap_chown"), Ok("CAP_CHOWN".into()));
        assert_eq!(parse_capability("all"), Ok("ALL".into()));
        assert!(parse_capability("RESET").is_err());
        assert_eq!(parse_capability_update("reset"), Ok("RESET".into()));
        assert_eq!(
            parse_security_opt("no-new-privileges:true"),
            Ok(SecurityOpt::NoNewPrivileges(true))
        );
        assert_eq!(
            parse_security_opt("seccomp=default"),
            Ok(SecurityOpt::SeccompDefault)
        );
        assert_eq!(
            parse_security_opt("seccomp:unconfined"),
            Ok(SecurityOpt::SeccompUnconfined)
        );
        assert_eq!(
            parse_device("/dev/sda:/dev/xvda"),
            Ok(DeviceMapping {
                path_on_host: "/dev/sda".into(),
                path_in_container: "/dev/xvda".into(),
                cgroup_permissions: "rwm".into(),
            })
        );
        assert_eq!(parse_ulimit("nproc=-1").map(|u| u.hard), Ok(-1));
        assert_eq!(parse_stop_signal("9"), Ok("9".into()));
        assert_eq!(parse_stop_signal_or_reset(""), Ok(String::new()));
        assert_eq!(
            parse_log_opt("max-size=10M"),
            Ok(("max-size".into(), "10M".into()))
        );
        assert_eq!(
            parse_entrypoint(r#"python -m "http.server" 8000"#),
            Ok(Entrypoint(vec![
                "python".into(),
                "-m".into(),
                "http.server".into(),
                "8000".into()
            ]))
        );
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
    fn publish_forms() {
        let p = parse_publish("8080:80").expect("short");
        assert_eq!(
            (
                p.published_port,
                p.target_port,
                p.protocol.as_str(),
                p.publish_mode.as_str()
            ),
            (8080, 80, "tcp", "ingress")
        );
        let p = parse_publish("53:5353/udp").expect("udp");
        assert_eq!(
            (p.published_port, p.target_port, p.protocol.as_str()),
            (53, 5353, "udp")
        );
        let p = parse_publish("80").expect("target only");
        assert_eq!((p.published_port, p.target_port), (0, 80));
        let p = parse_publish("published=8080,target=80,protocol=udp,mode=host").expect("long");
        assert_eq!(
            (
                p.published_port,
                p.target_port,
                p.protocol.as_str(),
                p.publish_mode.as_str()
            ),
            (8080, 80, "udp", "host")
        );
        let p = parse_publish("target=80").expect("long, no published");
        assert_eq!((p.published_port, p.publish_mode.as_str()), (0, "ingress"));
        for (bad, why) in [
            ("published=8080", "no target port"),
            ("8080:80/sctp", "unknown protocol"),
            ("mode=local,target=80", "unknown mode"),
            ("published=8080,target=80,colour=red", "unknown key"),
            ("127.0.0.1:8080:80", "binding to one address"),
            ("8080-8081:80-81", "port ranges"),
            ("web:80", "invalid published port"),
            ("published=8080,target", "not KEY=VALUE"),
        ] {
            let e = parse_publish(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn publish_rm_forms() {
        let port = |published, target, protocol: &str, mode: &str| PortConfig {
            published_port: published,
            target_port: target,
            protocol: protocol.into(),
            publish_mode: mode.into(),
            ..Default::default()
        };
        let tcp = port(8080, 80, "tcp", "ingress");
        let udp = port(8080, 80, "udp", "host");
        let m = parse_publish_rm("8080").expect("bare");
        assert_eq!(m.published, Some(8080));
        assert!(m.matches(&tcp) && m.matches(&udp));
        let m = parse_publish_rm("8080/udp").expect("proto");
        assert!(!m.matches(&tcp) && m.matches(&udp));
        let m = parse_publish_rm("published=8080,protocol=tcp").expect("long");
        assert!(m.matches(&tcp) && !m.matches(&udp));
        assert!(m.matches(&port(8080, 80, "", "")), "empty protocol is tcp");
        let m = parse_publish_rm("8080:81").expect("both");
        assert!(!m.matches(&tcp));
        assert_eq!(m.to_string(), "published=8080,target=81");
        assert!(parse_publish_rm("protocol=tcp").is_err());
    }

    #[test]
    fn network_forms() {
        let n = parse_network("front").expect("name");
        assert_eq!((n.target.as_str(), n.aliases.len()), ("front", 0));
        let n = parse_network("name=front,alias=web1,alias=www").expect("long");
        assert_eq!(n.target, "front");
        assert_eq!(n.aliases, vec!["web1", "www"]);
        assert_eq!(parse_network("target=back").expect("target").target, "back");
        assert!(parse_network("alias=x").is_err_and(|e| e.contains("no name=NETWORK")));
        assert!(parse_network("name=a,driver-opt=x").is_err_and(|e| e.contains("unknown key")));
        assert!(parse_network("").is_err());
        assert_eq!(
            parse_option("encrypted"),
            Ok(("encrypted".into(), String::new()))
        );
        assert_eq!(parse_option("mtu=1400"), Ok(("mtu".into(), "1400".into())));
        assert!(parse_option("=x").is_err());
    }

    #[test]
    fn network_and_update_commands() {
        let cli = parse(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.5.0.0/24",
            "--opt",
            "encrypted",
            "-o",
            "mtu=1400",
            "--attachable",
            "--label",
            "team=a",
            "front",
        ])
        .expect("parses");
        let Command::Network(NetworkCommand::Create(a)) = cli.command else {
            panic!("not network create")
        };
        assert_eq!(a.driver, NetworkDriver::Overlay);
        assert_eq!(a.subnet.as_deref(), Some("10.5.0.0/24"));
        assert_eq!(a.opt.len(), 2);
        assert!(a.attachable);
        assert_eq!(a.name, "front");
        assert!(parse(&["network", "create", "-d", "macvlan", "x"]).is_err());
        let cli = parse(&["network", "ls", "-q"]).expect("ls");
        assert!(matches!(cli.command, Command::Network(NetworkCommand::Ls(ref a)) if a.quiet));
        let cli = parse(&[
            "service",
            "update",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "8080",
            "--network-add",
            "name=back,alias=api",
            "--network-rm",
            "front",
            "--image",
            "nginx",
            "-d",
            "web",
        ])
        .expect("update");
        let Command::Service(ServiceCommand::Update(a)) = cli.command else {
            panic!("not update")
        };
        assert_eq!(a.publish_add[0].published_port, 9090);
        assert_eq!(a.publish_rm[0].published, Some(8080));
        assert_eq!(a.network_add[0].aliases, vec!["api"]);
        assert_eq!(a.network_rm, vec!["front"]);
        assert!(a.detach && !a.changes_nothing());
        let cli = parse(&["service", "update", "web"]).expect("bare update parses");
        let Command::Service(ServiceCommand::Update(a)) = cli.command else {
            panic!("not update")
        };
        assert!(a.changes_nothing());
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
