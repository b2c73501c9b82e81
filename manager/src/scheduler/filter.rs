//! The filter pipeline: the checks a node must pass to take a task, in the order docker runs them,
//! and the "no suitable node (...)" reason built from the nodes that failed.

use std::collections::HashMap;

use shoal_proto::spec::Constraint;
use shoal_proto::v1::{Endpoint, Node, NodeAvailability, NodeState, Platform, Resources, TaskSpec};

use super::constraint;

/// One step of the filter pipeline; the declaration order is the pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    /// The node's agent is connected and healthy (`NODE_READY`).
    Ready,
    /// The node is `active`, not paused or drained.
    Available,
    /// Enough unreserved CPU for the task's reservation.
    Cpu,
    /// Enough unreserved memory for the task's reservation.
    Memory,
    /// Every placement constraint holds.
    Constraints,
    /// The node's OS and architecture are among the task's platforms (if it names any).
    Platform,
    /// None of the task's host-mode published ports is taken on the node.
    HostPorts,
    /// Fewer tasks of this service on the node than `max_replicas_per_node`.
    MaxReplicas,
}

impl Filter {
    /// Every filter, in pipeline order.
    pub const PIPELINE: [Filter; 8] = [
        Filter::Ready,
        Filter::Available,
        Filter::Cpu,
        Filter::Memory,
        Filter::Constraints,
        Filter::Platform,
        Filter::HostPorts,
        Filter::MaxReplicas,
    ];

    /// The filters whose verdict changes as tasks are placed within one batch.
    pub const DYNAMIC: [Filter; 4] = [
        Filter::Cpu,
        Filter::Memory,
        Filter::HostPorts,
        Filter::MaxReplicas,
    ];

    /// The filters that depend only on the node and the constraints, not on what was placed.
    pub const STATIC: [Filter; 4] = [
        Filter::Ready,
        Filter::Available,
        Filter::Constraints,
        Filter::Platform,
    ];

    /// The dynamic filters that can fail for `req` (a zero reservation, no replica limit or no
    /// host port always passes): a batch checks only these on each of its candidate nodes.
    pub(crate) fn dynamic_for(req: &Requirements) -> Vec<Filter> {
        Filter::DYNAMIC
            .into_iter()
            .filter(|f| match f {
                Filter::Cpu => req.nano_cpus > 0,
                Filter::Memory => req.memory_bytes > 0,
                Filter::HostPorts => !req.host_ports.is_empty(),
                Filter::MaxReplicas => req.max_replicas_per_node > 0,
                _ => true,
            })
            .collect()
    }

    /// How the failure reads in a task's "no suitable node (...)" message.
    pub fn reason(self) -> &'static str {
        match self {
            Filter::Ready => "node not ready",
            Filter::Available => "node not available (paused or drained)",
            Filter::Cpu => "insufficient cpu",
            Filter::Memory => "insufficient memory",
            Filter::Constraints => "constraint not met",
            Filter::Platform => "unsupported platform",
            Filter::HostPorts => "host-mode port already in use",
            Filter::MaxReplicas => "max replicas per node reached",
        }
    }

    /// Whether `node`, already holding `service_tasks` tasks of the service, passes this filter.
    pub(crate) fn passes(self, node: &NodeInfo, req: &Requirements, service_tasks: u32) -> bool {
        match self {
            Filter::Ready => node.ready,
            Filter::Available => node.active,
            // A zero reservation fits anywhere, even on an oversubscribed node.
            Filter::Cpu => req.nano_cpus <= 0 || req.nano_cpus <= node.free_cpu,
            Filter::Memory => req.memory_bytes <= 0 || req.memory_bytes <= node.free_memory,
            Filter::Constraints => constraint::matches_all(&req.constraints, &node.node),
            Filter::Platform => platform_matches(&req.platforms, &node.node),
            Filter::HostPorts => req
                .host_ports
                .iter()
                .all(|p| !node.host_ports.contains_key(p)),
            Filter::MaxReplicas => {
                req.max_replicas_per_node == 0
                    || u64::from(service_tasks) < req.max_replicas_per_node
            }
        }
    }
}

/// Architecture names as images spell them (GOARCH) for the names nodes report (Rust's
/// `std::env::consts::ARCH`, uname): "x86_64" is "amd64", "aarch64" is "arm64".
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        "armv7l" | "armhf" => "arm",
        other => other,
    }
}

