//! What the control API checks and decides about networks, pure over a [`State`]: the network
//! object a `network create` makes, name/id lookups, and the networks and ports of a service spec.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::v1::{EndpointSpec, Meta, Network, NetworkSpec, ServiceSpec};
use shoal_proto::wire::{EndpointMode, NetworkDriver, Protocol, PublishMode};
use tonic::Status;

use crate::allocator::ipam::{self, Range};
use crate::store::State;

/// Finds a network by id, name, or unique id prefix.
pub fn find_network(s: &State, name_or_id: &str) -> Result<Network, Status> {
    if let Some(n) = s
        .network(name_or_id)
        .or_else(|| s.network_by_name(name_or_id))
    {
        return Ok(n.clone());
    }
    let mut matches = s
        .networks()
        .filter(|n| !name_or_id.is_empty() && n.id.starts_with(name_or_id));
    match (matches.next(), matches.next()) {
        (Some(n), None) => Ok(n.clone()),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "network {name_or_id:?} is ambiguous: several network ids start with it"
        ))),
        _ => Err(Status::not_found(format!(
            "network {name_or_id:?} not found"
        ))),
    }
}

/// The name of a network.
pub fn network_name(n: &Network) -> &str {
    n.spec.as_ref().map_or(n.id.as_str(), |s| s.name.as_str())
}

/// The network's driver; `None` for a network without a spec or with a word this version does
/// not know, which no driver-specific rule applies to.
fn driver(n: &Network) -> Option<NetworkDriver> {
    n.spec.as_ref().and_then(|s| s.driver_kind().ok())
}

