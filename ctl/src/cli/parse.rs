//! Value parsers of the flags: each returns the flag's value or a reason clap prints.

use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::security;
use shoal_proto::spec::{self, port_protocol, port_publish_mode};
use shoal_proto::units;
use shoal_proto::v1::{DeviceMapping, NetworkAttachmentConfig, PortConfig, Ulimit};
use shoal_proto::wire::{Protocol, PublishMode};

/// Parses a replica count: a whole number from 0 to the limit of replicas per service.
pub fn parse_replicas(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = match parse_non_negative(t) {
        Ok(n) => n,
        // Digits only, yet no u64: far over the limit, and the limit is what the user needs.
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => u64::MAX,
        Err(e) => return Err(e),
    };
    spec::check_replicas(n).map_err(|_| {
        format!(
            "{t} is more than the limit of {} replicas per service",
            shoal_proto::limits::MAX_REPLICAS
        )
    })?;
    Ok(n)
}

pub(super) fn parse_max_attempts(s: &str) -> Result<u64, String> {
    parse_non_negative(s)
}

pub(super) fn parse_non_negative(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.parse::<i128>() {
        Ok(n) if n < 0 => Err("must be 0 or more".into()),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{t:?} is too large")),
        Err(_) => Err(format!(
            "invalid number {t:?}: expected a whole number, 0 or more"
        )),
    }
}

pub(super) fn parse_pids(s: &str) -> Result<i64, String> {
    let n = parse_non_negative(s)?;
    i64::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

pub(super) fn parse_size(s: &str) -> Result<i64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("invalid size {s:?}: must not be negative"));
    }
    units::parse_bytes(s).map_err(|e| e.to_string())
}

pub(super) fn parse_cpus(s: &str) -> Result<i64, String> {
    units::parse_nano_cpus(s).map_err(|e| e.to_string())
}

pub(super) fn parse_duration(s: &str) -> Result<i64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    units::parse_duration_ns(s).map_err(|e| e.to_string())
}

pub(super) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let ns = parse_duration(s)?;
    Ok(Duration::from_nanos(ns.unsigned_abs()))
}

pub(super) fn parse_env(s: &str) -> Result<String, String> {
    spec::check_env_entry(s)?;
    Ok(s.to_string())
}

/// Parses `--placement-pref spread=node.labels.K` (also node.id, node.hostname, node.role,
/// engine.labels.K).
pub fn parse_placement_pref(s: &str) -> Result<String, String> {
    shoal_proto::spec::parse_placement_pref(s)
        .map(|key| format!("spread={key}"))
        .map_err(|e| e.reason)
}

/// Parses a node label `K=V` of `--label-add` (the value may be empty).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    spec::check_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses a label key: not empty, no whitespace, no `=`, within the key length limit.
pub fn parse_label_key(s: &str) -> Result<String, String> {
    spec::check_label_key(s)?;
    Ok(s.to_string())
}

/// One `--security-opt` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `no-new-privileges[=true|false]`: PR_SET_NO_NEW_PRIVS for the container's process.
    NoNewPrivileges(bool),
    /// `seccomp=default`: docker's default profile.
    SeccompDefault,
    /// `seccomp=unconfined`: no seccomp filter.
    SeccompUnconfined,
    /// `seccomp=PATH.json`: a profile in docker's JSON format, read by shoalctl.
    SeccompProfile(PathBuf),
}

/// Parses `--security-opt`: `no-new-privileges[=true|false]` or
/// `seccomp=default|unconfined|PATH.json` (docker's older `KEY:VALUE` spelling too).
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    let t = s.trim();
    let (key, value) = match t.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => match t.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (t, None),
        },
    };
    match (key, value) {
        ("no-new-privileges", None) => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", Some(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(SecurityOpt::NoNewPrivileges(true)),
            "false" | "0" => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => Err(format!("no-new-privileges takes true or false, not {v:?}")),
        },
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        ("seccomp", Some("default" | "builtin")) => Ok(SecurityOpt::SeccompDefault),
        ("seccomp", Some(path)) if !path.trim().is_empty() => {
            Ok(SecurityOpt::SeccompProfile(PathBuf::from(path)))
        }
        ("seccomp", _) => Err(
            "seccomp needs a value: seccomp=default, seccomp=unconfined or seccomp=PATH.json"
                .into(),
        ),
        _ => Err(format!(
            "unsupported security option {key:?}: only no-new-privileges and seccomp are supported"
        )),
    }
}