/// Whether `node` runs one of `platforms` (an empty OS or architecture matches any; no
/// platforms at all: every node).
fn platform_matches(platforms: &[Platform], node: &Node) -> bool {
    if platforms.is_empty() {
        return true;
    }
    let (os, arch) = node
        .description
        .as_ref()
        .map_or(("", ""), |d| (d.os.as_str(), d.architecture.as_str()));
    platforms.iter().any(|p| {
        (p.os.is_empty() || p.os.eq_ignore_ascii_case(os))
            && (p.architecture.is_empty()
                || normalize_arch(&p.architecture.to_ascii_lowercase())
                    == normalize_arch(&arch.to_ascii_lowercase()))
    })
}

/// The first filter of the pipeline that `node` fails, if any.
pub(crate) fn first_failure(
    node: &NodeInfo,
    req: &Requirements,
    service_tasks: u32,
) -> Option<Filter> {
    Filter::PIPELINE
        .into_iter()
        .find(|f| !f.passes(node, req, service_tasks))
}

/// The scheduler's view of one node: the node plus what is left of it.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub(crate) node: Node,
    pub(crate) ready: bool,
    pub(crate) active: bool,
    /// Capacity minus the reservations of the tasks occupying the node (may go negative when
    /// tasks were placed before the node shrank).
    pub(crate) free_cpu: i64,
    pub(crate) free_memory: i64,
    /// Tasks of every service occupying the node.
    pub(crate) tasks: u32,
    /// Host-mode published ports of the node's tasks that have not ended, with how many tasks
    /// hold each (more than one only if the store already had a conflict).
    pub(crate) host_ports: HashMap<HostPort, u32>,
}

/// A port a task publishes in host mode: it listens on the node itself, so one task per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Its transport protocol.
    pub protocol: Protocol,
    /// The port on the node.
    pub port: u32,
}

/// A published port's protocol (the wire vocabulary's).
pub use shoal_proto::wire::Protocol;

/// The host-mode ports a task publishes, from the endpoint the allocator gave it. A host-mode
/// port published as 0 takes whatever port the node has free: it conflicts with nothing.
pub fn host_ports(endpoint: Option<&Endpoint>) -> Vec<HostPort> {
    let Some(endpoint) = endpoint else {
        return Vec::new();
    };
    let ports = if endpoint.ports.is_empty() {
        endpoint.spec.as_ref().map_or(&[][..], |s| &s.ports[..])
    } else {
        &endpoint.ports[..]
    };
    let mut out: Vec<HostPort> = ports
        .iter()
        .filter(|p| p.is_host_mode() && p.published_port != 0)
        .map(|p| HostPort {
            // Spec validation admits tcp and udp only; read anything else as the default, as
            // the port conflicts it could cause are the safe side.
            protocol: p.protocol_kind().unwrap_or_default(),
            port: p.published_port,
        })
        .collect();
    out.sort_by_key(|p| (p.port, p.protocol as u8));
    out.dedup();
    out
}

impl NodeInfo {
    pub(crate) fn new(node: &Node) -> Self {
        let ready = node.status.as_ref().map(|s| s.state()) == Some(NodeState::NodeReady);
        let active = node
            .spec
            .as_ref()
            .map_or(NodeAvailability::AvailabilityActive, |s| s.availability())
            == NodeAvailability::AvailabilityActive;
        let capacity = node
            .description
            .as_ref()
            .and_then(|d| d.resources)
            .unwrap_or_default();
        NodeInfo {
            node: node.clone(),
            ready,
            active,
            free_cpu: capacity.nano_cpus,
            free_memory: capacity.memory_bytes,
            tasks: 0,
            host_ports: HashMap::new(),
        }
    }
}

/// What one task spec asks of a node, parsed once per batch of identical tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requirements {
    pub(crate) nano_cpus: i64,
    pub(crate) memory_bytes: i64,
    pub(crate) constraints: Vec<Constraint>,
    /// The constraints as written, then the platforms as "os/arch": batches with the same ones
    /// share the static filter results.
    pub(crate) constraints_key: Vec<String>,
    /// The platforms the image exists for; empty: any.
    pub(crate) platforms: Vec<Platform>,
    pub(crate) max_replicas_per_node: u64,
    /// Keys of `spread=` preferences, outermost first.
    pub(crate) spread: Vec<String>,
    /// Host-mode published ports (see [`host_ports`]); set from the task's endpoint.
    pub(crate) host_ports: Vec<HostPort>,
}