/// Whether the driver allows one network of its kind only, with no addresses (host, none).
fn is_singleton(driver: NetworkDriver) -> bool {
    matches!(driver, NetworkDriver::Host | NetworkDriver::None)
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// The network object `network create` writes for `spec`: validated, with its subnet, gateway and
/// VXLAN id decided (picked from the pools when not given).
pub fn plan_network(s: &State, mut spec: NetworkSpec, now_ns: i64) -> Result<Network, Status> {
    if spec.driver.is_empty() {
        spec.driver = NetworkDriver::default().as_str().into();
    }
    if spec.options.contains_key("encrypted") {
        spec.encrypted = true;
    }
    // The field-level checks shoalctl also makes (name, driver, CIDR form, gateway placement,
    // encryption only on overlay); what needs the store follows.
    shoal_proto::spec::validate_network(&spec).map_err(|e| invalid(e.to_string()))?;
    if s.network_by_name(&spec.name).is_some() {
        return Err(Status::already_exists(format!(
            "network name {:?} is already in use",
            spec.name
        )));
    }
    let kind = spec.driver_kind().map_err(|e| invalid(e.to_string()))?;
    let overlay = kind == NetworkDriver::Overlay;
    if spec.ingress {
        if !overlay {
            return Err(invalid(
                "--ingress: the ingress network must be an overlay network",
            ));
        }
        if let Some(other) = s
            .networks()
            .find(|n| n.spec.as_ref().is_some_and(|sp| sp.ingress))
        {
            return Err(Status::already_exists(format!(
                "--ingress: network {} is already the ingress network",
                network_name(other)
            )));
        }
    }
    if is_singleton(kind) {
        if let Some(other) = s.networks().find(|n| driver(n) == Some(kind)) {
            return Err(Status::already_exists(format!(
                "only one {} network can exist, and {} is one",
                spec.driver,
                network_name(other)
            )));
        }
        if !spec.subnet.is_empty() || !spec.gateway.is_empty() {
            return Err(invalid(format!(
                "--subnet/--gateway: a {} network has no addresses",
                spec.driver
            )));
        }
        return Ok(network(spec, String::new(), String::new(), 0, now_ns));
    }

    let taken = ipam::subnets_of(s.networks());
    let subnet = if spec.subnet.is_empty() {
        if !spec.gateway.is_empty() {
            return Err(invalid("--gateway: needs --subnet"));
        }
        let picked = if overlay {
            ipam::pick_overlay_subnet(&taken)
        } else {
            ipam::pick_bridge_subnet(&taken)
        };
        picked.ok_or_else(|| {
            Status::resource_exhausted("no free subnet left in the default pool: give --subnet")
        })?
    } else {
        let subnet: Ipv4Net = spec.subnet.parse().map_err(|e| {
            invalid(format!(
                "--subnet: {:?} is not an IPv4 CIDR: {e}",
                spec.subnet
            ))
        })?;
        if subnet.trunc() != subnet {
            return Err(invalid(format!(
                "--subnet: {subnet} is not a network address (did you mean {}?)",
                subnet.trunc()
            )));
        }
        if subnet.prefix_len() > 29 {
            return Err(invalid(format!(
                "--subnet: {subnet} is too small (at most /29)"
            )));
        }
        if let Some(why) = ipam::subnet_conflict(&subnet, &taken) {
            let owner = s
                .networks()
                .find(|n| {
                    n.subnet
                        .parse::<Ipv4Net>()
                        .is_ok_and(|o| ipam::overlaps(&o, &subnet))
                })
                .map(|n| format!(" ({})", network_name(n)))
                .unwrap_or_default();
            return Err(invalid(format!("--subnet: {why}{owner}")));
        }
        subnet
    };
    let gateway = if spec.gateway.is_empty() {
        ipam::first_host(&subnet)
    } else {
        let gw: Ipv4Addr = spec.gateway.parse().map_err(|e| {
            invalid(format!(
                "--gateway: {:?} is not an IPv4 address: {e}",
                spec.gateway
            ))
        })?;
        if !Range::new(subnet, None).usable(gw) {
            return Err(invalid(format!(
                "--gateway: {gw} is not a host address of subnet {subnet}"
            )));
        }
        gw
    };
    let vni = if overlay {
        ipam::pick_vni(s.networks())
    } else {
        0
    };
    Ok(network(
        spec,
        subnet.to_string(),
        gateway.to_string(),
        vni,
        now_ns,
    ))
}

fn network(spec: NetworkSpec, subnet: String, gateway: String, vni: u32, now_ns: i64) -> Network {
    Network {
        id: shoal_proto::new_id(),
        meta: Some(Meta::new_at(now_ns)),
        spec: Some(spec),
        subnet,
        gateway,
        vni,
        predefined: false,
    }
}

/// Why a network cannot be removed, before the store is asked (which names the services using it).
pub fn check_removable(s: &State, n: &Network) -> Result<(), Status> {
    let is_ingress = n.spec.as_ref().is_some_and(|sp| sp.ingress);
    if n.predefined && !is_ingress {
        return Err(Status::failed_precondition(format!(
            "network {} is a predefined network and cannot be removed",
            network_name(n)
        )));
    }
    if is_ingress {
        let users: Vec<&str> = s
            .services()
            .filter(|svc| {
                crate::allocator::publishes_ingress(
                    svc.spec.as_ref().and_then(|sp| sp.endpoint.as_ref()),
                )
            })
            .filter_map(|svc| svc.spec.as_ref().map(|sp| sp.name.as_str()))
            .collect();
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "network {} is the routing mesh of the ports published by service {}: \
                 remove them first",
                network_name(n),
                users.join(", ")
            )));
        }
    }
    Ok(())
}

/// Resolves the `--network` targets of `spec` (names, ids or id prefixes) to network ids and
/// checks the combination.
pub fn resolve_networks(s: &State, spec: &mut ServiceSpec) -> Result<(), Status> {
    let Some(task) = spec.task.as_mut() else {
        return Ok(());
    };
    let count = task.networks.len();
    let mut seen = HashSet::new();
    for cfg in &mut task.networks {
        let n = find_network(s, &cfg.target).map_err(|e| match e.code() {
            tonic::Code::NotFound => {
                invalid(format!("--network: network {:?} not found", cfg.target))
            }
            _ => invalid(format!("--network: {}", e.message())),
        })?;
        let name = network_name(&n).to_string();
        if n.spec.as_ref().is_some_and(|sp| sp.ingress) {
            return Err(invalid(format!(
                "--network: {name} is the routing mesh; a service joins it by publishing ports (--publish)"
            )));
        }
        if driver(&n).is_some_and(is_singleton) && count > 1 {
            return Err(invalid(format!(
                "--network: a service on the {name} network cannot be on other networks"
            )));
        }
        if !seen.insert(n.id.clone()) {
            return Err(invalid(format!("--network: {name} is given twice")));
        }
        cfg.target = n.id;
    }
    Ok(())
}

