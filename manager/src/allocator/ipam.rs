//! Address arithmetic for the allocator and for `network create`: which subnet a new network gets,
//! which VXLAN id, and which addresses of a subnet may ever be handed out. Pure functions only.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::v1::{Meta, Network, NetworkSpec};
use shoal_proto::wire::NetworkDriver;

/// The routing-mesh network made by `init`.
pub const INGRESS_SUBNET: &str = "10.0.0.0/16";
/// VXLAN id of `ingress`; user overlays get the lowest free id above it.
pub const INGRESS_VNI: u32 = 4096;
/// The agents' own node-local bridge (`shoal0`).
pub const LOCAL_BRIDGE_SUBNET: &str = "10.88.0.0/16";
/// The WireGuard mesh between nodes; `.1` is never given to a node.
pub const MESH_SUBNET: &str = "10.255.0.0/16";
/// Published ports the manager picks for `-p TARGET` (ingress mode, published port 0).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// The pool user overlay networks get a /24 from.
const OVERLAY_POOL: &str = "10.0.0.0/8";
/// Where overlay allocation starts (10.0.0.0/16 belongs to `ingress`).
const OVERLAY_POOL_START: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);
/// Ranges of the overlay pool that are never given to a user network.
const OVERLAY_POOL_SKIP: [&str; 3] = [INGRESS_SUBNET, LOCAL_BRIDGE_SUBNET, MESH_SUBNET];
/// Where user `bridge` networks without `--subnet` get a /24 from (docker's habit: 172.18 up).
const BRIDGE_POOL: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(172, 18, 0, 0), Ipv4Addr::new(172, 31, 255, 0));

fn net(s: &str) -> Ipv4Net {
    s.parse()
        .expect("the built-in subnet constants are valid CIDRs")
}

/// Whether two subnets share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The subnets of `networks` (those that have one).
pub fn subnets_of<'a>(networks: impl Iterator<Item = &'a Network>) -> Vec<Ipv4Net> {
    networks.filter_map(|n| n.subnet.parse().ok()).collect()
}

/// Why a subnet cannot be used, given the subnets already taken; `None` when it can.
pub fn subnet_conflict(subnet: &Ipv4Net, taken: &[Ipv4Net]) -> Option<String> {
    if let Some(other) = taken.iter().find(|t| overlaps(subnet, t)) {
        return Some(format!(
            "subnet {subnet} overlaps subnet {other} of another network"
        ));
    }
    let mesh = net(MESH_SUBNET);
    if overlaps(subnet, &mesh) {
        return Some(format!(
            "subnet {subnet} overlaps {mesh}, reserved for the nodes' WireGuard mesh"
        ));
    }
    None
}

/// The first free /24 for a user overlay network: from 10.1.0.0/24 up through 10.0.0.0/8,
/// skipping ingress, the local bridge, the mesh and every subnet in `taken`.
pub fn pick_overlay_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let pool = net(OVERLAY_POOL);
    let skip: Vec<Ipv4Net> = OVERLAY_POOL_SKIP.iter().map(|s| net(s)).collect();
    pick_24(
        u32::from(OVERLAY_POOL_START),
        u32::from(pool.broadcast()),
        |c| !skip.iter().chain(taken).any(|t| overlaps(c, t)),
    )
}

/// The first free /24 for a user `bridge` network without `--subnet` (172.18.0.0/24 up).
pub fn pick_bridge_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let mesh = net(MESH_SUBNET);
    pick_24(u32::from(BRIDGE_POOL.0), u32::from(BRIDGE_POOL.1), |c| {
        !taken.iter().any(|t| overlaps(c, t)) && !overlaps(c, &mesh)
    })
}

fn pick_24(first: u32, last: u32, free: impl Fn(&Ipv4Net) -> bool) -> Option<Ipv4Net> {
    (first..=last)
        .step_by(256)
        .filter_map(|a| Ipv4Net::new(Ipv4Addr::from(a), 24).ok())
        .find(|c| free(c))
}

/// The lowest VXLAN id above ingress's that no network uses.
pub fn pick_vni<'a>(networks: impl Iterator<Item = &'a Network>) -> u32 {
    let used: std::collections::BTreeSet<u32> = networks.map(|n| n.vni).collect();
    (INGRESS_VNI + 1..)
        .find(|v| !used.contains(v))
        .expect("there are fewer networks than VXLAN ids")
}

/// The first host address of a subnet (the default gateway).
pub fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// The addresses of a subnet a holder may get: all but the network, broadcast and gateway
/// addresses. Searches start after a cursor so a just-freed address is not reused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
}

