//! Networks: drivers, subnets, names and options, and the networks a service attaches to.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use prost::Message as _;

use crate::limits::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_NETWORK_OPTIONS};
use crate::v1::{NetworkAttachmentConfig, NetworkSpec, ServiceSpec};
use crate::wire::NetworkDriver;

use super::{check_object_name, check_spec_size, err, preview, validate_labels, SpecError};

/// The network drivers Shoal knows, as `network create --driver` spells them.
pub const NETWORK_DRIVERS: &[&str] = NetworkDriver::WORDS;

/// An IPv4 subnet in CIDR form (`10.1.0.0/24`); the address is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0-32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `A.B.C.D/N`, refusing host bits (docker: "it should be 10.1.0.0/24").
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR subnet (e.g. 10.1.0.0/24)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            format!("{s:?} is not a CIDR subnet: {ip:?} is not an IPv4 address (only IPv4 is supported)")
        })?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length {len:?} (0-32)"))?;
        let net = Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        };
        if net.addr != ip {
            return Err(format!("{s:?} has host bits set: it should be {net}"));
        }
        Ok(net)
    }

    /// True if `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// The last address of the subnet (broadcast).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// True if the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Checks a network name: like a service name (1-63 letters, digits, `-`, `_`), so that
/// `SERVICE.NETWORK` stays an unambiguous DNS name.
pub fn validate_network_name(name: &str) -> Result<(), SpecError> {
    check_object_name(name, "name", "a network needs a name")
}

/// Validates a network spec before it is created (`network create`; the manager calls it too).
/// Overlaps with other networks are the manager's to check: they need the store.
pub fn validate_network(spec: &NetworkSpec) -> Result<(), SpecError> {
    check_spec_size("network", spec.encoded_len())?;
    validate_network_name(&spec.name)?;
    let driver = validate_driver(&spec.driver)?;
    let subnet = parse_subnet(&spec.subnet, driver)?;
    if !spec.gateway.trim().is_empty() {
        validate_gateway(&spec.gateway, subnet)?;
    }
    if spec.encrypted && driver != NetworkDriver::Overlay {
        return Err(err(
            "--opt",
            format!("encrypted is only for overlay networks, not {driver}"),
        ));
    }
    if spec.options.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--opt", "an option needs a name (KEY or KEY=VALUE)"));
    }
    validate_network_options(spec)?;
    if spec.labels.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--label", "a label needs a key (KEY=VALUE)"));
    }
    validate_labels("--label", spec.labels.iter())?;
    if spec.ingress {
        validate_ingress(spec, driver)?;
    }
    Ok(())
}

/// `--driver`: one of [`NetworkDriver`]'s words, given (the empty default is the client's to
/// fill in, as `network create` does).
fn validate_driver(driver: &str) -> Result<NetworkDriver, SpecError> {
    driver.parse().map_err(|_| {
        let what = if driver.is_empty() {
            "a driver is required".to_string()
        } else {
            format!("unknown driver {driver:?}")
        };
        err(
            "--driver",
            format!("{what} (use {})", NetworkDriver::allowed()),
        )
    })
}

/// `--subnet` (none when empty): a CIDR between a /8 and a /30, on a driver that has addresses.
fn parse_subnet(subnet: &str, driver: NetworkDriver) -> Result<Option<Ipv4Cidr>, SpecError> {
    if subnet.trim().is_empty() {
        return Ok(None);
    }
    if driver.stands_alone() {
        return Err(err(
            "--subnet",
            format!("a {driver} network has no addresses of its own"),
        ));
    }
    let net = Ipv4Cidr::parse(subnet).map_err(|r| err("--subnet", r))?;
    if net.prefix < 8 {
        return Err(err(
            "--subnet",
            format!("{net} is too large (at most a /8)"),
        ));
    }
    if net.prefix > 30 {
        return Err(err(
            "--subnet",
            format!("{net} is too small (at least a /30: a gateway and one task)"),
        ));
    }
    Ok(Some(net))
}

/// `--gateway`: an address inside `subnet` (which must be given), neither its network nor its
/// broadcast address.
fn validate_gateway(gateway: &str, subnet: Option<Ipv4Cidr>) -> Result<(), SpecError> {
    let Some(net) = subnet else {
        return Err(err(
            "--gateway",
            "needs --subnet (the gateway must be an address inside it)",
        ));
    };
    let gw: Ipv4Addr = gateway
        .trim()
        .parse()
        .map_err(|_| err("--gateway", format!("{gateway:?} is not an IPv4 address")))?;
    if !net.contains(gw) {
        return Err(err(
            "--gateway",
            format!("{gw} is outside the subnet {net}"),
        ));
    }
    if gw == net.addr || gw == net.broadcast() {
        return Err(err(
            "--gateway",
            format!("{gw} is the network or broadcast address of {net}"),
        ));
    }
    Ok(())
}