/// Checks `spec`'s endpoint (mode, ports) and fills in defaults; refuses an ingress published
/// port another service publishes. `service_id` is the service being updated, if any.
pub fn check_endpoint(
    s: &State,
    spec: &mut ServiceSpec,
    service_id: Option<&str>,
) -> Result<(), Status> {
    let Some(ep) = spec.endpoint.as_mut() else {
        return Ok(());
    };
    normalize_endpoint(ep)?;
    let mut seen = HashSet::new();
    for p in &ep.ports {
        let ingress = p.is_ingress();
        if ep.mode_kind() == Ok(EndpointMode::Dnsrr) && ingress {
            return Err(invalid(
                "--endpoint-mode dnsrr: ports cannot be published in ingress mode with it (use mode=host)",
            ));
        }
        if ingress && crate::allocator::ingress_network(s).is_none() {
            return Err(Status::failed_precondition(format!(
                "--publish: service needs ingress network, but no ingress network is present \
                 (port {}/{} is published in ingress mode): create one (shoalctl network create \
                 --driver overlay --ingress NAME) or publish with mode=host",
                p.target_port, p.protocol
            )));
        }
        if p.published_port == 0 {
            continue;
        }
        if !seen.insert((p.protocol.clone(), p.published_port, ingress)) {
            return Err(invalid(format!(
                "--publish: port {}/{} is published twice",
                p.published_port, p.protocol
            )));
        }
        if !ingress {
            continue;
        }
        let holder = s
            .ingress_port_holder(&p.protocol, p.published_port)
            .filter(|h| Some(*h) != service_id)
            .and_then(|h| s.service(h))
            .or_else(|| {
                // Also a port another service asked for and has not been given yet.
                s.services().find(|other| {
                    Some(other.id.as_str()) != service_id
                        && other
                            .spec
                            .as_ref()
                            .and_then(|sp| sp.endpoint.as_ref())
                            .is_some_and(|e| {
                                e.ports.iter().any(|q| {
                                    q.is_ingress()
                                        && q.published_port == p.published_port
                                        && q.protocol_kind() == p.protocol_kind()
                                })
                            })
                })
            });
        if let Some(other) = holder {
            let name = other
                .spec
                .as_ref()
                .map_or(other.id.as_str(), |sp| sp.name.as_str());
            return Err(invalid(format!(
                "--publish: port {}/{} is already published by service {name}",
                p.published_port, p.protocol
            )));
        }
    }
    Ok(())
}

/// Fills in the defaults (vip, tcp, ingress) and checks every value.
fn normalize_endpoint(ep: &mut EndpointSpec) -> Result<(), Status> {
    let mode = ep.mode_kind().map_err(|_| {
        invalid(format!(
            "--endpoint-mode: {:?} is not vip or dnsrr",
            ep.mode
        ))
    })?;
    ep.mode = mode.as_str().into();
    for p in &mut ep.ports {
        let protocol: Protocol = p.protocol_kind().map_err(|_| {
            invalid(format!(
                "--publish: protocol {:?} is not tcp or udp",
                p.protocol
            ))
        })?;
        let publish_mode: PublishMode = p.publish_mode_kind().map_err(|_| {
            invalid(format!(
                "--publish: mode {:?} is not ingress or host",
                p.publish_mode
            ))
        })?;
        p.protocol = protocol.as_str().into();
        p.publish_mode = publish_mode.as_str().into();
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(invalid(format!(
                "--publish: target port {} is not a port (1-65535)",
                p.target_port
            )));
        }
        if p.published_port > 65535 {
            return Err(invalid(format!(
                "--publish: published port {} is not a port (1-65535)",
                p.published_port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
