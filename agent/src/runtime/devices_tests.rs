//! Tests of device mappings and the cgroup device rules.

use super::*;

fn lines(rules: &[DeviceRule]) -> Vec<String> {
    rules.iter().map(|r| r.to_string()).collect()
}

fn node(kind: char, major: u64, minor: u64, permissions: &str) -> DeviceNode {
    DeviceNode {
        path: PathBuf::from("/dev/x"),
        kind,
        major,
        minor,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
        permissions: permissions.to_string(),
    }
}

#[test]
fn default_list_is_exactly_dockers_minus_tun() {
    let rules = default_rules();
    assert!(!rules[0].allow);
    assert!(rules[1..].iter().all(|r| r.allow));
    assert_eq!(
        lines(&rules),
        [
            "a *:* rwm",
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        ]
    );
}

#[test]
fn rules_for_privileged_and_requested_devices() {
    assert_eq!(
        rules_for(&[node('b', 8, 0, "r")], true),
        vec![DeviceRule::allow_all()]
    );
    let rules = rules_for(
        &[
            node('c', 10, 229, "rw"),
            node('b', 8, 0, "r"),
            node('p', 0, 0, "r"),
        ],
        false,
    );
    let mut want = lines(&default_rules());
    want.extend(["c 10:229 rw".to_string(), "b 8:0 r".to_string()]);
    assert_eq!(lines(&rules), want);
    assert_eq!(rules_for(&[], false), default_rules());
}

#[test]
fn permissions_are_a_nonempty_subset_of_rwm() {
    for ok in ["r", "w", "m", "rw", "rwm", "mwr"] {
        assert!(validate_permissions(ok).is_ok(), "{ok}");
    }
    for bad in ["", "x", "rr", "rwmx", "R", " r"] {
        let err = validate_permissions(bad).unwrap_err();
        assert!(
            err.to_string().contains("subset of \"rwm\""),
            "{bad}: {err}"
        );
    }
}

#[test]
fn v1_writes_deny_all_then_allows() {
    let writes = v1_writes(&default_rules()).unwrap();
    assert_eq!(writes[0], ("devices.deny", "a *:* rwm".to_string()));
    assert_eq!(writes[1], ("devices.allow", "c *:* m".to_string()));
    assert_eq!(writes.len(), 12);
    assert!(writes[1..].iter().all(|(file, _)| *file == "devices.allow"));
    assert_eq!(
        v1_writes(&[DeviceRule::allow_all()]).unwrap(),
        vec![("devices.allow", "a *:* rwm".to_string())]
    );
    let partial_a = DeviceRule::allow(DeviceKind::All, None, None, "r");
    assert!(v1_writes(&[partial_a]).is_err());
    let huge = DeviceRule::allow(DeviceKind::Char, Some(1 << 40), None, "r");
    assert!(v1_writes(&[huge]).is_err());
}

#[test]
fn decision_table_for_default_rules() {
    let rules = default_rules();
    let c = DeviceKind::Char;
    let b = DeviceKind::Block;
    let table: &[(DeviceKind, u32, u32, &str, bool)] = &[
        (c, 1, 3, "rw", true),     // null
        (c, 1, 9, "r", true),      // urandom
        (c, 5, 2, "rw", true),     // ptmx
        (c, 136, 7, "rw", true),   // a pty
        (c, 5, 1, "w", true),      // console
        (c, 10, 200, "rw", false), // tun: not in our list
        (c, 10, 229, "r", false),  // fuse
        (b, 7, 0, "r", false),     // loop0
        (b, 254, 0, "rw", false),  // a disk
        (b, 254, 0, "m", true),    // mknod is allowed
        (c, 4, 0, "m", true),
        (c, 4, 0, "rm", false),
        (c, 1, 4, "r", false), // /dev/port
    ];
    for (kind, major, minor, access, want) in table {
        assert_eq!(
            allows(&rules, *kind, *major, *minor, access),
            *want,
            "{kind:?} {major}:{minor} {access}"
        );
    }
}

#[test]
fn later_deny_refuses_any_bit_it_names() {
    let mut rules = default_rules();
    rules.push(DeviceRule {
        allow: false,
        ..DeviceRule::allow(DeviceKind::Char, Some(1), Some(3), "w")
    });
    assert!(allows(&rules, DeviceKind::Char, 1, 3, "r"));
    assert!(!allows(&rules, DeviceKind::Char, 1, 3, "w"));
    assert!(!allows(&rules, DeviceKind::Char, 1, 3, "rw"));
}

#[test]
fn program_shape_and_size() {
    // Prologue 6; `c *:* m` = type + access test + verdict = 6; `c 1:3 rwm` = type, major,
    // minor, verdict = 5; `c 136:* rwm` = 4; the deny-all becomes the final 2.
    let prog = program(&default_rules()).unwrap();
    assert_eq!(prog.len(), 6 + 2 * 6 + 8 * 5 + 4 + 2);
    let last = &prog[prog.len() - 2..];
    assert_eq!((last[0].opc, last[0].imm), (ebpf::MOV32_IMM, 0));
    assert_eq!(last[1].opc, ebpf::EXIT);
    // Privileged: one unconditional allow, nothing unreachable after it.
    let prog = program(&[DeviceRule::allow_all()]).unwrap();
    assert_eq!(prog.len(), 8);
    assert_eq!((prog[6].opc, prog[6].imm), (ebpf::MOV32_IMM, 1));
    // Rules before a catch-all are unreachable and left out.
    let prog = program(&[
        DeviceRule::allow(DeviceKind::Char, Some(1), Some(3), "rwm"),
        DeviceRule::deny_all(),
    ])
    .unwrap();
    assert_eq!(prog.len(), 8);
    assert_eq!(program_bytes(&prog).len(), 64);
}

