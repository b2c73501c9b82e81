//! NAT for bridge networks with nftables, by feeding ruleset text to `nft -f -`.
//!
//! All Shoal rules live in the table `ip shoal`; each bridge network owns one chain there, so the
//! overlay networks coming later can add theirs without one network's refresh wiping another's.
//! Each ruleset is one nft transaction: applied whole or not at all, and idempotent.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

/// The nftables table holding every Shoal rule.
pub const TABLE: &str = "shoal";

/// Errors of driving `nft`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be run (not installed?).
    #[error("running nft: {source}")]
    Spawn {
        /// The I/O error.
        source: std::io::Error,
    },
    /// `nft` rejected the ruleset.
    #[error("nft failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The chain of the bridge network `bridge` (nft identifiers cannot hold every interface name character).
pub fn chain_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("nat_{safe}")
}

/// The ruleset masquerading traffic from `subnet` that leaves through any interface but `bridge`.
pub fn masquerade_ruleset(bridge: &str, subnet: Ipv4Net) -> String {
    let chain = chain_name(bridge);
    format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} {chain} {{ type nat hook postrouting priority 100; policy accept; }}\n\
         flush chain ip {TABLE} {chain}\n\
         add rule ip {TABLE} {chain} ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
    )
}

/// The ruleset removing the chain of `bridge` (creating it first, so removing twice is no error).
pub fn remove_chain_ruleset(bridge: &str) -> String {
    let chain = chain_name(bridge);
    format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} {chain}\n\
         delete chain ip {TABLE} {chain}\n"
    )
}

/// The ruleset removing the whole Shoal table (idempotent the same way).
pub fn remove_table_ruleset() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Whether the Shoal table, listed as `listing` (`nft list table ip shoal`), holds no chain any more.
pub fn table_is_empty(listing: &str) -> bool {
    !listing
        .lines()
        .any(|l| l.trim_start().starts_with("chain "))
}

/// Applies `ruleset` with `nft -f -` in the calling thread's network namespace.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn { source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|source| NftError::Spawn { source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NftError::Spawn { source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `nft list table ip shoal`, or `None` when the table does not exist.
pub fn list_table() -> Result<Option<String>, NftError> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NftError::Spawn { source })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Turns on IPv4 forwarding in the calling thread's network namespace (sysctls under
/// /proc/sys/net follow the namespace of the thread that opens them).
pub fn enable_ip_forward() -> Result<(), std::io::Error> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_ruleset_names_subnet_bridge_and_chain() {
        let subnet: Ipv4Net = "10.88.0.0/16".parse().expect("literal");
        let rules = masquerade_ruleset("shoal0", subnet);
        assert!(rules.contains("add chain ip shoal nat_shoal0 { type nat hook postrouting"));
        assert!(rules.contains("flush chain ip shoal nat_shoal0"));
        assert!(rules.contains("ip saddr 10.88.0.0/16 oifname != \"shoal0\" masquerade"));
    }

    #[test]
    fn chain_names_are_nft_identifiers() {
        assert_eq!(chain_name("br-x.1"), "nat_br_x_1");
    }

    #[test]
    fn empty_table_detection() {
        assert!(table_is_empty("table ip shoal {\n}\n"));
        assert!(!table_is_empty(
            "table ip shoal {\n\tchain nat_shoal0 {\n\t}\n}\n"
        ));
    }
}
