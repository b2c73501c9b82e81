//! Load balancing with nftables (this kernel has no IPVS): service VIPs inside task namespaces and
//! published ports on the host.
//!
//! Two tables, each rewritten whole in one nft transaction (delete and re-create), so a change of
//! the running set never shows a half-applied state:
//! - `ip shoal_vip` in a task's namespace: the task's own connections (output hook, so reaching
//!   its own service's VIP works too) to a VIP are DNATed to one of the service's running task
//!   addresses, round-robin per connection (`numgen inc`), destination port kept; a VIP with no
//!   running task is rejected (connection refused).
//! - `ip shoal_ports` in the host namespace: connections to any local address on a published port
//!   (prerouting for other machines and local tasks, output for the host itself, 127.0.0.1
//!   included) are DNATed to a backend `addr:target_port`; DNATed traffic leaving through the
//!   ingress bridge is masqueraded to the node's ingress address so replies come back through this
//!   node, and so is DNATed traffic from 127.0.0.0/8 and from a backend to itself (hairpin). A
//!   published port with no backend is rejected.
//!
//! 127.0.0.1:PORT needs `route_localnet`: without it the kernel refuses to route a packet with a
//! loopback source out of a bridge (before postrouting can masquerade it), and the reply, whose
//! destination conntrack turns back into 127.0.0.1 on the way in, as a martian. The same switch
//! would let a LAN neighbour reach anything listening on the node's 127.0.0.1 (CVE-2020-8558);
//! what makes it safe is [`super::guard`]'s rule dropping every packet to or from 127.0.0.0/8
//! that did not arrive on `lo`, applied before any port is published. The switch is on only
//! while a port is published.
//!
//! The generators are pure; `apply_*` run `nft -f -` on a thread inside the namespace. The `ip
//! shoal` table of the bridge networks is never touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use shoal_proto::v1::NetworkView;
use shoal_proto::wire::{self, EndpointMode};

use super::netns::{self, NetnsError};
use super::parse_ip;

/// The table of VIP load balancing inside a task namespace.
pub const VIP_TABLE: &str = "shoal_vip";
/// The table of published ports in the host namespace.
pub const PORTS_TABLE: &str = "shoal_ports";

/// Errors of applying load-balancing rules.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `nft` could not be run, or rejected the ruleset.
    #[error("nft in {netns}: {source}")]
    Nft {
        /// The namespace it ran in ("host" for the agent's own).
        netns: String,
        /// What went wrong.
        source: super::nft::NftError,
    },
    /// A sysctl the published ports need could not be set.
    #[error("setting {path}: {source}")]
    Sysctl {
        /// The /proc/sys file.
        path: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One VIP-mode service as a task sees it: its VIP and its running task addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The service it belongs to (for logs).
    pub service_id: String,
    /// The virtual IP on the network the task shares with the service.
    pub vip: Ipv4Addr,
    /// The addresses of its running tasks on that network; empty: connections are refused.
    pub backends: Vec<Ipv4Addr>,
}

/// A published port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Parses `PortConfig.protocol` ("" means tcp); `None` for one nftables rules here do not cover.
    pub fn parse(s: &str) -> Option<Protocol> {
        // Any case, as nftables reads it.
        match wire::Protocol::from_wire(&s.to_ascii_lowercase()).ok()? {
            wire::Protocol::Tcp => Some(Protocol::Tcp),
            wire::Protocol::Udp => Some(Protocol::Udp),
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A published port on this node and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The port accepted on every local address.
    pub published_port: u16,
    /// Backend `address:target_port`s; empty: connections are refused.
    pub backends: Vec<SocketAddrV4>,
}

/// A host-mode published port of a task running on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The port on the host.
    pub published_port: u16,
    /// The task's address reachable from the host namespace (its local bridge address).
    pub addr: Ipv4Addr,
    /// The port in the task.
    pub target_port: u16,
}

