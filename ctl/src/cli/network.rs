//! `shoalctl network ...`.

use clap::{Args, Subcommand, ValueEnum};
use shoal_proto::wire;

use super::parse::{parse_label, parse_option};

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
        wire::NetworkDriver::from(self).as_str()
    }
}

impl From<NetworkDriver> for wire::NetworkDriver {
    fn from(driver: NetworkDriver) -> Self {
        match driver {
            NetworkDriver::Overlay => wire::NetworkDriver::Overlay,
            NetworkDriver::Bridge => wire::NetworkDriver::Bridge,
            NetworkDriver::Host => wire::NetworkDriver::Host,
            NetworkDriver::None => wire::NetworkDriver::None,
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

    /// Make this overlay the routing mesh's ingress network, in place of one removed with
    /// `network rm ingress` (no service may publish a port meanwhile). Use it to give the
    /// routing mesh another subnet, e.g. a /14 for more than 65,000 published tasks and nodes.
    #[arg(long)]
    pub ingress: bool,

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
