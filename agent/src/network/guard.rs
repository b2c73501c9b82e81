//! What the node's network accepts from outside: the `ip shoal_guard` table in the host namespace.
//!
//! Two doors would otherwise stay open:
//! - **Loopback.** Published ports that answer on 127.0.0.1 need `route_localnet` (see
//!   [`super::lb`]), which also lets the kernel route a packet addressed to 127.0.0.0/8 that
//!   arrived from the LAN to whatever listens on the node's loopback (CVE-2020-8558). The
//!   `loopback` chain drops every packet to or from 127.0.0.0/8 that did not arrive on `lo`, at a
//!   priority before conntrack and NAT: it sees the addresses as they came off the wire, so the
//!   replies of the node's own 127.0.0.1:PORT connections, whose destination only becomes
//!   127.0.0.1 when NAT undoes the masquerade later in the same hook, still pass.
//! - **VXLAN.** The kernel's VXLAN socket (UDP 4789, every overlay's VNI) takes datagrams from
//!   anyone and hands the inner frame to the overlay of that VNI. The `vxlan` chain accepts them
//!   only (1) from the WireGuard mesh device, whose peers are authenticated, or (2) from the
//!   underlay address of a node the views put on a plain overlay with this one; and never (3) with
//!   the VNI of an encrypted overlay or (4) to this node's mesh address unless through the mesh.
//!   Everything else to 4789 is dropped and counted in `vxlan_dropped`.
//!
//! The table is built once per agent process (deleted and re-created, so an older layout goes);
//! later updates flush and refill the chains and sets in one transaction, so the named counters
//! keep counting across peer changes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use shoal_proto::v1::NetworkView;
use shoal_proto::wire::NetworkDriver;

use super::netns::{self, NetnsError};
use super::nft::NftError;
use super::overlay::{driver, encrypted, VXLAN_PORT};
use super::parse_ip;

/// The table of the node's exposure rules.
pub const TABLE: &str = "shoal_guard";
/// The counter of packets dropped for reaching 127.0.0.0/8 from outside.
pub const LOOPBACK_COUNTER: &str = "loopback_dropped";
/// The counter of VXLAN datagrams dropped.
pub const VXLAN_COUNTER: &str = "vxlan_dropped";
/// The set of underlay addresses VXLAN is accepted from.
pub const PEERS_SET: &str = "vxlan_peers";
/// The set of VNIs that must arrive through the mesh.
pub const ENCRYPTED_SET: &str = "encrypted_vnis";

/// Errors of applying the exposure rules.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The host namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `nft` could not be run, or rejected the ruleset.
    #[error("exposure rules ({table}): {source}")]
    Nft {
        /// The table being written.
        table: &'static str,
        /// What went wrong.
        source: NftError,
    },
}

/// This node's WireGuard mesh device, while it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIf {
    /// The device (`swg<8>`).
    pub ifname: String,
    /// This node's mesh address on it.
    pub addr: Ipv4Addr,
}

/// What the `vxlan` chain lets in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Underlay addresses of the other nodes on a plain overlay with this one.
    pub vxlan_peers: BTreeSet<Ipv4Addr>,
    /// VNIs of the encrypted overlays here: accepted through the mesh only.
    pub encrypted_vnis: BTreeSet<u32>,
    /// The mesh device, when it runs.
    pub mesh: Option<MeshIf>,
}

impl Guard {
    /// The guard for `views` on node `node_id`: the peers are the nodes the plain overlays' views
    /// place endpoints on (the same entries the VXLAN FDBs are programmed from; the ingress view
    /// lists the nodes that can forward to a backend here, every node while no service is split),
    /// the encrypted VNIs those of the encrypted overlays.
    pub fn from_views(views: &[NetworkView], node_id: &str, mesh: Option<MeshIf>) -> Guard {
        let mut guard = Guard {
            mesh,
            ..Guard::default()
        };
        for view in views
            .iter()
            .filter(|v| driver(v) == Some(NetworkDriver::Overlay))
        {
            if encrypted(view) {
                if let Some(n) = &view.network {
                    guard.encrypted_vnis.insert(n.vni);
                }
                // Its endpoints' node addresses are mesh addresses: reached through the mesh only.
                continue;
            }
            guard.vxlan_peers.extend(
                view.endpoints
                    .iter()
                    .filter(|e| e.node_id != node_id)
                    .filter_map(|e| parse_ip(&e.node_addr)),
            );
        }
        guard
    }
}