/// A command line split like a shell does (`--entrypoint "/bin/sh -c"`); empty resets to the
/// image's entrypoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entrypoint(pub Vec<String>);

/// Parses `--entrypoint`: shell-style words, quotes respected.
pub fn parse_entrypoint(s: &str) -> Result<Entrypoint, String> {
    shlex::split(s)
        .map(Entrypoint)
        .ok_or_else(|| format!("{s:?} has an unterminated quote or a trailing backslash"))
}

/// Parses `--cap-add`/`--cap-drop` of `service create`: a capability name, with or without
/// `CAP_`, any case, or ALL; normalized to `CAP_NAME` as docker stores it.
pub fn parse_capability(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("ALL") {
        return Ok("ALL".into());
    }
    security::capability_number(t)
        .and_then(security::capability_name)
        .map(str::to_string)
        .ok_or_else(|| {
            format!("unknown capability {s:?} (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")
        })
}

/// Parses `--cap-add`/`--cap-drop` of `service update`: as for create, plus RESET (clears the
/// list before the others apply).
pub fn parse_capability_update(s: &str) -> Result<String, String> {
    if s.trim().eq_ignore_ascii_case("RESET") {
        return Ok("RESET".into());
    }
    parse_capability(s).map_err(|e| e.replace(", or ALL)", ", ALL or RESET)"))
}

/// Parses `--device HOST[:CONTAINER][:PERMS]` as docker does: a second part that is a valid
/// permission string is the permissions, otherwise the container path.
pub fn parse_device(s: &str) -> Result<DeviceMapping, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let is_perms = |p: &str| spec::validate_device_permissions(p).is_ok();
    let (host, container, perms) = match parts[..] {
        [host] => (host, host, "rwm"),
        [host, second] if is_perms(second) => (host, host, second),
        [host, container] => (host, container, "rwm"),
        [host, container, perms] => (host, container, perms),
        _ => {
            return Err(format!(
                "{s:?} is not HOST[:CONTAINER[:PERMS]] (e.g. /dev/fuse or /dev/sda:/dev/xvda:r)"
            ))
        }
    };
    for (what, path) in [("host", host), ("container", container)] {
        if !path.starts_with('/') {
            return Err(format!(
                "{what} path {path:?} must be absolute (e.g. /dev/fuse)"
            ));
        }
    }
    spec::validate_device_permissions(perms)?;
    Ok(DeviceMapping {
        path_on_host: host.to_string(),
        path_in_container: container.to_string(),
        cgroup_permissions: perms.to_string(),
    })
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (docker's names, -1 unlimited).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    security::parse_ulimit(s).map(|(name, soft, hard)| Ulimit { name, soft, hard })
}

/// Parses `--sysctl K=V`; only namespaced keys (net.*, fs.mqueue.*, kernel IPC) are accepted.
pub fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. net.core.somaxconn=1024)"))?;
    let k = k.trim();
    security::validate_sysctl(k)?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses `--stop-signal`: a signal name (SIGTERM, TERM) or number.
pub fn parse_stop_signal(s: &str) -> Result<String, String> {
    let t = s.trim();
    match security::signal_number(t) {
        Some(_) => Ok(t.to_string()),
        None => Err(format!(
            "unknown signal {s:?} (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)"
        )),
    }
}

pub(super) fn parse_stop_signal_or_reset(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    parse_stop_signal(s)
}