impl Range {
    /// The range of `subnet` with `gateway` reserved.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Range {
        Range {
            subnet: subnet.trunc(),
            gateway,
        }
    }

    /// The range of a network object; `None` when it has no (valid) subnet.
    pub fn of_network(n: &Network) -> Option<Range> {
        let subnet: Ipv4Net = n.subnet.parse().ok()?;
        Some(Range::new(subnet, n.gateway.parse().ok()))
    }

    /// The subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// "ip/prefix", the form attachments carry.
    pub fn with_prefix(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.subnet.prefix_len())
    }

    /// How many addresses the subnet spans (network and broadcast included).
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.subnet.prefix_len()))
    }

    /// Whether `ip` may be held by a task, service or node.
    pub fn usable(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(u32::from(ip).wrapping_sub(u32::from(self.subnet.network())));
        self.subnet.contains(&ip) && off != 0 && off != self.size() - 1 && Some(ip) != self.gateway
    }

    /// The first usable address after `cursor` (an offset into the subnet), wrapping around,
    /// for which `free` holds; returns it with its offset (the next cursor).
    pub fn find(
        &self,
        cursor: u64,
        mut free: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<(Ipv4Addr, u64)> {
        let size = self.size();
        if size < 4 {
            return None; // a /31 or /32 has no host addresses besides network/broadcast
        }
        let base = u64::from(u32::from(self.subnet.network()));
        let hosts = size - 2;
        // Offsets 1..=hosts, starting right after the cursor.
        let start = cursor % hosts; // 0-based index of the offset after `cursor`
        (0..hosts)
            .map(|i| (start + i) % hosts + 1)
            .map(|off| (Ipv4Addr::from((base + off) as u32), off))
            .find(|&(ip, _)| Some(ip) != self.gateway && free(ip))
    }
}

/// The networks `init` makes: ingress, the local bridge, host and none.
pub fn predefined_networks(now_ns: i64) -> Vec<Network> {
    let make = |name: &str, driver: NetworkDriver, subnet: &str, vni: u32, ingress: bool| {
        let gateway = subnet
            .parse::<Ipv4Net>()
            .map(|s| first_host(&s).to_string())
            .unwrap_or_default();
        Network {
            id: shoal_proto::new_id(),
            meta: Some(Meta::new_at(now_ns)),
            spec: Some(NetworkSpec {
                name: name.into(),
                driver: driver.as_str().into(),
                subnet: subnet.into(),
                gateway: gateway.clone(),
                ingress,
                ..Default::default()
            }),
            subnet: subnet.into(),
            gateway,
            vni,
            predefined: true,
        }
    };
    vec![
        make(
            "ingress",
            NetworkDriver::Overlay,
            INGRESS_SUBNET,
            INGRESS_VNI,
            true,
        ),
        make(
            "bridge",
            NetworkDriver::Bridge,
            LOCAL_BRIDGE_SUBNET,
            0,
            false,
        ),
        make("host", NetworkDriver::Host, "", 0, false),
        make("none", NetworkDriver::None, "", 0, false),
    ]
}