/// Runs the program in rbpf's interpreter on one `struct bpf_cgroup_dev_ctx`.
fn run(prog: &[Insn], kind: DeviceKind, major: u32, minor: u32, access: &str) -> bool {
    let dev_type = match kind {
        DeviceKind::Char => DEV_CHAR as u32,
        DeviceKind::Block => DEV_BLOCK as u32,
        DeviceKind::All => unreachable!("requests name a kind"),
    };
    let access_type = dev_type | (access_bits(access).unwrap() << 16);
    let mut ctx = Vec::new();
    for word in [access_type, major, minor] {
        ctx.extend_from_slice(&word.to_ne_bytes());
    }
    let bytes = program_bytes(prog);
    let vm = rbpf::EbpfVmRaw::new(Some(&bytes)).unwrap();
    match vm.execute_program(&mut ctx).unwrap() {
        0 => false,
        1 => true,
        other => panic!("program returned {other}"),
    }
}

#[test]
fn program_decides_as_allows() {
    let deny = |kind, major, minor, access: &str| DeviceRule {
        allow: false,
        ..DeviceRule::allow(kind, major, minor, access)
    };
    let mut custom = default_rules();
    custom.extend([
        DeviceRule::allow(DeviceKind::Block, Some(8), None, "r"),
        deny(DeviceKind::Block, Some(8), Some(1), "r"),
        DeviceRule::allow(DeviceKind::Char, None, Some(20), "rw"),
        deny(DeviceKind::Char, Some(1), None, "w"),
    ]);
    let policies = [
        default_rules(),
        rules_for(&[node('c', 10, 229, "rw")], false),
        vec![DeviceRule::allow_all()],
        vec![DeviceRule::deny_all()],
        vec![],
        custom,
    ];
    let accesses = ["r", "w", "m", "rw", "rm", "wm", "rwm"];
    for rules in &policies {
        let prog = program(rules).unwrap();
        for kind in [DeviceKind::Char, DeviceKind::Block] {
            for major in [1, 5, 7, 8, 10, 136, 254] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 20, 229] {
                    for access in accesses {
                        assert_eq!(
                            run(&prog, kind, major, minor, access),
                            allows(rules, kind, major, minor, access),
                            "{:?}: {kind:?} {major}:{minor} {access}",
                            lines(rules)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn device_node_reads_the_host() {
    let null = device_node(Path::new("/dev/null"), Path::new("/dev/null"), "rw").unwrap();
    assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
    assert_eq!(null.permissions, "rw");
    assert_eq!(null.file_mode & 0o777, 0o666);

    let err = device_node(Path::new("/dev/nope"), Path::new("/dev/nope"), "rwm").unwrap_err();
    assert_eq!(err.to_string(), "/dev/nope: no such device on this node");
    let err = device_node(Path::new("/etc/passwd"), Path::new("/x"), "r").unwrap_err();
    assert_eq!(err.to_string(), "/etc/passwd is not a device");
    assert!(device_node(Path::new("/dev/null"), Path::new("/dev/null"), "rx").is_err());
    assert!(device_node(Path::new("/dev/null"), Path::new("dev/null"), "r").is_err());
}

#[test]
fn device_node_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("null-link");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let node = device_node(&link, Path::new("/dev/mynull"), "r").unwrap();
    assert_eq!((node.kind, node.major, node.minor), ('c', 1, 3));
    assert_eq!(node.path, PathBuf::from("/dev/mynull"));
}

#[test]
fn host_devices_lists_real_nodes_only() {
    let devices = host_devices();
    assert!(devices.iter().any(|d| d.path == Path::new("/dev/null")
        && d.kind == 'c'
        && d.major == 1
        && d.minor == 3));
    assert!(devices.iter().all(|d| d.permissions == "rwm"));
    assert!(devices.iter().all(|d| !d.path.starts_with("/dev/pts")
        && !d.path.starts_with("/dev/shm")
        && !d.path.starts_with("/dev/mqueue")
        && d.path != Path::new("/dev/console")));
    // /dev/stdin and friends are symlinks.
    assert!(devices.iter().all(|d| d.path != Path::new("/dev/stdin")));
}

#[test]
fn v1_check_names_the_missing_controller() {
    let without = CgroupMode::V1(vec![("memory".to_string(), PathBuf::from("/m"))]);
    let err = check_device_control(&without).unwrap_err();
    assert!(
        err.contains("no cgroup v1 devices controller is mounted"),
        "{err}"
    );
    let with = CgroupMode::V1(vec![("devices".to_string(), PathBuf::from("/d"))]);
    assert!(check_device_control(&with).is_ok());
}

#[test]
fn v2_check_loads_a_program() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: loading a cgroup device program needs root");
        return;
    }
    let mode = CgroupMode::V2(PathBuf::from("/sys/fs/cgroup"));
    assert_eq!(check_device_control(&mode), Ok(()));
    // The kernel's verifier accepts the real policies, not only the trivial one.
    for rules in [
        default_rules(),
        rules_for(&[node('c', 10, 229, "rw")], false),
    ] {
        load_program(&program(&rules).unwrap()).unwrap();
    }
}
