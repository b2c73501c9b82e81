//! The confinement vocabulary shared by shoalctl, the manager and the agent: capability names,
//! docker's default capability set, ulimit names, namespaced sysctls and stop signals.

/// Every capability the kernel defines, by number (`linux/capability.h`, up to CAP_CHECKPOINT_RESTORE).
pub const CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (2, "CAP_DAC_READ_SEARCH"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (9, "CAP_LINUX_IMMUTABLE"),
    (10, "CAP_NET_BIND_SERVICE"),
    (11, "CAP_NET_BROADCAST"),
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (14, "CAP_IPC_LOCK"),
    (15, "CAP_IPC_OWNER"),
    (16, "CAP_SYS_MODULE"),
    (17, "CAP_SYS_RAWIO"),
    (18, "CAP_SYS_CHROOT"),
    (19, "CAP_SYS_PTRACE"),
    (20, "CAP_SYS_PACCT"),
    (21, "CAP_SYS_ADMIN"),
    (22, "CAP_SYS_BOOT"),
    (23, "CAP_SYS_NICE"),
    (24, "CAP_SYS_RESOURCE"),
    (25, "CAP_SYS_TIME"),
    (26, "CAP_SYS_TTY_CONFIG"),
    (27, "CAP_MKNOD"),
    (28, "CAP_LEASE"),
    (29, "CAP_AUDIT_WRITE"),
    (30, "CAP_AUDIT_CONTROL"),
    (31, "CAP_SETFCAP"),
    (32, "CAP_MAC_OVERRIDE"),
    (33, "CAP_MAC_ADMIN"),
    (34, "CAP_SYSLOG"),
    (35, "CAP_WAKE_ALARM"),
    (36, "CAP_BLOCK_SUSPEND"),
    (37, "CAP_AUDIT_READ"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
    (40, "CAP_CHECKPOINT_RESTORE"),
];

/// Docker's default capabilities (CapEff `00000000a80425fb`).
pub const DEFAULT_CAPABILITIES: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// The number of a capability named `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin`.
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES
        .iter()
        .find(|(_, n)| *n == full)
        .map(|(num, _)| *num)
}

/// The `CAP_` name of a capability number.
pub fn capability_name(number: u32) -> Option<&'static str> {
    CAPABILITIES
        .iter()
        .find(|(n, _)| *n == number)
        .map(|(_, name)| *name)
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// Checks `--cap-add`/`--cap-drop` values: known capability names or `ALL`.
pub fn validate_capabilities(flag: &str, names: &[String]) -> Result<(), String> {
    for name in names {
        if !is_all(name) && capability_number(name).is_none() {
            return Err(format!(
                "{flag}: unknown capability {name:?} (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"
            ));
        }
    }
    Ok(())
}

/// The capability set of a container, as docker computes it: start from the default set (or
/// every capability when `ALL` is added), remove the dropped ones (everything when `ALL` is
/// dropped), then add the added ones. A capability both added and dropped by name is added.
/// Unknown names are ignored here (validation refuses them earlier). Sorted.
pub fn effective_capabilities(add: &[String], drop: &[String]) -> Vec<u32> {
    let all: Vec<u32> = CAPABILITIES.iter().map(|(n, _)| *n).collect();
    let mut caps: Vec<u32> = if add.iter().any(|a| is_all(a)) {
        all.clone()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    if drop.iter().any(|d| is_all(d)) {
        caps.clear();
    } else {
        let dropped: Vec<u32> = drop.iter().filter_map(|d| capability_number(d)).collect();
        caps.retain(|c| !dropped.contains(c));
    }
    if add.iter().any(|a| is_all(a)) {
        caps = all;
    } else {
        for num in add.iter().filter_map(|a| capability_number(a)) {
            if !caps.contains(&num) {
                caps.push(num);
            }
        }
    }
    caps.sort_unstable();
    caps
}

/// The ulimit names docker accepts (`RLIMIT_<NAME>` in lower case).
pub const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Parses docker's `NAME=SOFT[:HARD]` (`nofile=1024:2048`; -1 is unlimited).
pub fn parse_ulimit(s: &str) -> Result<(String, i64, i64), String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=SOFT[:HARD] (e.g. nofile=1024:2048)"))?;
    let name = name.trim().to_ascii_lowercase();
    validate_ulimit_name(&name)?;
    let parse = |v: &str| -> Result<i64, String> {
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{name}: {v:?} is not a number (-1 is unlimited)"))?;
        if n < -1 {
            return Err(format!("{name}: {n} is not a limit (-1 is unlimited)"));
        }
        Ok(n)
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (parse(s)?, parse(h)?),
        None => {
            let v = parse(values)?;
            (v, v)
        }
    };
    validate_ulimit(&name, soft, hard)?;
    Ok((name, soft, hard))
}