/// The mesh address range (10.255.0.0/16 without .1).
pub fn mesh_range() -> Range {
    let subnet = net(MESH_SUBNET);
    Range::new(subnet, Some(first_host(&subnet)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn network(subnet: &str, vni: u32) -> Network {
        Network {
            subnet: subnet.into(),
            vni,
            ..Default::default()
        }
    }

    #[test]
    fn overlay_subnets_skip_reserved_and_taken() {
        // (taken, picked)
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![], "10.1.0.0/24"),
            (vec![INGRESS_SUBNET, LOCAL_BRIDGE_SUBNET], "10.1.0.0/24"),
            (vec!["10.1.0.0/24"], "10.1.1.0/24"),
            (vec!["10.1.0.0/24", "10.1.2.0/24"], "10.1.1.0/24"),
            (vec!["10.1.0.0/16"], "10.2.0.0/24"),
            (vec!["10.1.0.0/23"], "10.1.2.0/24"),
            (vec!["10.0.0.0/9"], "10.128.0.0/24"),
            // 10.88.0.0/16 and 10.255.0.0/16 are skipped even when no network holds them.
            (
                vec![
                    "10.1.0.0/16",
                    "10.2.0.0/15",
                    "10.4.0.0/14",
                    "10.8.0.0/13",
                    "10.16.0.0/12",
                    "10.32.0.0/11",
                    "10.64.0.0/12",
                    "10.80.0.0/13",
                ],
                "10.89.0.0/24",
            ),
        ];
        for (taken, want) in cases {
            let taken: Vec<Ipv4Net> = taken.into_iter().map(n).collect();
            assert_eq!(
                pick_overlay_subnet(&taken),
                Some(n(want)),
                "taken {taken:?}"
            );
        }
        let mut almost_all = vec![n("10.0.0.0/9"), n("10.128.0.0/10"), n("10.192.0.0/11")];
        almost_all.extend(
            [
                "10.224.0.0/12",
                "10.240.0.0/13",
                "10.248.0.0/14",
                "10.252.0.0/15",
                "10.254.0.0/16",
            ]
            .map(n),
        );
        assert_eq!(
            pick_overlay_subnet(&almost_all),
            None,
            "the pool is exhausted"
        );
    }

    #[test]
    fn bridge_subnets_start_at_172_18() {
        assert_eq!(pick_bridge_subnet(&[]), Some(n("172.18.0.0/24")));
        assert_eq!(
            pick_bridge_subnet(&[n("172.18.0.0/24"), n("172.16.0.0/12")]),
            None,
            "everything from 172.18 to 172.31 overlaps 172.16.0.0/12"
        );
        assert_eq!(
            pick_bridge_subnet(&[n("172.18.0.0/16")]),
            Some(n("172.19.0.0/24"))
        );
    }

    #[test]
    fn conflicts_name_the_overlap() {
        let taken = [n("10.1.0.0/24")];
        assert!(subnet_conflict(&n("10.1.0.128/25"), &taken).is_some());
        assert!(subnet_conflict(&n("10.0.0.0/8"), &taken).is_some());
        assert!(
            subnet_conflict(&n("10.255.3.0/24"), &taken).is_some_and(|e| e.contains("WireGuard"))
        );
        assert_eq!(subnet_conflict(&n("10.1.1.0/24"), &taken), None);
    }

    #[test]
    fn vnis_are_the_lowest_free_above_ingress() {
        let nets = [network("", 0), network(INGRESS_SUBNET, 4096)];
        assert_eq!(pick_vni(nets.iter()), 4097);
        let nets = [network("", 4096), network("", 4097), network("", 4099)];
        assert_eq!(pick_vni(nets.iter()), 4098);
    }

    #[test]
    fn ranges_never_give_network_gateway_or_broadcast() {
        let r = Range::new(n("10.1.0.0/29"), Some(Ipv4Addr::new(10, 1, 0, 1)));
        let mut got = Vec::new();
        let mut cursor = 0;
        while let Some((ip, off)) = r.find(cursor, |ip| !got.contains(&ip)) {
            got.push(ip);
            cursor = off;
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|d| Ipv4Addr::new(10, 1, 0, d)).collect();
        assert_eq!(got, want);
        assert!(!r.usable(Ipv4Addr::new(10, 1, 0, 0)));
        assert!(!r.usable(Ipv4Addr::new(10, 1, 0, 1)));
        assert!(!r.usable(Ipv4Addr::new(10, 1, 0, 7)));
        assert!(!r.usable(Ipv4Addr::new(10, 1, 0, 8)));
        assert!(r.usable(Ipv4Addr::new(10, 1, 0, 6)));
        // A cursor makes the search start after the last address handed out, wrapping around.
        assert_eq!(
            r.find(4, |_| true).map(|x| x.0),
            Some(Ipv4Addr::new(10, 1, 0, 5))
        );
        assert_eq!(
            r.find(6, |_| true).map(|x| x.0),
            Some(Ipv4Addr::new(10, 1, 0, 2))
        );
        assert_eq!(Range::new(n("10.1.0.0/31"), None).find(0, |_| true), None);
    }

    #[test]
    fn predefined_networks_do_not_overlap() {
        let nets = predefined_networks(1);
        let names: Vec<&str> = nets
            .iter()
            .map(|n| n.spec.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(names, ["ingress", "bridge", "host", "none"]);
        assert!(nets.iter().all(|n| n.predefined));
        assert_eq!(nets[0].gateway, "10.0.0.1");
        assert_eq!(nets[0].vni, INGRESS_VNI);
        assert!(nets[0].spec.as_ref().unwrap().ingress);
        assert_eq!(nets[1].gateway, "10.88.0.1");
        let subnets = subnets_of(nets.iter());
        assert_eq!(subnets.len(), 2);
        assert!(!overlaps(&subnets[0], &subnets[1]));
    }

    #[test]
    fn mesh_range_reserves_dot_one() {
        let r = mesh_range();
        assert_eq!(
            r.find(0, |_| true).map(|x| x.0),
            Some(Ipv4Addr::new(10, 255, 0, 2))
        );
        assert_eq!(r.with_prefix(Ipv4Addr::new(10, 255, 0, 2)), "10.255.0.2/16");
    }
}
