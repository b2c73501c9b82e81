//! Extra `/etc/hosts` lines (`--host NAME:IP`, compose's `extra_hosts`, docker's
//! `ContainerSpec.Hosts`): stored in hosts(5)'s order, "IP_address canonical_hostname
//! [aliases...]", as swarm stores them.

use std::net::IpAddr;

use super::{err, SpecError};

/// Most extra hosts lines one service may carry.
pub const MAX_HOSTS: usize = 256;

/// `NAME:IP` (docker's `--host` and compose's `extra_hosts` list form; `NAME=IP` too, and an IPv6
/// address after the first separator, bracketed or not) as a hosts(5) line "IP NAME".
pub fn host_line_from_flag(s: &str) -> Result<String, String> {
    let (name, ip) = s
        .split_once(['=', ':'])
        .ok_or_else(|| format!("{s:?} is not NAME:IP (e.g. db.example:10.0.0.5)"))?;
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{s:?}: {name:?} is not a host name"));
    }
    let line = format!("{ip} {name}");
    check_line(&line)?;
    Ok(line)
}

/// A stored line "IP NAME [ALIAS...]" as docker's `NAME:IP` (the first name; what `--host-rm`
/// and `service inspect --pretty` use).
pub fn flag_of_line(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    let ip = words.next()?;
    let name = words.next()?;
    Some(format!("{name}:{ip}"))
}

/// One stored line: an IP address, then at least one host name, nothing that would break the
/// file (no comment, no line break).
fn check_line(line: &str) -> Result<(), String> {
    if line.contains(['\n', '\r', '#']) {
        return Err(format!(
            "{line:?}: a hosts line holds no line break or comment"
        ));
    }
    let mut words = line.split_whitespace();
    let ip = words.next().unwrap_or_default();
    ip.parse::<IpAddr>()
        .map_err(|_| format!("{line:?}: {ip:?} is not an IP address"))?;
    let mut names = 0;
    for name in words {
        names += 1;
        let valid = name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid {
            return Err(format!("{line:?}: {name:?} is not a host name"));
        }
    }
    if names == 0 {
        return Err(format!("{line:?}: no host name after the address"));
    }
    Ok(())
}

/// Every extra hosts line of a container spec.
pub fn validate_hosts(hosts: &[String]) -> Result<(), SpecError> {
    if hosts.len() > MAX_HOSTS {
        return Err(err(
            "--host",
            format!("{} entries: at most {MAX_HOSTS}", hosts.len()),
        ));
    }
    for h in hosts {
        check_line(h).map_err(|e| err("--host", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_hosts_lines() {
        assert_eq!(
            host_line_from_flag("db.example:10.0.0.5").as_deref(),
            Ok("10.0.0.5 db.example")
        );
        assert_eq!(
            host_line_from_flag("db=10.0.0.5").as_deref(),
            Ok("10.0.0.5 db")
        );
        assert_eq!(host_line_from_flag("v6:::1").as_deref(), Ok("::1 v6"));
        assert_eq!(
            host_line_from_flag("v6:[fe80::1]").as_deref(),
            Ok("fe80::1 v6")
        );
        assert!(host_line_from_flag("db").is_err());
        assert!(host_line_from_flag("db:notanip").is_err());
        assert!(host_line_from_flag("bad name:10.0.0.5").is_err());
        assert_eq!(
            flag_of_line("10.0.0.5 db alias").as_deref(),
            Some("db:10.0.0.5")
        );
    }

    #[test]
    fn stored_lines_are_checked() {
        assert!(validate_hosts(&["10.0.0.5 db alias".into(), "::1 v6".into()]).is_ok());
        for bad in [
            "10.0.0.5",
            "db 10.0.0.5",
            "10.0.0.5 db\n1.2.3.4 evil",
            "10.0.0.5 db #x",
        ] {
            let e = validate_hosts(&[bad.into()]).expect_err(bad);
            assert!(e.to_string().contains("--host"), "{e}");
        }
        let many = vec!["10.0.0.5 db".to_string(); MAX_HOSTS + 1];
        assert!(validate_hosts(&many).is_err());
    }
}