/// The ruleset making `guard` the content of `ip shoal_guard`; `fresh` re-creates the table
/// (first apply of this process), otherwise chains and sets are refilled and the counters kept.
pub fn ruleset(guard: &Guard, fresh: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {TABLE}");
    if fresh {
        let _ = writeln!(out, "delete table ip {TABLE}");
        let _ = writeln!(out, "add table ip {TABLE}");
    }
    let _ = writeln!(out, "add counter ip {TABLE} {LOOPBACK_COUNTER}");
    let _ = writeln!(out, "add counter ip {TABLE} {VXLAN_COUNTER}");
    let _ = writeln!(out, "add set ip {TABLE} {PEERS_SET} {{ type ipv4_addr; }}");
    // The VNI is the 24 bits at byte 4 of the VXLAN header, which follows the 8-byte UDP header.
    let _ = writeln!(
        out,
        "add set ip {TABLE} {ENCRYPTED_SET} {{ typeof @th,96,24; }}"
    );
    // raw - 10: before conntrack (-200) and NAT (-100), see the module comment.
    let _ = writeln!(
        out,
        "add chain ip {TABLE} loopback {{ type filter hook prerouting priority -310; policy accept; }}"
    );
    // Input, not prerouting: the kernel reassembles fragments before this hook, so the UDP header
    // and the VNI are always there to be seen.
    let _ = writeln!(
        out,
        "add chain ip {TABLE} input {{ type filter hook input priority -10; policy accept; }}"
    );
    let _ = writeln!(out, "add chain ip {TABLE} vxlan");
    for chain in ["loopback", "input", "vxlan"] {
        let _ = writeln!(out, "flush chain ip {TABLE} {chain}");
    }
    let _ = writeln!(out, "flush set ip {TABLE} {PEERS_SET}");
    let _ = writeln!(out, "flush set ip {TABLE} {ENCRYPTED_SET}");

    let loopback = |rule: &str| format!("add rule ip {TABLE} loopback {rule}");
    for dir in ["daddr", "saddr"] {
        let _ = writeln!(
            out,
            "{}",
            loopback(&format!(
                "iifname != \"lo\" ip {dir} 127.0.0.0/8 counter name \"{LOOPBACK_COUNTER}\" drop"
            ))
        );
    }
    let _ = writeln!(
        out,
        "add rule ip {TABLE} input udp dport {VXLAN_PORT} jump vxlan"
    );
    let vxlan = |rule: &str| format!("add rule ip {TABLE} vxlan {rule}");
    let drop = format!("counter name \"{VXLAN_COUNTER}\" drop");
    if let Some(mesh) = &guard.mesh {
        // WireGuard has authenticated the sender, and AllowedIPs pin its source address.
        let _ = writeln!(
            out,
            "{}",
            vxlan(&format!("iifname \"{}\" accept", mesh.ifname))
        );
        let _ = writeln!(out, "{}", vxlan(&format!("ip daddr {} {drop}", mesh.addr)));
    }
    let _ = writeln!(
        out,
        "{}",
        vxlan(&format!("@th,96,24 @{ENCRYPTED_SET} {drop}"))
    );
    let _ = writeln!(out, "{}", vxlan(&format!("ip saddr @{PEERS_SET} accept")));
    let _ = writeln!(out, "{}", vxlan(&drop));

    let elements = |set: &str, items: Vec<String>| {
        if items.is_empty() {
            String::new()
        } else {
            format!("add element ip {TABLE} {set} {{ {} }}\n", items.join(", "))
        }
    };
    out.push_str(&elements(
        PEERS_SET,
        guard.vxlan_peers.iter().map(Ipv4Addr::to_string).collect(),
    ));
    out.push_str(&elements(
        ENCRYPTED_SET,
        guard.encrypted_vnis.iter().map(u32::to_string).collect(),
    ));
    out
}

/// The ruleset removing the table (idempotent).
pub fn remove_ruleset() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// The packets counted by counter `name` in `listing` (`nft list table ip shoal_guard`).
pub fn counted(listing: &str, name: &str) -> Option<u64> {
    let mut lines = listing.lines().map(str::trim);
    lines.find(|l| *l == format!("counter {name} {{"))?;
    let words: Vec<&str> = lines.next()?.split_whitespace().collect();
    match words.as_slice() {
        ["packets", n, ..] => n.parse().ok(),
        _ => None,
    }
}

/// Applies `ruleset` (one of the above) in the namespace at `host_netns` (the agent's own when
/// `None`).
pub async fn apply(host_netns: Option<PathBuf>, ruleset: String) -> Result<(), GuardError> {
    netns::on_thread(host_netns, "nft-guard", move || {
        super::nft::apply(&ruleset).map_err(|source| GuardError::Nft {
            table: TABLE,
            source,
        })
    })
    .await?
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