impl Requirements {
    /// Parses a task spec; the error is the text to put inside "no suitable node (...)".
    pub(crate) fn from_spec(spec: Option<&TaskSpec>) -> Result<Self, String> {
        let Some(spec) = spec else {
            return Ok(Requirements::default());
        };
        let res = reservations(spec);
        let placement = spec.placement.clone().unwrap_or_default();
        let constraints =
            constraint::parse_all(&placement.constraints).map_err(|e| e.to_string())?;
        let spread =
            constraint::parse_preferences(&placement.preferences).map_err(|e| e.to_string())?;
        let mut constraints_key = placement.constraints;
        constraints_key.extend(
            placement
                .platforms
                .iter()
                .map(|p| format!("platform {}/{}", p.os, p.architecture)),
        );
        Ok(Requirements {
            nano_cpus: res.nano_cpus,
            memory_bytes: res.memory_bytes,
            constraints,
            constraints_key,
            platforms: placement.platforms,
            max_replicas_per_node: placement.max_replicas_per_node,
            spread,
            host_ports: Vec::new(),
        })
    }
}

impl Requirements {
    /// The reservation a task of this spec takes from its node.
    pub(crate) fn reserved(&self) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus,
            memory_bytes: self.memory_bytes,
        }
    }
}

/// The resources a task spec reserves (zero when it reserves none).
pub(crate) fn reservations(spec: &TaskSpec) -> Resources {
    spec.resources
        .and_then(|r| r.reservations)
        .unwrap_or_default()
}

/// How many nodes failed at each filter, to explain why a task found no node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureCounts {
    counts: [usize; Filter::PIPELINE.len()],
}

impl FailureCounts {
    /// Records one node that failed `filter` (its first failing filter).
    pub fn add(&mut self, filter: Filter) {
        self.counts[filter as usize] += 1;
    }