/// The ingress network: an overlay, not attachable.
fn validate_ingress(spec: &NetworkSpec, driver: NetworkDriver) -> Result<(), SpecError> {
    if driver != NetworkDriver::Overlay {
        return Err(err(
            "--ingress",
            "the ingress network must use the overlay driver",
        ));
    }
    if spec.attachable {
        return Err(err(
            "--attachable",
            "the ingress network cannot be attachable",
        ));
    }
    Ok(())
}

/// Driver options are bounded as labels are: at most [`MAX_NETWORK_OPTIONS`], keys and values
/// of label size.
fn validate_network_options(spec: &NetworkSpec) -> Result<(), SpecError> {
    let count = spec.options.len();
    if count > MAX_NETWORK_OPTIONS {
        return Err(err(
            "--opt",
            format!("{count} options are more than the limit of {MAX_NETWORK_OPTIONS} per network"),
        ));
    }
    let mut options: Vec<(&String, &String)> = spec.options.iter().collect();
    options.sort();
    for (k, v) in options {
        if k.len() > MAX_LABEL_KEY_BYTES {
            return Err(err(
                "--opt",
                format!(
                    "option name {} is {} bytes, more than the limit of {MAX_LABEL_KEY_BYTES} bytes",
                    preview(k),
                    k.len()
                ),
            ));
        }
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(err(
                "--opt",
                format!(
                    "the value of option {} is {} bytes, more than the limit of {MAX_LABEL_VALUE_BYTES} bytes",
                    preview(k),
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a DNS alias of a service on a network: 1-253 characters of letters, digits, `-`, `_`
/// and `.`.
fn validate_alias(alias: &str) -> Result<(), SpecError> {
    let ok = !alias.is_empty()
        && alias.len() <= 253
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(err(
            "--network",
            format!("alias {alias:?} is not a valid DNS name (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// The networks of a task template as given (names or ids): each once, `host`/`none` alone.
pub(super) fn validate_attachments(networks: &[NetworkAttachmentConfig]) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for n in networks {
        let target = n.target.trim();
        if target.is_empty() {
            return Err(err("--network", "a network name is required"));
        }
        if !seen.insert(target) {
            return Err(err(
                "--network",
                format!("the service is attached to network {target:?} twice"),
            ));
        }
        for a in &n.aliases {
            validate_alias(a)?;
        }
        if matches!(target, "host" | "none") && networks.len() > 1 {
            return Err(err(
                "--network",
                format!("the {target} network cannot be combined with other networks"),
            ));
        }
    }
    Ok(())
}

/// Checks a service's networks once the manager has resolved them: `resolved[i]` is the network
/// of `spec.task.networks[i]`. A `host` or `none` driver network must be the only one, and the
/// `ingress` network is joined through published ports, never by name.
pub fn validate_service_networks(
    spec: &ServiceSpec,
    resolved: &[NetworkSpec],
) -> Result<(), SpecError> {
    let task_networks = spec.task.as_ref().map(|t| t.networks.len()).unwrap_or(0);
    if task_networks != resolved.len() {
        return Err(err(
            "--network",
            format!(
                "{} networks resolved for {task_networks} attachments",
                resolved.len()
            ),
        ));
    }
    for n in resolved {
        if n.ingress {
            return Err(err(
                "--network",
                format!(
                    "a service cannot be attached to the ingress network {:?}: publish a port instead",
                    n.name
                ),
            ));
        }
        let alone = n.driver_kind().is_ok_and(NetworkDriver::stands_alone);
        if alone && resolved.len() > 1 {
            return Err(err(
                "--network",
                format!(
                    "network {:?} (driver {}) cannot be combined with other networks",
                    n.name, n.driver
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(driver: &str) -> String {
        validate_network(&NetworkSpec {
            name: "front".into(),
            driver: driver.into(),
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn driver_messages_list_the_known_drivers() {
        assert_eq!(
            message("macvlan"),
            "--driver: unknown driver \"macvlan\" (use overlay, bridge, host or none)"
        );
        assert_eq!(
            message(""),
            "--driver: a driver is required (use overlay, bridge, host or none)"
        );
        assert_eq!(NETWORK_DRIVERS, ["overlay", "bridge", "host", "none"]);
    }

    #[test]
    fn host_and_none_have_no_subnet() {
        for driver in NetworkDriver::ALL {
            let spec = NetworkSpec {
                name: "n".into(),
                driver: driver.to_string(),
                subnet: "10.9.0.0/24".into(),
                ..Default::default()
            };
            assert_eq!(
                validate_network(&spec).is_err(),
                driver.stands_alone(),
                "{driver}"
            );
        }
    }
}
