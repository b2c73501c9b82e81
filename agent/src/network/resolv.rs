//! The `/etc/resolv.conf` a container on a bridge network gets.

use std::net::IpAddr;

/// The host's resolver configuration.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved lists the real upstream servers when /etc/resolv.conf points at its stub.
const RESOLVED_UPSTREAM_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The resolv.conf content for containers: the host's nameservers, search and options, without
/// loopback nameservers, which a container cannot reach from its own network namespace.
pub fn resolv_conf() -> String {
    let host = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let conf = resolv_conf_from(&host);
    if has_nameserver(&conf) {
        return conf;
    }
    // Only loopback servers (a local stub like systemd-resolved): use the stub's upstreams.
    match std::fs::read_to_string(RESOLVED_UPSTREAM_CONF) {
        Ok(upstream) if has_nameserver(&resolv_conf_from(&upstream)) => resolv_conf_from(&upstream),
        _ => conf,
    }
}

/// Filters a resolv.conf text: keeps `search`, `domain`, `options` and non-loopback `nameserver` lines.
pub fn resolv_conf_from(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let keep = match words.next() {
            Some("nameserver") => words
                .next()
                // A zone suffix (fe80::1%eth0) makes it unparseable: keep it, it is not loopback.
                .map(|a| a.parse::<IpAddr>().map_or(true, |ip| !ip.is_loopback()))
                .unwrap_or(false),
            Some("search" | "domain" | "options") => true,
            _ => false,
        };
        if keep {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

fn has_nameserver(conf: &str) -> bool {
    conf.lines().any(|l| l.starts_with("nameserver"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_dropped() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\n\
                    nameserver 127.1.1.1\nsearch corp.example\noptions edns0 trust-ad\nsortlist 1.2.3.4\n";
        assert_eq!(
            resolv_conf_from(host),
            "nameserver 10.1.2.3\nsearch corp.example\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn only_loopback_gives_no_nameserver() {
        assert!(!has_nameserver(&resolv_conf_from(
            "nameserver 127.0.0.53\n"
        )));
    }

    #[test]
    fn ipv6_and_scoped_servers_are_kept() {
        let out = resolv_conf_from("nameserver 2001:db8::1\nnameserver fe80::1%eth0\n");
        assert_eq!(out, "nameserver 2001:db8::1\nnameserver fe80::1%eth0\n");
    }
}