/// Parses `--log-driver`: json-file is the only driver the agent writes.
pub fn parse_log_driver(s: &str) -> Result<String, String> {
    if s.trim() == spec::LOG_DRIVER {
        Ok(spec::LOG_DRIVER.to_string())
    } else {
        Err(format!(
            "unsupported log driver {s:?} (only {} is supported)",
            spec::LOG_DRIVER
        ))
    }
}

/// Parses `--log-opt max-size=SIZE` (b, k, m, g) or `--log-opt max-file=N` (1 or more).
pub fn parse_log_opt(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. max-size=10m)"))?;
    let (k, v) = (k.trim(), v.trim());
    match k {
        "max-size" => spec::parse_log_size(v).map(|_| ())?,
        "max-file" => spec::parse_log_max_file(v).map(|_| ())?,
        other => {
            return Err(format!(
                "unknown option {other:?} of the {} log driver (use {})",
                spec::LOG_DRIVER,
                spec::LOG_OPTIONS.join(" or ")
            ))
        }
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses `SERVICE=REPLICAS` of `service scale`.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=REPLICAS (e.g. web=3)"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no service name (e.g. web=3)"));
    }
    let n = match parse_non_negative(n) {
        Err(e) if n.trim_start().starts_with('-') => return Err(format!("{s:?}: replicas {e}")),
        _ => parse_replicas(n).map_err(|e| format!("{s:?}: replicas {e}"))?,
    };
    Ok((name.to_string(), n))
}

