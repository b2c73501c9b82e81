//! A service's endpoint: its mode and published ports, with docker's defaults.

use std::collections::HashSet;

use crate::v1::{EndpointSpec, PortConfig};

use super::{err, SpecError};

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
pub(super) fn validate_endpoint(ep: &EndpointSpec) -> Result<(), SpecError> {
    let mode = endpoint_mode(&ep.mode);
    if !matches!(mode, "vip" | "dnsrr") {
        return Err(err(
            "--endpoint-mode",
            format!("unknown mode {mode:?} (use vip or dnsrr)"),
        ));
    }
    let mut published = HashSet::new();
    for p in &ep.ports {
        let protocol = validate_port(p)?;
        if p.published_port != 0 && !published.insert((p.published_port, protocol)) {
            return Err(err(
                "--publish",
                format!(
                    "published port {}/{protocol} is given twice",
                    p.published_port
                ),
            ));
        }
        if mode == "dnsrr" && port_publish_mode(&p.publish_mode) == "ingress" {
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

/// One `--publish` on its own: known protocol and mode, ports in range, a published port in
/// host mode. Returns the protocol with its default filled in.
fn validate_port(p: &PortConfig) -> Result<&str, SpecError> {
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
    Ok(protocol)
}