/// The running task addresses of `service_id` on the network of `view`, sorted.
fn running_addrs(view: &NetworkView, service_id: &str) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = view
        .endpoints
        .iter()
        .filter(|e| e.running && !e.task_id.is_empty() && e.service_id == service_id)
        .filter_map(|e| parse_ip(&e.addr))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The VIPs a task on `task_networks` reaches: every VIP-mode service of its networks but the
/// ingress (whose VIPs are the routing mesh's, not for tasks), first occurrence of a VIP wins.
pub fn vips_for(task_networks: &[NetworkView]) -> Vec<Vip> {
    let mut vips: Vec<Vip> = Vec::new();
    for view in task_networks {
        let ingress = view
            .network
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .is_some_and(|s| s.ingress);
        if ingress {
            continue;
        }
        for service in &view.services {
            if service.mode_kind() == Ok(EndpointMode::Dnsrr) {
                continue;
            }
            let Some(vip) = parse_ip(&service.vip) else {
                continue;
            };
            if vips.iter().any(|v| v.vip == vip) {
                continue;
            }
            vips.push(Vip {
                service_id: service.service_id.clone(),
                vip,
                backends: running_addrs(view, &service.service_id),
            });
        }
    }
    vips
}

/// The ingress-mode published ports of the services on the ingress network `ingress`, each
/// balanced over the service's running tasks (any node) at their ingress address.
pub fn ingress_port_rules(ingress: &NetworkView) -> Vec<PortRule> {
    let mut rules = Vec::new();
    for service in &ingress.services {
        let addrs = running_addrs(ingress, &service.service_id);
        for port in &service.ports {
            if !port.is_ingress() {
                continue;
            }
            let (Some(protocol), Ok(published_port), Ok(target_port)) = (
                Protocol::parse(&port.protocol),
                u16::try_from(port.published_port),
                u16::try_from(port.target_port),
            ) else {
                tracing::warn!(service_id = %service.service_id, ?port, "published port not supported; skipped");
                continue;
            };
            if published_port == 0 || target_port == 0 {
                continue;
            }
            rules.push(PortRule {
                protocol,
                published_port,
                backends: addrs
                    .iter()
                    .map(|a| SocketAddrV4::new(*a, target_port))
                    .collect(),
            });
        }
    }
    rules
}

/// The rules of host-mode ports: each goes to its one local task.
pub fn host_port_rules(ports: &[HostPort]) -> Vec<PortRule> {
    ports
        .iter()
        .map(|p| PortRule {
            protocol: p.protocol,
            published_port: p.published_port,
            backends: vec![SocketAddrV4::new(p.addr, p.target_port)],
        })
        .collect()
}

/// `add` + `delete` first: deleting a table that does not exist is an error, and the pair makes
/// the re-creation that follows replace the table in the same transaction.
fn reset_table(out: &mut String, table: &str) {
    let _ = writeln!(out, "add table ip {table}");
    let _ = writeln!(out, "delete table ip {table}");
}

/// `dnat` to one of `targets` (with their port when given), round-robin per connection.
fn dnat_to(targets: &[(Ipv4Addr, Option<u16>)]) -> String {
    match targets {
        [(ip, None)] => format!("dnat to {ip}"),
        [(ip, Some(port))] => format!("dnat to {ip}:{port}"),
        many => {
            let with_ports = many.iter().any(|(_, p)| p.is_some());
            let elements: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| match port {
                    Some(port) => format!("{i} : {ip} . {port}"),
                    None => format!("{i} : {ip}"),
                })
                .collect();
            // Address and port from one map need the `ip` family and a concatenation.
            let family = if with_ports { "ip " } else { "" };
            format!(
                "dnat {family}to numgen inc mod {} map {{ {} }}",
                many.len(),
                elements.join(", ")
            )
        }
    }
}

