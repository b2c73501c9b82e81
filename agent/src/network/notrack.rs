//! The `shoal_overlay` nftables table: keeps what overlays bridge, and the underlay datagrams
//! that carry them, out of conntrack (see [`notrack_ruleset`] for why).

use std::net::Ipv4Addr;

/// The nftables table that keeps frames bridged across overlay bridges out of conntrack.
pub const NOTRACK_TABLE: &str = "shoal_overlay";

/// What the `shoal_overlay` table keeps out of conntrack (see [`notrack_ruleset`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Untracked {
    /// Overlay bridges in the host namespace, with the node's own address on it (the ingress
    /// bridge) if any. The others live in the overlay namespace, where no IP hook runs.
    pub bridges: Vec<(String, Option<Ipv4Addr>)>,
    /// Underlay UDP ports of the overlays: VXLAN, and the WireGuard mesh's when it runs.
    pub udp_ports: Vec<u16>,
}

/// With br_netfilter loaded (Debian's default), every frame a bridge forwards also runs the IP
/// hooks, conntrack included; and the underlay's VXLAN and WireGuard datagrams are tracked too
/// wherever the node has NAT rules. None of it needs tracking: overlay bridges only ever bridge
/// (tasks route through `shoal0`), and the underlay datagrams are never NATed. Measured here,
/// tracking cost a fifth of the overlay's throughput and 18 µs of round trip. Frames addressed to
/// the node itself (its ingress address: the routing mesh's replies) stay tracked. Only the
/// ingress bridge is still in the host namespace; the other overlays' bridges are in the overlay
/// namespace, whose frames never reach these hooks; the underlay ports are listed while any
/// overlay is here.
pub fn notrack_ruleset(u: &Untracked) -> String {
    let mut s = format!("table ip {NOTRACK_TABLE}\ndelete table ip {NOTRACK_TABLE}\n");
    if u.bridges.is_empty() && u.udp_ports.is_empty() {
        return s;
    }
    let mut pre = Vec::new();
    let plain: Vec<String> = u
        .bridges
        .iter()
        .filter(|(_, own)| own.is_none())
        .map(|(b, _)| format!("\"{b}\""))
        .collect();
    if !plain.is_empty() {
        pre.push(format!("iifname {{ {} }} notrack", plain.join(", ")));
    }
    for (b, own) in &u.bridges {
        if let Some(ip) = own {
            pre.push(format!("iifname \"{b}\" ip daddr != {ip} notrack"));
        }
    }
    let mut out = Vec::new();
    if !u.udp_ports.is_empty() {
        let ports: Vec<String> = u.udp_ports.iter().map(u16::to_string).collect();
        let rule = format!("udp dport {{ {} }} notrack", ports.join(", "));
        pre.push(rule.clone());
        out.push(rule);
    }
    let chain =
        |name: &str, hook: &str, rules: &[String]| {
            format!(
            "  chain {name} {{\n    type filter hook {hook} priority raw; policy accept;\n{}  }}\n",
            rules.iter().map(|r| format!("    {r}\n")).collect::<String>()
        )
        };
    s.push_str(&format!(
        "table ip {NOTRACK_TABLE} {{\n{}{}}}\n",
        chain("prerouting", "prerouting", &pre),
        chain("output", "output", &out)
    ));
    s
}
