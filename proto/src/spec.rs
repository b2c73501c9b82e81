//! Validation of what users ask for: every error names the field, says why, and what to do.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::v1::{EndpointSpec, NetworkAttachmentConfig, NetworkSpec, ServiceMode, ServiceSpec};

/// A spec field that is not acceptable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field as the user knows it ("--replicas", "name", "--constraint").
    pub field: String,
    /// Why it is refused and what to do.
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A comparison in a placement constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One parsed placement constraint, e.g. `node.labels.zone==east`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Left side: `node.id`, `node.hostname`, `node.role`, `node.labels.K`, `engine.labels.K`.
    pub key: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// Right side, compared case-sensitively (except `node.role` and `node.hostname`).
    pub value: String,
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let (key, op, value) = if let Some((k, v)) = s.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(err(
                "--constraint",
                format!("{s:?} has no == or != (e.g. node.hostname==host1)"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let known = matches!(key, "node.id" | "node.hostname" | "node.role")
            || key
                .strip_prefix("node.labels.")
                .is_some_and(|k| !k.is_empty())
            || key
                .strip_prefix("engine.labels.")
                .is_some_and(|k| !k.is_empty());
        if !known {
            return Err(err(
                "--constraint",
                format!(
                    "unknown key {key:?} (use node.id, node.hostname, node.role, node.labels.KEY or engine.labels.KEY)"
                ),
            ));
        }
        if value.is_empty() {
            return Err(err("--constraint", format!("{s:?} has an empty value")));
        }
        if key == "node.role" && !matches!(value, "manager" | "worker") {
            return Err(err(
                "--constraint",
                format!("node.role must be manager or worker, not {value:?}"),
            ));
        }
        Ok(Constraint {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }
}

/// Parses a placement preference `spread=KEY` into its key (`node.labels.K`, `engine.labels.K`,
/// `node.id`, `node.hostname` or `node.role`).
pub fn parse_placement_pref(pref: &str) -> Result<String, SpecError> {
    let key = pref
        .trim()
        .strip_prefix("spread=")
        .ok_or_else(|| {
            err(
                "--placement-pref",
                format!("{pref:?} is not spread=KEY (e.g. spread=node.labels.zone)"),
            )
        })?
        .trim();
    let known = ["node.labels.", "engine.labels."]
        .iter()
        .any(|prefix| key.strip_prefix(prefix).is_some_and(|k| !k.is_empty()))
        || matches!(key, "node.id" | "node.hostname" | "node.role");
    if !known {
        return Err(err(
            "--placement-pref",
            format!("unknown key {key:?} (use node.labels.KEY, engine.labels.KEY, node.id, node.hostname or node.role)"),
        ));
    }
    Ok(key.to_string())
}

/// Checks a service name the way docker does: 1-63 characters of letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    check_object_name(name, "--name", "a service needs a name (--name NAME)")
}

/// The naming rule of services and networks (so `SERVICE.NETWORK` stays an unambiguous DNS
/// name); errors are reported against `field`, `missing` when the name is empty.
fn check_object_name(name: &str, field: &str, missing: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err(field, missing));
    }
    if name.len() > 63 {
        return Err(err(field, "must be at most 63 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_first {
        return Err(err(
            field,
            format!("{name:?} is not valid: use letters, digits, '-' and '_', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// Validates a whole service spec before anything is written.
pub fn validate_service(spec: &ServiceSpec) -> Result<(), SpecError> {
    validate_name(&spec.name)?;
    let task = spec
        .task
        .as_ref()
        .ok_or_else(|| err("task", "missing task template"))?;
    let container = task
        .container
        .as_ref()
        .ok_or_else(|| err("image", "missing container spec"))?;
    if container.image.trim().is_empty() {
        return Err(err("image", "an image is required (e.g. busybox:latest)"));
    }
    if container.image.chars().any(char::is_whitespace) {
        return Err(err(
            "image",
            format!("{:?} contains whitespace", container.image),
        ));
    }
    for e in &container.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(err("--env", format!("{e:?} is not KEY=VALUE"))),
        }
    }
    if spec.mode == ServiceMode::ModeGlobal as i32 && spec.replicas != 0 {
        return Err(err("--replicas", "cannot be used with --mode global"));
    }
    if ServiceMode::try_from(spec.mode).is_err() {
        return Err(err("--mode", "must be replicated or global"));
    }
    if let Some(res) = &task.resources {
        let lim = res.limits.unwrap_or_default();
        let rsv = res.reservations.unwrap_or_default();
        if lim.memory_bytes < 0 || rsv.memory_bytes < 0 || lim.nano_cpus < 0 || rsv.nano_cpus < 0 {
            return Err(err("resources", "must not be negative"));
        }
        if lim.memory_bytes > 0 && lim.memory_bytes < 4 * 1024 * 1024 {
            return Err(err("--limit-memory", "must be at least 4MiB"));
        }
        if lim.memory_bytes > 0 && rsv.memory_bytes > lim.memory_bytes {
            return Err(err("--reserve-memory", "must not exceed --limit-memory"));
        }
        if lim.nano_cpus > 0 && rsv.nano_cpus > lim.nano_cpus {
            return Err(err("--reserve-cpu", "must not exceed --limit-cpu"));
        }
        if res.pids_limit < 0 {
            return Err(err("--limit-pids", "must not be negative"));
        }
    }
    if container.stop_grace_period_ns < 0 {
        return Err(err("--stop-grace-period", "must not be negative"));
    }
    if let Some(r) = &task.restart {
        if r.delay_ns < 0 {
            return Err(err("--restart-delay", "must not be negative"));
        }
    }
    if let Some(p) = &task.placement {
        for c in &p.constraints {
            Constraint::parse(c)?;
        }
        for pref in &p.preferences {
            parse_placement_pref(pref)?;
        }
    }
    validate_attachments(&task.networks)?;
    if let Some(ep) = &spec.endpoint {
        validate_endpoint(ep)?;
    }
    Ok(())
}

/// The network drivers Shoal knows, as `network create --driver` spells them.
pub const NETWORK_DRIVERS: [&str; 4] = ["overlay", "bridge", "host", "none"];

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
    validate_network_name(&spec.name)?;
    let driver = spec.driver.as_str();
    if !NETWORK_DRIVERS.contains(&driver) {
        let what = if driver.is_empty() {
            "a driver is required".to_string()
        } else {
            format!("unknown driver {driver:?}")
        };
        return Err(err(
            "--driver",
            format!("{what} (use overlay, bridge, host or none)"),
        ));
    }
    let addressless = matches!(driver, "host" | "none");
    let subnet = if spec.subnet.trim().is_empty() {
        None
    } else {
        if addressless {
            return Err(err(
                "--subnet",
                format!("a {driver} network has no addresses of its own"),
            ));
        }
        let net = Ipv4Cidr::parse(&spec.subnet).map_err(|r| err("--subnet", r))?;
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
        Some(net)
    };
    if !spec.gateway.trim().is_empty() {
        let Some(net) = subnet else {
            return Err(err(
                "--gateway",
                "needs --subnet (the gateway must be an address inside it)",
            ));
        };
        let gw: Ipv4Addr = spec.gateway.trim().parse().map_err(|_| {
            err(
                "--gateway",
                format!("{:?} is not an IPv4 address", spec.gateway),
            )
        })?;
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
    }
    if spec.encrypted && driver != "overlay" {
        return Err(err(
            "--opt",
            format!("encrypted is only for overlay networks, not {driver}"),
        ));
    }
    if spec.options.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--opt", "an option needs a name (KEY or KEY=VALUE)"));
    }
    if spec.labels.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--label", "a label needs a key (KEY=VALUE)"));
    }
    if spec.ingress {
        if driver != "overlay" {
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
fn validate_attachments(networks: &[NetworkAttachmentConfig]) -> Result<(), SpecError> {
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
        if matches!(n.driver.as_str(), "host" | "none") && resolved.len() > 1 {
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

/// The protocol of a port, with the default filled in ("tcp").
pub fn port_protocol(protocol: &str) -> &str {
    if protocol.is_empty() {
        "tcp"
    } else {
        protocol
    }
}

/// The publish mode of a port, with the default filled in ("ingress").
pub fn port_publish_mode(mode: &str) -> &str {
    if mode.is_empty() {
        "ingress"
    } else {
        mode
    }
}

/// The endpoint mode of a service, with the default filled in ("vip").
pub fn endpoint_mode(mode: &str) -> &str {
    if mode.is_empty() {
        "vip"
    } else {
        mode
    }
}

/// Checks `--endpoint-mode` and every `--publish`: ports in range, known protocol and mode, no
/// published port twice, and docker's rule that dnsrr cannot serve ingress-mode ports.
fn validate_endpoint(ep: &EndpointSpec) -> Result<(), SpecError> {
    let mode = endpoint_mode(&ep.mode);
    if !matches!(mode, "vip" | "dnsrr") {
        return Err(err(
            "--endpoint-mode",
            format!("unknown mode {mode:?} (use vip or dnsrr)"),
        ));
    }
    let mut published = HashSet::new();
    for p in &ep.ports {
        let protocol = port_protocol(&p.protocol);
        if !matches!(protocol, "tcp" | "udp") {
            return Err(err(
                "--publish",
                format!("unknown protocol {protocol:?} (use tcp or udp)"),
            ));
        }
        let publish_mode = port_publish_mode(&p.publish_mode);
        if !matches!(publish_mode, "ingress" | "host") {
            return Err(err(
                "--publish",
                format!("unknown mode {publish_mode:?} (use ingress or host)"),
            ));
        }
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(err(
                "--publish",
                format!("target port {} is out of range (1-65535)", p.target_port),
            ));
        }
        if p.published_port > 65535 {
            return Err(err(
                "--publish",
                format!(
                    "published port {} is out of range (1-65535, or 0 to let the manager pick)",
                    p.published_port
                ),
            ));
        }
        if p.published_port == 0 && publish_mode == "host" {
            return Err(err(
                "--publish",
                format!(
                    "target port {}/{protocol} in host mode needs a published port",
                    p.target_port
                ),
            ));
        }
        if p.published_port != 0 && !published.insert((p.published_port, protocol)) {
            return Err(err(
                "--publish",
                format!(
                    "published port {}/{protocol} is given twice",
                    p.published_port
                ),
            ));
        }
        if mode == "dnsrr" && publish_mode == "ingress" {
            return Err(err(
                "--endpoint-mode",
                format!(
                    "dnsrr cannot serve the ingress-mode port {}/{protocol} (publish it with mode=host, or use vip)",
                    if p.published_port == 0 { p.target_port } else { p.published_port }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ContainerSpec, PortConfig, TaskSpec};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            replicas: 1,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert!(validate_service(&spec("web")).is_ok());
        assert_eq!(validate_service(&spec("")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("-x")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("a b")).unwrap_err().field, "--name");
    }

    #[test]
    fn constraints() {
        let c = Constraint::parse("node.labels.zone==east").expect("valid");
        assert_eq!(c.key, "node.labels.zone");
        assert_eq!(c.op, ConstraintOp::Eq);
        assert_eq!(
            Constraint::parse("node.role!=manager").expect("valid").op,
            ConstraintOp::Ne
        );
        assert!(Constraint::parse("node.colour==red").is_err());
        assert!(Constraint::parse("node.hostname=a").is_err());
        assert!(Constraint::parse("node.role==boss").is_err());
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                constraints: vec!["bad".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--constraint");
    }

    #[test]
    fn placement_preferences_and_grace() {
        #[rustfmt::skip]
        let cases: [(&str, Result<&str, ()>); 6] = [
            ("spread=node.labels.zone", Ok("node.labels.zone")),
            (" spread= engine.labels.disk ", Ok("engine.labels.disk")),
            ("spread=node.hostname", Ok("node.hostname")),
            ("spread=node.labels.", Err(())),
            ("spread=node.colour", Err(())),
            ("binpack=node.labels.zone", Err(())),
        ];
        for (pref, want) in cases {
            let got = parse_placement_pref(pref).map_err(|e| {
                assert_eq!(e.field, "--placement-pref");
            });
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{pref}");
        }
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                preferences: vec!["spread=zone".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--placement-pref");
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.stop_grace_period_ns = -1;
        }
        assert_eq!(
            validate_service(&s).unwrap_err().field,
            "--stop-grace-period"
        );
    }

    #[test]
    fn env_and_mode() {
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.env.push("NOEQUALS".into());
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--env");
        let mut s = spec("web");
        s.mode = ServiceMode::ModeGlobal as i32;
        assert_eq!(validate_service(&s).unwrap_err().field, "--replicas");
    }

    fn net(name: &str, driver: &str, subnet: &str, gateway: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver: driver.into(),
            subnet: subnet.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cidrs() {
        let n = Ipv4Cidr::parse("10.1.2.0/24").expect("valid");
        assert_eq!(n.to_string(), "10.1.2.0/24");
        assert!(n.contains(Ipv4Addr::new(10, 1, 2, 255)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 3, 0)));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(n.overlaps(&Ipv4Cidr::parse("10.0.0.0/8").expect("valid")));
        assert!(!n.overlaps(&Ipv4Cidr::parse("10.1.3.0/24").expect("valid")));
        assert_eq!(
            Ipv4Cidr::parse("10.1.2.3/24").unwrap_err(),
            "\"10.1.2.3/24\" has host bits set: it should be 10.1.2.0/24"
        );
        assert!(Ipv4Cidr::parse("10.1.2.0").is_err());
        assert!(Ipv4Cidr::parse("10.1.2.0/33").is_err());
        assert!(Ipv4Cidr::parse("fd00::/64").is_err());
        assert!(Ipv4Cidr::parse("0.0.0.0/0").is_ok());
    }

    #[test]
    fn networks() {
        #[rustfmt::skip]
        let cases: [(NetworkSpec, Option<&str>); 16] = [
            (net("front", "overlay", "", ""), None),
            (net("front", "overlay", "10.5.0.0/24", ""), None),
            (net("front", "bridge", "10.5.0.0/24", "10.5.0.254"), None),
            (net("host", "host", "", ""), None),
            (net("", "overlay", "", ""), Some("name")),
            (net("a.b", "overlay", "", ""), Some("name")),
            (net("front", "macvlan", "", ""), Some("--driver")),
            (net("front", "", "", ""), Some("--driver")),
            (net("front", "overlay", "10.5.0.1/24", ""), Some("--subnet")),
            (net("front", "overlay", "10.5.0.0/31", ""), Some("--subnet")),
            (net("front", "overlay", "10.0.0.0/7", ""), Some("--subnet")),
            (net("front", "host", "10.5.0.0/24", ""), Some("--subnet")),
            (net("front", "overlay", "", "10.5.0.1"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "10.6.0.1"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "10.5.0.0"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "nope"), Some("--gateway")),
        ];
        for (spec, want) in cases {
            let got = validate_network(&spec).err().map(|e| e.field);
            assert_eq!(got.as_deref(), want, "{spec:?}");
        }
        let mut enc = net("secret", "overlay", "", "");
        enc.encrypted = true;
        assert!(validate_network(&enc).is_ok());
        enc.driver = "bridge".into();
        assert_eq!(
            validate_network(&enc).unwrap_err().to_string(),
            "--opt: encrypted is only for overlay networks, not bridge"
        );
        let mut ing = net("ingress", "overlay", "10.0.0.0/16", "");
        ing.ingress = true;
        assert!(validate_network(&ing).is_ok());
        ing.attachable = true;
        assert_eq!(validate_network(&ing).unwrap_err().field, "--attachable");
        let mut opt = net("front", "overlay", "", "");
        opt.options.insert(String::new(), "x".into());
        assert_eq!(validate_network(&opt).unwrap_err().field, "--opt");
        let e = validate_network(&net("front", "overlay", "10.5.0.0/24", "10.6.0.1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--gateway: 10.6.0.1 is outside the subnet 10.5.0.0/24"
        );
    }

    fn port(published: u32, target: u32, protocol: &str, mode: &str) -> PortConfig {
        PortConfig {
            published_port: published,
            target_port: target,
            protocol: protocol.into(),
            publish_mode: mode.into(),
            ..Default::default()
        }
    }

    fn with_ports(mode: &str, ports: Vec<PortConfig>) -> ServiceSpec {
        let mut s = spec("web");
        s.endpoint = Some(EndpointSpec {
            mode: mode.into(),
            ports,
        });
        s
    }

    #[test]
    fn published_ports() {
        #[rustfmt::skip]
        let cases: Vec<(ServiceSpec, Option<&str>)> = vec![
            (with_ports("", vec![port(8080, 80, "", "")]), None),
            (with_ports("vip", vec![port(0, 80, "tcp", "ingress")]), None),
            (with_ports("vip", vec![port(8080, 80, "tcp", ""), port(8080, 80, "udp", "")]), None),
            (with_ports("dnsrr", vec![port(8080, 80, "tcp", "host")]), None),
            (with_ports("dnsrr", vec![]), None),
            (with_ports("vip", vec![port(8080, 0, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 65536, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(65536, 80, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "sctp", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "", "local")]), Some("--publish")),
            (with_ports("vip", vec![port(0, 80, "", "host")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "", ""), port(8080, 81, "tcp", "host")]), Some("--publish")),
            (with_ports("dnsrr", vec![port(8080, 80, "", "")]), Some("--endpoint-mode")),
            (with_ports("rr", vec![]), Some("--endpoint-mode")),
        ];
        for (s, want) in cases {
            let got = validate_service(&s).err().map(|e| e.field);
            assert_eq!(got.as_deref(), want, "{:?}", s.endpoint);
        }
        let e = validate_service(&with_ports(
            "vip",
            vec![port(8080, 80, "", ""), port(8080, 90, "", "")],
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--publish: published port 8080/tcp is given twice"
        );
    }

    fn attach(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn with_networks(networks: Vec<NetworkAttachmentConfig>) -> ServiceSpec {
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.networks = networks;
        }
        s
    }

    #[test]
    fn service_networks() {
        assert!(validate_service(&with_networks(vec![
            attach("a", &["web1"]),
            attach("b", &[])
        ]))
        .is_ok());
        assert!(validate_service(&with_networks(vec![attach("host", &[])])).is_ok());
        for bad in [
            vec![attach("a", &[]), attach("a", &[])],
            vec![attach("", &[])],
            vec![attach("a", &["no spaces"])],
            vec![attach("host", &[]), attach("a", &[])],
            vec![attach("a", &[]), attach("none", &[])],
        ] {
            let e = validate_service(&with_networks(bad.clone())).expect_err("refused");
            assert_eq!(e.field, "--network", "{bad:?}");
        }
        let s = with_networks(vec![attach("id1", &[]), attach("id2", &[])]);
        let front = net("front", "overlay", "", "");
        let hostnet = net("myhost", "host", "", "");
        assert!(validate_service_networks(&s, &[front.clone(), front.clone()]).is_ok());
        assert_eq!(
            validate_service_networks(&s, &[front.clone(), hostnet])
                .unwrap_err()
                .to_string(),
            "--network: network \"myhost\" (driver host) cannot be combined with other networks"
        );
        let mut ingress = net("ingress", "overlay", "", "");
        ingress.ingress = true;
        assert!(validate_service_networks(&s, &[front.clone(), ingress]).is_err());
        assert!(validate_service_networks(&s, &[front]).is_err());
    }
}