/// The ruleset making `vips` the whole content of `ip shoal_vip` (none: the table goes).
pub fn vip_ruleset(vips: &[Vip]) -> String {
    let mut out = String::new();
    reset_table(&mut out, VIP_TABLE);
    if vips.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {VIP_TABLE} {{");
    let _ = writeln!(out, "\tchain output {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook output priority -100; policy accept;"
    );
    for vip in vips.iter().filter(|v| !v.backends.is_empty()) {
        let targets: Vec<_> = vip.backends.iter().map(|ip| (*ip, None)).collect();
        let _ = writeln!(out, "\t\tip daddr {} {}", vip.vip, dnat_to(&targets));
    }
    let _ = writeln!(out, "\t}}");
    // NAT chains cannot refuse; a filter chain after them sees only what was not DNATed.
    let _ = writeln!(out, "\tchain refuse {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook output priority 0; policy accept;"
    );
    for vip in vips.iter().filter(|v| v.backends.is_empty()) {
        let _ = writeln!(out, "\t\tip daddr {} reject", vip.vip);
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// Rules for the same (protocol, port) merged, backends deduplicated, in port order.
fn merge(rules: &[PortRule]) -> BTreeMap<(u16, Protocol), Vec<SocketAddrV4>> {
    let mut merged: BTreeMap<(u16, Protocol), Vec<SocketAddrV4>> = BTreeMap::new();
    for rule in rules {
        let backends = merged
            .entry((rule.published_port, rule.protocol))
            .or_default();
        for b in &rule.backends {
            if !backends.contains(b) {
                backends.push(*b);
            }
        }
    }
    merged
}

/// The ruleset making `rules` the whole content of `ip shoal_ports` (none: the table goes).
/// `ingress_bridge` is this node's ingress bridge (`sbr<8>`), when it has one.
pub fn ports_ruleset(ingress_bridge: Option<&str>, rules: &[PortRule]) -> String {
    let mut out = String::new();
    reset_table(&mut out, PORTS_TABLE);
    let merged = merge(rules);
    if merged.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {PORTS_TABLE} {{");
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(
            out,
            "\t\ttype nat hook {hook} priority -100; policy accept;"
        );
        let _ = writeln!(out, "\t\tfib daddr type local jump published");
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\tchain published {{");
    for ((port, protocol), backends) in merged.iter().filter(|(_, b)| !b.is_empty()) {
        let targets: Vec<_> = backends.iter().map(|b| (*b.ip(), Some(b.port()))).collect();
        let _ = writeln!(
            out,
            "\t\t{} dport {port} {}",
            protocol.nft(),
            dnat_to(&targets)
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority 100; policy accept;"
    );
    if let Some(bridge) = ingress_bridge {
        let _ = writeln!(out, "\t\tct status dnat oifname \"{bridge}\" masquerade");
    }
    // The host's own 127.0.0.1:PORT: a loopback source cannot leave the host as it is.
    let _ = writeln!(out, "\t\tct status dnat ip saddr 127.0.0.0/8 masquerade");
    // Hairpin: a task reaching its own published port through the host would get the answer
    // straight from itself, not through the host's conntrack, unless its source is rewritten.
    let mut hairpin: Vec<String> = merged
        .values()
        .flatten()
        .map(|b| format!("{0} . {0}", b.ip()))
        .collect();
    hairpin.sort();
    hairpin.dedup();
    if !hairpin.is_empty() {
        let _ = writeln!(
            out,
            "\t\tct status dnat ip saddr . ip daddr {{ {} }} masquerade",
            hairpin.join(", ")
        );
    }
    let _ = writeln!(out, "\t}}");
    // A port with no backend is not DNATed and would reach the host's own sockets: refuse it.
    let _ = writeln!(out, "\tchain refuse {{");
    let _ = writeln!(out, "\t\ttype filter hook input priority 0; policy accept;");
    for ((port, protocol), _) in merged.iter().filter(|(_, b)| b.is_empty()) {
        let how = match protocol {
            Protocol::Tcp => "reject with tcp reset",
            Protocol::Udp => "reject",
        };
        let _ = writeln!(out, "\t\t{} dport {port} {how}", protocol.nft());
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// The ruleset removing both tables (idempotent).
pub fn cleanup_ruleset() -> String {
    let mut out = String::new();
    reset_table(&mut out, VIP_TABLE);
    reset_table(&mut out, PORTS_TABLE);
    out
}

/// Makes `ip shoal_vip` in the task namespace at `netns` balance exactly `vips`. Call whenever
/// the VIPs or running sets the task sees change (and once when it starts).
pub async fn apply_vip(task_id: &str, netns: &Path, vips: &[Vip]) -> Result<(), LbError> {
    let ruleset = vip_ruleset(vips);
    run_nft(Some(netns.to_path_buf()), ruleset, None).await?;
    tracing::info!(
        task_id,
        vips = vips.len(),
        backends = vips.iter().map(|v| v.backends.len()).sum::<usize>(),
        "VIP load balancing applied"
    );
    Ok(())
}

/// Makes `ip shoal_ports` in the host namespace (`host_netns`, or the agent's own when `None`)
/// publish exactly `rules`. Also turns on IPv4 forwarding and `route_localnet` (for
/// 127.0.0.1:PORT) when there is any rule, and `route_localnet` off again when there is none.
/// The caller puts [`super::guard`]'s loopback rule in place first.
pub async fn apply_ports(
    host_netns: Option<&Path>,
    ingress_bridge: Option<&str>,
    rules: &[PortRule],
) -> Result<(), LbError> {
    let ruleset = ports_ruleset(ingress_bridge, rules);
    run_nft(
        host_netns.map(Path::to_path_buf),
        ruleset,
        Some(!rules.is_empty()),
    )
    .await?;
    tracing::info!(
        ports = rules.len(),
        ingress_bridge,
        "published ports applied"
    );
    Ok(())
}

/// Removes `ip shoal_vip` and `ip shoal_ports` from the namespace at `netns` (the agent's own
/// when `None`), and turns `route_localnet` off; missing tables are fine.
pub async fn cleanup(netns: Option<&Path>) -> Result<(), LbError> {
    run_nft(netns.map(Path::to_path_buf), cleanup_ruleset(), Some(false)).await?;
    tracing::info!(netns = ?netns, "load-balancing tables removed");
    Ok(())
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Runs `nft -f -` with `ruleset` on a thread inside `netns` (the child inherits the thread's
/// namespace). `published`: `Some(true)` turns on the sysctls published ports need first,
/// `Some(false)` turns `route_localnet` off after the rules are gone, `None` leaves them.
async fn run_nft(
    netns: Option<PathBuf>,
    ruleset: String,
    published: Option<bool>,
) -> Result<(), LbError> {
    let label = netns
        .as_ref()
        .map_or_else(|| "host".to_string(), |p| p.display().to_string());
    // Sysctls under /proc/sys/net follow the namespace of the thread that opens them.
    let set = |path: &'static str, value: &[u8]| {
        std::fs::write(path, value).map_err(|source| LbError::Sysctl { path, source })
    };
    netns::on_thread(netns, "nft-lb", move || {
        if published == Some(true) {
            set(IP_FORWARD, b"1\n")?;
            set(ROUTE_LOCALNET, b"1\n")?;
        }
        nft_apply(&label, &ruleset)?;
        if published == Some(false) {
            set(ROUTE_LOCALNET, b"0\n")?;
        }
        Ok(())
    })
    .await?
}

fn nft_apply(label: &str, ruleset: &str) -> Result<(), LbError> {
    super::nft::apply(ruleset).map_err(|source| LbError::Nft {
        netns: label.to_string(),
        source,
    })
}

#[cfg(test)]
#[path = "lb_tests.rs"]
pub(crate) mod tests;