/// Parses a `--opt KEY[=VALUE]` of `network create`.
pub fn parse_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("{s:?} has no option name (e.g. encrypted)"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `k=v,k=v` pairs of the long forms of --network and --publish.
pub(super) fn pairs(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split(',')
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{part:?} in {s:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Parses `--network NAME` or `--network name=NAME,alias=A[,alias=B]`.
pub fn parse_network(s: &str) -> Result<NetworkAttachmentConfig, String> {
    if !s.contains('=') {
        let name = s.trim();
        if name.is_empty() {
            return Err("a network name is required".into());
        }
        return Ok(NetworkAttachmentConfig {
            target: name.to_string(),
            aliases: Vec::new(),
        });
    }
    let mut cfg = NetworkAttachmentConfig::default();
    for (k, v) in pairs(s)? {
        match k {
            "name" | "target" => cfg.target = v.to_string(),
            "alias" => cfg.aliases.push(v.to_string()),
            other => {
                return Err(format!(
                    "unknown key {other:?} in {s:?} (use name=NETWORK and alias=NAME)"
                ))
            }
        }
    }
    if cfg.target.is_empty() {
        return Err(format!("{s:?} has no name=NETWORK"));
    }
    Ok(cfg)
}

pub(super) fn parse_port(what: &str, s: &str) -> Result<u32, String> {
    if s.contains('-') {
        return Err(format!(
            "{what} port {s:?}: port ranges are not supported, publish each port"
        ));
    }
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("invalid {what} port {s:?}: expected a number 1-65535"))
}

/// A `protocol=` or `/proto` as given, in any case; returns the wire spelling.
pub(super) fn parse_protocol(s: &str) -> Result<String, String> {
    let word = s.trim().to_ascii_lowercase();
    word.parse::<Protocol>()
        .map(|p| p.as_str().to_string())
        .map_err(|_| format!("unknown protocol {word:?} (use tcp or udp)"))
}

/// A `mode=` as given, in any case; returns the wire spelling.
pub(super) fn parse_publish_mode(s: &str) -> Result<String, String> {
    let word = s.trim().to_ascii_lowercase();
    word.parse::<PublishMode>()
        .map(|m| m.as_str().to_string())
        .map_err(|_| format!("unknown mode {word:?} (use ingress or host)"))
}

/// Which ports `--publish-rm` removes: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMatch {
    /// The published port.
    pub published: Option<u32>,
    /// The target port.
    pub target: Option<u32>,
    /// "tcp" | "udp"; any when not given.
    pub protocol: Option<String>,
    /// "ingress" | "host"; any when not given.
    pub mode: Option<String>,
}

impl PortMatch {
    /// True if `p` is one of the ports this names.
    pub fn matches(&self, p: &PortConfig) -> bool {
        self.published.is_none_or(|x| x == p.published_port)
            && self.target.is_none_or(|x| x == p.target_port)
            && self
                .protocol
                .as_deref()
                .is_none_or(|x| x == port_protocol(&p.protocol))
            && self
                .mode
                .as_deref()
                .is_none_or(|x| x == port_publish_mode(&p.publish_mode))
    }
}

impl std::fmt::Display for PortMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.published {
            parts.push(format!("published={p}"));
        }
        if let Some(t) = self.target {
            parts.push(format!("target={t}"));
        }
        if let Some(p) = &self.protocol {
            parts.push(format!("protocol={p}"));
        }
        if let Some(m) = &self.mode {
            parts.push(format!("mode={m}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// The fields of a short or long port form, before defaults.
pub(super) fn parse_port_fields(s: &str) -> Result<PortMatch, String> {
    let mut m = PortMatch::default();
    if s.contains('=') {
        for (k, v) in pairs(s)? {
            match k {
                "published" => m.published = Some(parse_port("published", v)?),
                "target" => m.target = Some(parse_port("target", v)?),
                "protocol" => m.protocol = Some(parse_protocol(v)?),
                "mode" => m.mode = Some(parse_publish_mode(v)?),
                other => {
                    return Err(format!(
                        "unknown key {other:?} in {s:?} (use published, target, protocol, mode)"
                    ))
                }
            }
        }
        return Ok(m);
    }
    let (ports, protocol) = match s.split_once('/') {
        Some((ports, proto)) => (ports, Some(parse_protocol(proto)?)),
        None => (s, None),
    };
    m.protocol = protocol;
    let parts: Vec<&str> = ports.split(':').collect();
    match parts[..] {
        [target] => m.target = Some(parse_port("target", target)?),
        [published, target] => {
            m.published = Some(parse_port("published", published)?);
            m.target = Some(parse_port("target", target)?);
        }
        _ => {
            return Err(format!(
                "{s:?} is not PUBLISHED:TARGET[/PROTOCOL] (binding to one address is not supported)"
            ))
        }
    }
    Ok(m)
}

/// Parses `-p/--publish`: `8080:80`, `8080:80/udp`, `80` (the manager picks the published
/// port), or `published=8080,target=80,protocol=tcp|udp,mode=ingress|host`.
pub fn parse_publish(s: &str) -> Result<PortConfig, String> {
    let m = parse_port_fields(s)?;
    let target = m
        .target
        .ok_or_else(|| format!("{s:?} has no target port (e.g. published=8080,target=80)"))?;
    Ok(PortConfig {
        name: String::new(),
        protocol: m
            .protocol
            .unwrap_or_else(|| Protocol::default().as_str().into()),
        target_port: target,
        published_port: m.published.unwrap_or(0),
        publish_mode: m
            .mode
            .unwrap_or_else(|| PublishMode::default().as_str().into()),
    })
}

/// Parses `--publish-rm`: `8080` and `8080/udp` name a published port; `8080:80[/udp]` and the
/// long form `published=8080,protocol=udp` name it more closely.
pub fn parse_publish_rm(s: &str) -> Result<PortMatch, String> {
    let mut m = parse_port_fields(s)?;
    if !s.contains('=') && !s.contains(':') {
        // A bare number is the published port (the one users see and remember).
        m.published = m.target.take();
    }
    if m.published.is_none() && m.target.is_none() {
        return Err(format!("{s:?} names no port (e.g. 8080 or published=8080)"));
    }
    Ok(m)
}

/// Parses `--tail`: a number of lines, or "all" (-1).
pub fn parse_tail(s: &str) -> Result<i64, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    let n = parse_non_negative(s).map_err(|e| format!("{e} (or \"all\")"))?;
    i64::try_from(n).map_err(|_| format!("{s:?} is too large"))
}