    /// Docker's wording: `no suitable node (insufficient memory on 3 nodes; constraint not met on
    /// 1 node)`, filters in pipeline order; `no suitable node (no nodes available)` without nodes.
    pub fn reason(&self) -> String {
        let parts: Vec<String> = Filter::PIPELINE
            .into_iter()
            .filter(|f| self.counts[*f as usize] > 0)
            .map(|f| {
                let n = self.counts[f as usize];
                let noun = if n == 1 { "node" } else { "nodes" };
                format!("{} on {n} {noun}", f.reason())
            })
            .collect();
        if parts.is_empty() {
            "no suitable node (no nodes available)".to_string()
        } else {
            format!("no suitable node ({})", parts.join("; "))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_proto::v1::{
        NodeDescription, NodeRole, NodeSpec, NodeStatus, Placement, ResourceRequirements,
    };

    fn node(state: NodeState, availability: NodeAvailability) -> NodeInfo {
        NodeInfo::new(&Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                role: NodeRole::RoleWorker as i32,
                availability: availability as i32,
                labels: [("zone".to_string(), "a".to_string())].into(),
            }),
            description: Some(NodeDescription {
                hostname: "h1".into(),
                resources: Some(Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 1 << 30,
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn req(cpu: i64, mem: i64, constraints: &[&str], max: u64) -> Requirements {
        let spec = TaskSpec {
            resources: Some(ResourceRequirements {
                reservations: Some(Resources {
                    nano_cpus: cpu,
                    memory_bytes: mem,
                }),
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                max_replicas_per_node: max,
                ..Default::default()
            }),
            ..Default::default()
        };
        Requirements::from_spec(Some(&spec)).expect("valid spec")
    }

    #[test]
    fn each_filter() {
        use Filter as F;
        use NodeAvailability::*;
        use NodeState::*;
        let gib = 1i64 << 30;
        let cpus = 2_000_000_000;
        let no = &[][..];
        // (node state, availability, what the task asks, service tasks on node, first failure)
        #[rustfmt::skip]
        let cases = [
            (NodeReady, AvailabilityActive, req(0, 0, no, 0), 0, None),
            (NodeDown, AvailabilityActive, req(0, 0, no, 0), 0, Some(F::Ready)),
            (NodeUnknown, AvailabilityActive, req(0, 0, no, 0), 0, Some(F::Ready)),
            (NodeDisconnected, AvailabilityActive, req(0, 0, no, 0), 0, Some(F::Ready)),
            (NodeReady, AvailabilityPause, req(0, 0, no, 0), 0, Some(F::Available)),
            (NodeReady, AvailabilityDrain, req(0, 0, no, 0), 0, Some(F::Available)),
            (NodeDown, AvailabilityDrain, req(0, 0, no, 0), 0, Some(F::Ready)),
            (NodeReady, AvailabilityActive, req(cpus, gib, no, 0), 0, None),
            (NodeReady, AvailabilityActive, req(cpus + 1, 0, no, 0), 0, Some(F::Cpu)),
            (NodeReady, AvailabilityActive, req(0, gib + 1, no, 0), 0, Some(F::Memory)),
            (NodeReady, AvailabilityActive, req(2 * cpus, 2 * gib, no, 0), 0, Some(F::Cpu)),
            (NodeReady, AvailabilityActive, req(0, 0, &["node.labels.zone==a"], 0), 0, None),
            (NodeReady, AvailabilityActive, req(0, 0, &["node.labels.zone==b"], 0), 0, Some(F::Constraints)),
            (NodeReady, AvailabilityActive, req(0, 2 * gib, &["node.labels.zone==b"], 0), 0, Some(F::Memory)),
            (NodeReady, AvailabilityActive, req(0, 0, no, 2), 1, None),
            (NodeReady, AvailabilityActive, req(0, 0, no, 2), 2, Some(F::MaxReplicas)),
            (NodeReady, AvailabilityActive, req(0, 0, no, 0), 1000, None),
        ];
        for (i, (state, avail, r, svc, want)) in cases.into_iter().enumerate() {
            let n = node(state, avail);
            assert_eq!(first_failure(&n, &r, svc), want, "case {i}");
        }
    }

    #[test]
    fn platforms_match_the_nodes_os_and_architecture() {
        let mut n = node(NodeState::NodeReady, NodeAvailability::AvailabilityActive);
        let d = n.node.description.get_or_insert_with(Default::default);
        d.os = "linux".into();
        d.architecture = "x86_64".into();
        let with = |platforms: &[(&str, &str)]| {
            let spec = TaskSpec {
                placement: Some(Placement {
                    platforms: platforms
                        .iter()
                        .map(|(os, arch)| Platform {
                            os: os.to_string(),
                            architecture: arch.to_string(),
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Requirements::from_spec(Some(&spec)).expect("valid spec")
        };
        assert_eq!(first_failure(&n, &with(&[]), 0), None);
        assert_eq!(first_failure(&n, &with(&[("linux", "amd64")]), 0), None);
        assert_eq!(
            first_failure(&n, &with(&[("linux", "arm64"), ("linux", "amd64")]), 0),
            None
        );
        assert_eq!(first_failure(&n, &with(&[("", "")]), 0), None);
        assert_eq!(
            first_failure(&n, &with(&[("linux", "arm64")]), 0),
            Some(Filter::Platform)
        );
        assert_eq!(
            first_failure(&n, &with(&[("windows", "amd64")]), 0),
            Some(Filter::Platform)
        );
        // Batches with other platforms do not share static results.
        assert_ne!(
            with(&[("linux", "arm64")]).constraints_key,
            with(&[]).constraints_key
        );
    }

    #[test]
    fn zero_reservation_fits_an_oversubscribed_node() {
        let mut n = node(NodeState::NodeReady, NodeAvailability::AvailabilityActive);
        n.free_cpu = -1;
        n.free_memory = -1;
        assert_eq!(first_failure(&n, &req(0, 0, &[], 0), 0), None);
        assert_eq!(first_failure(&n, &req(1, 0, &[], 0), 0), Some(Filter::Cpu));
    }

    /// (protocol, published port, publish mode)
    pub(crate) type Port<'a> = (&'a str, u32, &'a str);

    /// An endpoint publishing `ports` (each to target port 80); shared with the scheduler tests.
    pub(crate) fn endpoint(ports: &[Port]) -> Endpoint {
        use shoal_proto::v1::PortConfig;
        Endpoint {
            ports: ports
                .iter()
                .map(|(protocol, published, mode)| PortConfig {
                    protocol: protocol.to_string(),
                    target_port: 80,
                    published_port: *published,
                    publish_mode: mode.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_ports_of_an_endpoint() {
        let tcp = |port| HostPort {
            protocol: Protocol::Tcp,
            port,
        };
        let udp = |port| HostPort {
            protocol: Protocol::Udp,
            port,
        };
        // (ports as (protocol, published, mode), host ports taken)
        #[rustfmt::skip]
        let cases: Vec<(Vec<Port>, Vec<HostPort>)> = vec![
            (vec![], vec![]),
            (vec![("tcp", 8080, "ingress"), ("", 8081, "")], vec![]),
            (vec![("tcp", 8080, "host")], vec![tcp(8080)]),
            (vec![("", 8080, "host")], vec![tcp(8080)]),
            (vec![("udp", 53, "host"), ("tcp", 53, "host")], vec![tcp(53), udp(53)]),
            // Published 0 in host mode: any free port of the node, never a conflict.
            (vec![("tcp", 0, "host")], vec![]),
            (vec![("tcp", 80, "host"), ("tcp", 80, "host")], vec![tcp(80)]),
        ];
        for (i, (ports, want)) in cases.into_iter().enumerate() {
            assert_eq!(host_ports(Some(&endpoint(&ports))), want, "case {i}");
        }
        assert_eq!(host_ports(None), vec![]);
        // Before the allocator filled the ports in, the spec's are used.
        let spec_only = Endpoint {
            spec: Some(shoal_proto::v1::EndpointSpec {
                ports: endpoint(&[("tcp", 80, "host")]).ports,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(host_ports(Some(&spec_only)), vec![tcp(80)]);
    }

    #[test]
    fn host_port_filter() {
        let ready = || node(NodeState::NodeReady, NodeAvailability::AvailabilityActive);
        // (ports taken on the node, ports the task publishes in host mode, passes)
        #[rustfmt::skip]
        let cases: Vec<(Vec<Port>, Vec<Port>, bool)> = vec![
            (vec![], vec![("tcp", 80, "host")], true),
            (vec![("tcp", 80, "host")], vec![], true),
            (vec![("tcp", 80, "host")], vec![("tcp", 80, "host")], false),
            (vec![("tcp", 80, "host")], vec![("udp", 80, "host")], true),
            (vec![("tcp", 80, "host")], vec![("tcp", 81, "host")], true),
            (vec![("tcp", 80, "host")], vec![("tcp", 81, "host"), ("tcp", 80, "host")], false),
            // Ingress-mode ports are the routing mesh's: they take nothing on the node.
            (vec![("tcp", 80, "host")], vec![("tcp", 80, "ingress")], true),
            (vec![("tcp", 80, "ingress")], vec![("tcp", 80, "host")], true),
        ];
        for (i, (taken, asks, passes)) in cases.into_iter().enumerate() {
            let mut n = ready();
            for p in host_ports(Some(&endpoint(&taken))) {
                n.host_ports.insert(p, 1);
            }
            let mut r = req(0, 0, &[], 0);
            r.host_ports = host_ports(Some(&endpoint(&asks)));
            let want = (!passes).then_some(Filter::HostPorts);
            assert_eq!(first_failure(&n, &r, 0), want, "case {i}");
        }
    }

    #[test]
    fn dynamic_filters_left_out_cannot_fail() {
        let mut full = node(NodeState::NodeReady, NodeAvailability::AvailabilityActive);
        full.free_cpu = -1;
        full.free_memory = -1;
        full.host_ports.insert(
            HostPort {
                protocol: Protocol::Tcp,
                port: 80,
            },
            1,
        );
        let mut ports = req(0, 0, &[], 0);
        ports.host_ports = host_ports(Some(&endpoint(&[("tcp", 80, "host")])));
        for r in [
            req(0, 0, &[], 0),
            req(1, 0, &[], 0),
            req(0, 1, &[], 1),
            ports,
        ] {
            let checked = Filter::dynamic_for(&r);
            for f in Filter::DYNAMIC {
                if !checked.contains(&f) {
                    assert!(f.passes(&full, &r, 1000), "{f:?} left out but fails");
                }
            }
        }
    }

    #[test]
    fn reason_text() {
        let cases: Vec<(Vec<Filter>, &str)> = vec![
            (vec![], "no suitable node (no nodes available)"),
            (
                vec![Filter::Constraints, Filter::Memory, Filter::Memory, Filter::Memory],
                "no suitable node (insufficient memory on 3 nodes; constraint not met on 1 node)",
            ),
            (vec![Filter::Ready], "no suitable node (node not ready on 1 node)"),
            (
                vec![Filter::HostPorts],
                "no suitable node (host-mode port already in use on 1 node)",
            ),
            (
                vec![Filter::MaxReplicas, Filter::Available, Filter::Cpu, Filter::Ready],
                "no suitable node (node not ready on 1 node; node not available (paused or drained) on 1 node; \
                 insufficient cpu on 1 node; max replicas per node reached on 1 node)",
            ),
        ];
        for (failures, want) in cases {
            let mut c = FailureCounts::default();
            for f in failures {
                c.add(f);
            }
            assert_eq!(c.reason(), want);
        }
    }

    #[test]
    fn bad_spec_is_explained() {
        let spec = TaskSpec {
            placement: Some(Placement {
                preferences: vec!["binpack".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = Requirements::from_spec(Some(&spec)).expect_err("bad preference");
        assert!(err.contains("spread=KEY"), "{err}");
    }
}
