//! `shoalctl service ...`: the arguments of every verb.

use std::time::Duration;

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use shoal_proto::v1::{
    ConfigReference, DeviceMapping, Mount, NetworkAttachmentConfig, PortConfig, SecretReference,
    Ulimit,
};
use shoal_proto::wire;

use super::mounts::{parse_config, parse_mount, parse_secret};
use super::parse::*;
use super::rollout::{HealthArgs, RollbackConfigArgs, UpdateConfigArgs};

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
    /// Change a service (image, replicas, networks, published ports, ...) and follow the
    /// rolling update until it completes (unless --detach).
    Update(Box<UpdateArgs>),
    /// Go back to the service's previous spec and follow the rollback (unless --detach).
    Rollback(RollbackArgs),
    /// Scale one or more replicated services (NAME=REPLICAS).
    Scale(ScaleArgs),
    /// Remove one or more services.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Print the logs of a service's tasks.
    Logs(LogsArgs),
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
        wire::EndpointMode::from(self).as_str()
    }
}

impl From<EndpointMode> for wire::EndpointMode {
    fn from(mode: EndpointMode) -> Self {
        match mode {
            EndpointMode::Vip => wire::EndpointMode::Vip,
            EndpointMode::Dnsrr => wire::EndpointMode::Dnsrr,
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

    /// Service label K=V (repeatable): metadata of the service, matched by `service ls --filter`.
    #[arg(long, short = 'l', value_name = "K=V", value_parser = parse_label)]
    pub label: Vec<(String, String)>,

    /// Container label K=V (repeatable): metadata of the task template, shown by inspect.
    #[arg(long = "container-label", value_name = "K=V", value_parser = parse_label)]
    pub container_label: Vec<(String, String)>,

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

    /// Add a line to the container's /etc/hosts: NAME:IP, e.g. db.example:10.0.0.5 (repeatable).
    #[arg(long = "host", value_name = "NAME:IP", value_parser = shoal_proto::spec::hosts::host_line_from_flag)]
    pub host: Vec<String>,

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

    /// Give the tasks a secret: NAME (the file /run/secrets/NAME), or
    /// source=NAME,target=T,uid=U,gid=G,mode=0440 (repeatable).
    #[arg(long, value_name = "SECRET", value_parser = parse_secret)]
    pub secret: Vec<SecretReference>,

    /// Give the tasks a config file: NAME (the file /NAME), or
    /// source=NAME,target=/PATH,uid=U,gid=G,mode=0440 (repeatable).
    #[arg(long = "config", value_name = "CONFIG", value_parser = parse_config)]
    pub config_ref: Vec<ConfigReference>,

    /// Mount a volume, a host path or a tmpfs: type=bind|volume|tmpfs,source=SRC,target=/PATH
    /// [,readonly][,volume-driver=local][,volume-opt=K=V][,volume-label=K=V][,volume-nocopy]
    /// [,tmpfs-size=64m][,tmpfs-mode=1770][,bind-propagation=rshared] (repeatable).
    #[arg(long, value_name = "MOUNT", value_parser = parse_mount)]
    pub mount: Vec<Mount>,

    /// Registry credentials, healthcheck and the update and rollback settings.
    #[command(flatten)]
    pub shared: SharedServiceArgs,

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

/// Flags `service create` and `service update` share word for word.
#[derive(Debug, Args)]
pub struct SharedServiceArgs {
    /// Send the credentials `shoalctl login` stored for the image's registry to the nodes that
    /// pull it.
    #[arg(long)]
    pub with_registry_auth: bool,

    /// Healthcheck flags.
    #[command(flatten)]
    pub health: HealthArgs,

    /// How updates replace tasks.
    #[command(flatten)]
    pub update_config: UpdateConfigArgs,

    /// How rollbacks replace tasks.
    #[command(flatten)]
    pub rollback_config: RollbackConfigArgs,
}

impl SharedServiceArgs {
    /// True when none of these flags is given.
    pub fn is_empty(&self) -> bool {
        !self.with_registry_auth
            && self.health.is_empty()
            && self.update_config.is_empty()
            && self.rollback_config.is_empty()
    }
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

    /// Add or replace a service label K=V (repeatable).
    #[arg(long = "label-add", value_name = "K=V", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,

    /// Remove a service label by key (repeatable; a missing key is ignored, as in docker).
    #[arg(long = "label-rm", value_name = "K", value_parser = parse_label_key)]
    pub label_rm: Vec<String>,

    /// Add or replace a container label K=V (repeatable); the tasks are replaced.
    #[arg(long = "container-label-add", value_name = "K=V", value_parser = parse_label)]
    pub container_label_add: Vec<(String, String)>,

    /// Remove a container label by key (repeatable; a missing key is ignored, as in docker).
    #[arg(long = "container-label-rm", value_name = "K", value_parser = parse_label_key)]
    pub container_label_rm: Vec<String>,

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

    /// Add a line to the container's /etc/hosts: NAME:IP (repeatable).
    #[arg(long = "host-add", value_name = "NAME:IP", value_parser = shoal_proto::spec::hosts::host_line_from_flag)]
    pub host_add: Vec<String>,

    /// Remove the /etc/hosts lines of a host name, NAME or NAME:IP (repeatable).
    #[arg(long = "host-rm", value_name = "NAME[:IP]")]
    pub host_rm: Vec<String>,

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

    /// Add or replace a secret (same forms as `service create --secret`; replaces the one with
    /// the same target) (repeatable).
    #[arg(long = "secret-add", value_name = "SECRET", value_parser = parse_secret)]
    pub secret_add: Vec<SecretReference>,

    /// Remove a secret by name (repeatable).
    #[arg(long = "secret-rm", value_name = "SECRET")]
    pub secret_rm: Vec<String>,

    /// Add or replace a config (same forms as `service create --config`) (repeatable).
    #[arg(long = "config-add", value_name = "CONFIG", value_parser = parse_config)]
    pub config_add: Vec<ConfigReference>,

    /// Remove a config by name (repeatable).
    #[arg(long = "config-rm", value_name = "CONFIG")]
    pub config_rm: Vec<String>,

    /// Add or replace a mount (same form as `service create --mount`; replaces the one at the
    /// same target) (repeatable).
    #[arg(long = "mount-add", value_name = "MOUNT", value_parser = parse_mount)]
    pub mount_add: Vec<Mount>,

    /// Remove the mount at a target path (repeatable).
    #[arg(long = "mount-rm", value_name = "TARGET")]
    pub mount_rm: Vec<String>,

    /// Registry credentials, healthcheck and the update and rollback settings.
    #[command(flatten)]
    pub shared: SharedServiceArgs,

    /// Replace every task once, even if nothing changed (the rolling update settings apply).
    #[arg(long)]
    pub force: bool,

    /// Go back to the previous spec (only with --detach, --quiet and --timeout).
    #[arg(long)]
    pub rollback: bool,

    /// Return right after the update is accepted instead of following it.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// Print no progress while following the update.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// How long to wait while the update makes no progress (without --detach).
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
            && self.label_add.is_empty()
            && self.label_rm.is_empty()
            && self.container_label_add.is_empty()
            && self.container_label_rm.is_empty()
            && self.host_add.is_empty()
            && self.host_rm.is_empty()
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
            && self.secret_add.is_empty()
            && self.secret_rm.is_empty()
            && self.config_add.is_empty()
            && self.config_rm.is_empty()
            && self.mount_add.is_empty()
            && self.mount_rm.is_empty()
            && self.shared.is_empty()
    }

    /// Refuses flag combinations before anything is sent: `--rollback` beside a change,
    /// `--no-healthcheck` beside `--health-*`, and no change at all.
    pub fn check(&self) -> Result<(), String> {
        if self.rollback {
            if self.force || !self.changes_nothing() {
                return Err("other flags may not be combined with --rollback".into());
            }
            return Ok(());
        }
        self.shared.health.check()?;
        if !self.force && self.changes_nothing() {
            return Err(
                "nothing to update: give at least one flag (see shoalctl service update --help)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Arguments of `service rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Return right after the rollback is accepted instead of following it.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// Print no progress while following the rollback.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// How long to wait while the rollback makes no progress (without --detach).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Service name or ID.
    #[arg(value_name = "SERVICE")]
    pub service: String,
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