fn validate_ulimit_name(name: &str) -> Result<(), String> {
    if ULIMITS.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown ulimit {name:?} (one of {})",
            ULIMITS.join(", ")
        ))
    }
}

/// Checks one ulimit: a known name, and a soft limit not above the hard one (-1 = unlimited).
pub fn validate_ulimit(name: &str, soft: i64, hard: i64) -> Result<(), String> {
    validate_ulimit_name(name)?;
    let unlimited = |v: i64| v < 0;
    if soft < -1 || hard < -1 {
        return Err(format!("{name}: -1 (unlimited) is the only negative value"));
    }
    if !unlimited(hard) && (unlimited(soft) || soft > hard) {
        return Err(format!(
            "{name}: soft limit {soft} is above the hard limit {hard}"
        ));
    }
    Ok(())
}

/// Whether a sysctl is namespaced (settable for one container), as docker's list: the IPC ones
/// (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`) and `net.*`, whose network
/// namespace is the container's own.
pub fn is_namespaced_sysctl(key: &str) -> bool {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    IPC.contains(&key)
        || (key.starts_with("fs.mqueue.") && key.len() > "fs.mqueue.".len())
        || (key.starts_with("net.") && key.len() > "net.".len())
}

/// Checks a `--sysctl` key: namespaced, and a plain dotted name (it becomes a path under /proc/sys).
pub fn validate_sysctl(key: &str) -> Result<(), String> {
    let plain = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !plain {
        return Err(format!(
            "{key:?} is not a sysctl name (e.g. net.core.somaxconn)"
        ));
    }
    if !is_namespaced_sysctl(key) {
        return Err(format!(
            "{key} is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)"
        ));
    }
    Ok(())
}

/// Signals by name, for `--stop-signal`.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The number of a signal written as `SIGTERM`, `TERM`, `sigterm` or `15` (Linux x86 numbering;
/// real-time signals `RTMIN+N` included).
pub fn signal_number(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let offset = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse::<i32>().ok()?
        };
        return (0..=30).contains(&offset).then_some(34 + offset);
    }
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_set_is_dockers() {
        let mask: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c).sum();
        assert_eq!(format!("{mask:016x}"), "00000000a80425fb");
        assert_eq!(effective_capabilities(&[], &[]), DEFAULT_CAPABILITIES);
    }

    #[test]
    fn names_resolve_with_or_without_prefix() {
        assert_eq!(capability_number("NET_ADMIN"), Some(12));
        assert_eq!(capability_number("cap_sys_admin"), Some(21));
        assert_eq!(capability_number("CAP_NOPE"), None);
        assert_eq!(capability_name(21), Some("CAP_SYS_ADMIN"));
        assert!(validate_capabilities("--cap-add", &s(&["ALL", "net_raw"])).is_ok());
        let e = validate_capabilities("--cap-add", &s(&["FLY"])).unwrap_err();
        assert!(e.contains("--cap-add") && e.contains("FLY"), "{e}");
    }

    #[test]
    fn add_and_drop_follow_docker() {
        let caps = effective_capabilities(&s(&["NET_ADMIN"]), &s(&["CHOWN", "CAP_MKNOD"]));
        assert!(caps.contains(&12) && !caps.contains(&0) && !caps.contains(&27));
        assert_eq!(effective_capabilities(&[], &s(&["ALL"])), Vec::<u32>::new());
        assert_eq!(
            effective_capabilities(&s(&["NET_BIND_SERVICE"]), &s(&["all"])),
            vec![10]
        );
        assert_eq!(
            effective_capabilities(&s(&["ALL"]), &[]).len(),
            CAPABILITIES.len()
        );
    }

    #[test]
    fn ulimits_parse_and_check() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok(("nofile".into(), 1024, 2048))
        );
        assert_eq!(parse_ulimit("core=0"), Ok(("core".into(), 0, 0)));
        assert_eq!(parse_ulimit("nproc=-1"), Ok(("nproc".into(), -1, -1)));
        for bad in [
            "nofile",
            "files=1",
            "nofile=2048:1024",
            "nofile=x",
            "nofile=-2",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_namespaced_sysctls() {
        for ok in [
            "net.core.somaxconn",
            "net.ipv4.ip_forward",
            "kernel.shmmax",
            "fs.mqueue.msg_max",
        ] {
            assert!(validate_sysctl(ok).is_ok(), "{ok}");
        }
        let e = validate_sysctl("kernel.panic").unwrap_err();
        assert!(
            e.contains("kernel.panic") && e.contains("namespaced"),
            "{e}"
        );
        for bad in [
            "vm.swappiness",
            "net.",
            "net..x",
            "../x",
            "net.core/../x",
            "",
        ] {
            assert!(validate_sysctl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("quit"), Some(3));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
    }
}
