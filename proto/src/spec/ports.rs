//! A service's endpoint: its mode and published ports, with docker's defaults.

use std::collections::HashSet;

use crate::v1::{EndpointSpec, PortConfig};
use crate::wire::{EndpointMode, Protocol, PublishMode};

use super::{err, SpecError};

/// The protocol of a port, with the default filled in ("tcp").
pub fn port_protocol(protocol: &str) -> &str {
    Protocol::or_default(protocol)
}

/// The publish mode of a port, with the default filled in ("ingress").
pub fn port_publish_mode(mode: &str) -> &str {
    PublishMode::or_default(mode)
}

/// The endpoint mode of a service, with the default filled in ("vip").
pub fn endpoint_mode(mode: &str) -> &str {
    EndpointMode::or_default(mode)
}

/// Checks `--endpoint-mode` and every `--publish`: ports in range, known protocol and mode, no
/// published port twice, and docker's rule that dnsrr cannot serve ingress-mode ports.
pub(super) fn validate_endpoint(ep: &EndpointSpec) -> Result<(), SpecError> {
    let mode = ep.mode_kind().map_err(|_| {
        err(
            "--endpoint-mode",
            format!(
                "unknown mode {:?} (use {})",
                ep.mode,
                EndpointMode::allowed()
            ),
        )
    })?;
    let mut published = HashSet::new();
    for p in &ep.ports {
        let (protocol, publish_mode) = validate_port(p)?;
        if p.published_port != 0 && !published.insert((p.published_port, protocol)) {
            return Err(err(
                "--publish",
                format!(
                    "published port {}/{protocol} is given twice",
                    p.published_port
                ),
            ));
        }
        if mode == EndpointMode::Dnsrr && publish_mode == PublishMode::Ingress {
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
/// host mode. Returns the protocol and publish mode with their defaults filled in.
fn validate_port(p: &PortConfig) -> Result<(Protocol, PublishMode), SpecError> {
    let protocol = p.protocol_kind().map_err(|_| {
        err(
            "--publish",
            format!(
                "unknown protocol {:?} (use {})",
                p.protocol,
                Protocol::allowed()
            ),
        )
    })?;
    let publish_mode = p.publish_mode_kind().map_err(|_| {
        err(
            "--publish",
            format!(
                "unknown mode {:?} (use {})",
                p.publish_mode,
                PublishMode::allowed()
            ),
        )
    })?;
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
    if p.published_port == 0 && publish_mode == PublishMode::Host {
        return Err(err(
            "--publish",
            format!(
                "target port {}/{protocol} in host mode needs a published port",
                p.target_port
            ),
        ));
    }
    Ok((protocol, publish_mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(protocol: &str, mode: &str) -> PortConfig {
        PortConfig {
            target_port: 80,
            published_port: 8080,
            protocol: protocol.into(),
            publish_mode: mode.into(),
            ..Default::default()
        }
    }

    fn message(ep: EndpointSpec) -> String {
        validate_endpoint(&ep).unwrap_err().to_string()
    }

    #[test]
    fn unknown_words_are_refused_listing_the_allowed_ones() {
        let ports = |p| EndpointSpec {
            ports: vec![p],
            ..Default::default()
        };
        assert_eq!(
            message(ports(port("sctp", ""))),
            "--publish: unknown protocol \"sctp\" (use tcp or udp)"
        );
        assert_eq!(
            message(ports(port("", "local"))),
            "--publish: unknown mode \"local\" (use ingress or host)"
        );
        assert_eq!(
            message(EndpointSpec {
                mode: "rr".into(),
                ..Default::default()
            }),
            "--endpoint-mode: unknown mode \"rr\" (use vip or dnsrr)"
        );
        // Case matters, as on the wire.
        assert!(validate_endpoint(&ports(port("TCP", ""))).is_err());
    }

    #[test]
    fn defaults_fill_in_for_the_checks_and_for_display() {
        let ep = EndpointSpec {
            ports: vec![port("", ""), port("udp", "")],
            ..Default::default()
        };
        validate_endpoint(&ep).unwrap();
        assert_eq!(
            message(EndpointSpec {
                ports: vec![port("", ""), port("tcp", "")],
                ..Default::default()
            }),
            "--publish: published port 8080/tcp is given twice"
        );
        assert_eq!(
            (port_protocol(""), port_publish_mode(""), endpoint_mode("")),
            ("tcp", "ingress", "vip")
        );
    }
}
