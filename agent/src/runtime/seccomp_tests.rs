//! Tests of the seccomp filter: profile parsing, compilation, and (as root) a filter loaded in a child.

use super::*;
use crate::runtime::caps::DEFAULT_CAPS;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

const CAP_SYS_ADMIN: u32 = 21;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether filters can be loaded here; prints why a test is skipped when they cannot.
fn can_load(test: &str) -> bool {
    match supported() {
        Ok(()) => true,
        Err(e) => {
            println!("{test} skipped: {e}");
            false
        }
    }
}

/// Forks a child that sets no_new_privs, loads `filter` and runs `checks` (raw syscalls only:
/// the parent is a multi-threaded test binary); returns the child's exit code, 0 when every
/// check passed, otherwise the number of the first that failed.
fn run_confined(filter: &CompiledFilter, checks: fn() -> i32) -> i32 {
    // SAFETY: the child only makes raw syscalls (no allocation, no locks) and leaves with _exit.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                // SAFETY: _exit never returns and runs no destructors.
                unsafe { libc::_exit(101) };
            }
            let code = match filter.load() {
                Ok(()) => checks(),
                Err(_) => 100,
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("confined child ended with {other:?}"),
        },
    }
}

fn errno() -> i32 {
    Errno::last_raw()
}

/// Whether /proc/self/status says the process runs under a seccomp filter (read with raw
/// syscalls into a stack buffer).
fn status_says_filtered() -> bool {
    // SAFETY: a NUL-terminated path literal.
    let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 16384];
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads into the unused tail of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    let needle = b"Seccomp:\t2\n";
    buf[..len].windows(needle.len()).any(|w| w == needle)
}

/// What Docker's default profile must do to a process with Docker's default capabilities.
fn default_caps_checks() -> i32 {
    // SAFETY (whole function): raw syscalls with integer or literal-string arguments.
    unsafe {
        if libc::getpid() <= 0 {
            return 1;
        }
        if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
            return 2;
        }
        let mount = libc::mount(
            c"none".as_ptr(),
            c"/nonexistent-shoal-seccomp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        );
        if mount != -1 || errno() != libc::EPERM {
            return 3;
        }
        let flags = (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong;
        let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
        if pid == 0 {
            libc::_exit(0);
        }
        if pid != -1 || errno() != libc::EPERM {
            return 4;
        }
        // A plain fork (clone without namespace flags) still works.
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
        if pid == 0 {
            libc::_exit(0);
        }
        if pid <= 0 || libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) != pid as i32 {
            return 5;
        }
        // clone3 answers ENOSYS so that libc falls back to clone, whose flags can be checked.
        if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
            return 6;
        }
        // socket: AF_UNIX allowed, AF_VSOCK (40) refused by the argument conditions.
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return 7;
        }
        libc::close(fd);
        if libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) != -1 || errno() != libc::EPERM {
            return 8;
        }
        if !status_says_filtered() {
            return 9;
        }
    }
    0
}

/// With CAP_SYS_ADMIN the profile's `includes.caps` rules let namespaces and mounts through.
fn sys_admin_checks() -> i32 {
    // SAFETY (whole function): raw syscalls with integer or literal-string arguments; the
    // namespaces are the child's own.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
            return 1;
        }
        let mount = libc::mount(
            c"none".as_ptr(),
            c"/nonexistent-shoal-seccomp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        );
        // The kernel, not the filter, answers: the mount point does not exist.
        if mount != -1 || errno() != libc::ENOENT {
            return 2;
        }
        if !status_says_filtered() {
            return 3;
        }
    }
    0
}

#[test]
fn default_profile_compiles_quickly_for_default_caps() {
    let profile = default_profile();
    // The first compile also pays for libseccomp's lazy setup.
    compile(profile, DEFAULT_CAPS).unwrap();
    let runs = 20;
    let started = Instant::now();
    let mut filter = None;
    for _ in 0..runs {
        filter = Some(compile(profile, DEFAULT_CAPS).unwrap());
    }
    let per_compile = started.elapsed() / runs;
    let filter = filter.unwrap();
    println!(
        "default profile: {} BPF instructions, compiled in {per_compile:?} (mean of {runs})",
        filter.len()
    );
    assert!(!filter.is_empty() && filter.len() <= MAX_INSTRUCTIONS);
    if std::env::consts::ARCH == "x86_64" {
        // archMap: the program checks the x86 and x32 ABIs as well (AUDIT_ARCH_I386, and x32
        // syscall numbers, which carry bit 30).
        let ks: Vec<u32> = filter.instructions().iter().map(|i| i.k).collect();
        assert!(ks.contains(&0xC000_003E), "AUDIT_ARCH_X86_64 missing");
        assert!(ks.contains(&0x4000_0003), "AUDIT_ARCH_I386 missing");
        assert!(ks.contains(&0x4000_0000), "x32 check missing");
    }
}

#[test]
fn serialized_programs_are_the_same_program() {
    let fresh = compile(default_profile(), DEFAULT_CAPS).unwrap();
    let same = |a: &CompiledFilter, b: &CompiledFilter| {
        a.flags == b.flags
            && a.len() == b.len()
            && a.instructions()
                .iter()
                .zip(b.instructions())
                .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k))
    };
    let again = compile(default_profile(), DEFAULT_CAPS).unwrap();
    assert!(same(&fresh, &again), "compiling is deterministic");
    let back = CompiledFilter::from_bytes(&fresh.to_bytes()).unwrap();
    assert!(same(&fresh, &back));
    let bytes = fresh.to_bytes();
    assert!(CompiledFilter::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(CompiledFilter::from_bytes(&bytes[..8]).is_err());
    assert!(CompiledFilter::from_bytes(&[]).is_err());
    let admin: Vec<u32> = DEFAULT_CAPS
        .iter()
        .copied()
        .chain([CAP_SYS_ADMIN])
        .collect();
    let other = compile(default_profile(), &admin).unwrap();
    assert!(!same(&fresh, &other));
}

#[test]
fn default_profile_confines_default_caps() {
    if !can_load("default_profile_confines_default_caps") {
        return;
    }
    let filter = compile(default_profile(), DEFAULT_CAPS).unwrap();
    let code = run_confined(&filter, default_caps_checks);
    assert_eq!(code, 0, "check {code} of default_caps_checks failed");
}

#[test]
fn cap_sys_admin_unlocks_namespaces_and_mount() {
    if !is_root() {
        println!(
            "cap_sys_admin_unlocks_namespaces_and_mount skipped: unshare/mount need root, running as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    if !can_load("cap_sys_admin_unlocks_namespaces_and_mount") {
        return;
    }
    let caps: Vec<u32> = DEFAULT_CAPS
        .iter()
        .copied()
        .chain([CAP_SYS_ADMIN])
        .collect();
    let filter = compile(default_profile(), &caps).unwrap();
    let code = run_confined(&filter, sys_admin_checks);
    assert_eq!(code, 0, "check {code} of sys_admin_checks failed");
}

#[test]
fn custom_profile_errno_ret_is_honoured() {
    let profile = parse_profile(
        br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","no_such_syscall_in_any_kernel"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":95},
            {"names":["rmdir"],"action":"SCMP_ACT_ERRNO"},
            {"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let filter = compile(&profile, DEFAULT_CAPS).unwrap();
    if !can_load("custom_profile_errno_ret_is_honoured") {
        return;
    }
    fn checks() -> i32 {
        // SAFETY (whole function): raw syscalls with integer or literal-string arguments.
        unsafe {
            let dir = c"/tmp/shoal-seccomp-never-created";
            if libc::syscall(libc::SYS_mkdir, dir.as_ptr(), 0o700) != -1 || errno() != libc::EPERM {
                return 1;
            }
            if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EOPNOTSUPP {
                return 2;
            }
            // SCMP_ACT_ERRNO without errnoRet is EPERM.
            if libc::syscall(libc::SYS_rmdir, dir.as_ptr()) != -1 || errno() != libc::EPERM {
                return 3;
            }
            if libc::getpid() <= 0 || !status_says_filtered() {
                return 4;
            }
        }
        0
    }
    let code = run_confined(&filter, checks);
    assert_eq!(code, 0, "check {code} of the custom profile failed");
}

#[test]
fn profile_flags_reach_the_kernel() {
    let profile = parse_profile(
        br#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let filter = compile(&profile, DEFAULT_CAPS).unwrap();
    assert_eq!(
        libc::c_ulong::from(filter.flags),
        libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    if !can_load("profile_flags_reach_the_kernel") {
        return;
    }
    fn checks() -> i32 {
        // SAFETY: a raw syscall without arguments.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        if ppid != -1 || errno() != libc::EPERM || !status_says_filtered() {
            return 1;
        }
        0
    }
    let code = run_confined(&filter, checks);
    assert_eq!(
        code, 0,
        "check {code} failed (100: the kernel refused the flags)"
    );
}

#[test]
fn supported_says_what_is_missing() {
    match supported() {
        Ok(()) => {
            // Then the kernel agrees: a process can be put in filter mode.
            let profile = parse_profile(br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
            let filter = compile(&profile, &[]).unwrap();
            assert_eq!(
                run_confined(&filter, || i32::from(!status_says_filtered())),
                0
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("seccomp filters are not supported on this machine: "));
            println!("supported_says_what_is_missing: this machine cannot load filters: {msg}");
        }
    }
}

fn rule(json: &str) -> Syscall {
    let doc = format!(r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{json}]}}"#);
    parse_profile(doc.as_bytes()).unwrap().syscalls.remove(0)
}

#[test]
fn includes_and_excludes_resolve_like_moby() {
    let v = |kernel, major| KernelVersion { kernel, major };
    let admin = [CAP_SYS_ADMIN];
    let admin_and_boot = [CAP_SYS_ADMIN, 22];
    let none: [u32; 0] = [];
    let base = r#""names":["x"],"action":"SCMP_ACT_ALLOW""#;
    // (condition, arch, caps, kernel, applies)
    let cases: &[(&str, &str, &[u32], KernelVersion, bool)] = &[
        ("", "amd64", &none, v(6, 1), true),
        (r#","includes":{}"#, "amd64", &none, v(6, 1), true),
        (
            r#","includes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "amd64",
            &admin,
            v(6, 1),
            true,
        ),
        (
            r#","includes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "amd64",
            &none,
            v(6, 1),
            false,
        ),
        // includes.caps: all of them.
        (
            r#","includes":{"caps":["CAP_SYS_ADMIN","CAP_SYS_BOOT"]}"#,
            "amd64",
            &admin,
            v(6, 1),
            false,
        ),
        (
            r#","includes":{"caps":["CAP_SYS_ADMIN","CAP_SYS_BOOT"]}"#,
            "amd64",
            &admin_and_boot,
            v(6, 1),
            true,
        ),
        // An unknown capability is never held.
        (
            r#","includes":{"caps":["CAP_FLY"]}"#,
            "amd64",
            &admin,
            v(6, 1),
            false,
        ),
        (
            r#","excludes":{"caps":["CAP_FLY"]}"#,
            "amd64",
            &admin,
            v(6, 1),
            true,
        ),
        // excludes.caps: any of them.
        (
            r#","excludes":{"caps":["CAP_SYS_BOOT","CAP_SYS_ADMIN"]}"#,
            "amd64",
            &admin,
            v(6, 1),
            false,
        ),
        (
            r#","excludes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "amd64",
            &none,
            v(6, 1),
            true,
        ),
        (
            r#","includes":{"arches":["amd64","x32"]}"#,
            "amd64",
            &none,
            v(6, 1),
            true,
        ),
        (
            r#","includes":{"arches":["arm","arm64"]}"#,
            "amd64",
            &none,
            v(6, 1),
            false,
        ),
        // Only the native name counts, as in moby: x86 is a sub-arch of amd64's filter, not
        // the arch rules are resolved for.
        (
            r#","includes":{"arches":["x86"]}"#,
            "amd64",
            &none,
            v(6, 1),
            false,
        ),
        (
            r#","excludes":{"arches":["s390","s390x"]}"#,
            "amd64",
            &none,
            v(6, 1),
            true,
        ),
        (
            r#","excludes":{"arches":["s390","s390x"]}"#,
            "s390x",
            &none,
            v(6, 1),
            false,
        ),
        (
            r#","includes":{"minKernel":"4.8"}"#,
            "amd64",
            &none,
            v(4, 8),
            true,
        ),
        (
            r#","includes":{"minKernel":"4.8"}"#,
            "amd64",
            &none,
            v(4, 10),
            true,
        ),
        (
            r#","includes":{"minKernel":"4.8"}"#,
            "amd64",
            &none,
            v(4, 7),
            false,
        ),
        (
            r#","excludes":{"minKernel":"5.8"}"#,
            "amd64",
            &none,
            v(5, 4),
            true,
        ),
        (
            r#","excludes":{"minKernel":"5.8"}"#,
            "amd64",
            &none,
            v(5, 8),
            false,
        ),
        // Docker's clone rule on s390: excluded by CAP_SYS_ADMIN, included only on s390.
        (
            r#","includes":{"arches":["s390","s390x"]},"excludes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "s390x",
            &none,
            v(6, 1),
            true,
        ),
        (
            r#","includes":{"arches":["s390","s390x"]},"excludes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "s390x",
            &admin,
            v(6, 1),
            false,
        ),
        (
            r#","includes":{"arches":["s390","s390x"]},"excludes":{"caps":["CAP_SYS_ADMIN"]}"#,
            "amd64",
            &none,
            v(6, 1),
            false,
        ),
    ];
    for (condition, arch, caps, kernel, want) in cases {
        let rule = rule(&format!("{{{base}{condition}}}"));
        let target = Target {
            arch,
            caps,
            kernel: *kernel,
        };
        assert_eq!(applies(&rule, &target), *want, "{condition} on {target:?}");
    }
}

#[test]
fn default_profile_rules_for_default_caps() {
    let target = Target {
        arch: "amd64",
        caps: DEFAULT_CAPS,
        kernel: KernelVersion {
            kernel: 6,
            major: 1,
        },
    };
    let names: Vec<&str> = default_profile()
        .syscalls
        .iter()
        .filter(|r| applies(r, &target) && r.action == Action::Allow)
        .flat_map(|r| r.names.iter().map(String::as_str))
        .collect();
    for allowed in ["read", "ptrace", "arch_prctl", "chroot", "clone"] {
        assert!(names.contains(&allowed), "{allowed} should be allowed");
    }
    for refused in [
        "mount",
        "unshare",
        "setns",
        "reboot",
        "bpf",
        "s390_runtime_instr",
    ] {
        assert!(!names.contains(&refused), "{refused} should not be allowed");
    }
}

#[test]
fn filter_arches_follow_arch_map_or_architectures() {
    let profile = default_profile();
    assert_eq!(
        filter_arches(profile, "SCMP_ARCH_X86_64"),
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    );
    assert_eq!(
        filter_arches(profile, "SCMP_ARCH_RISCV64"),
        ["SCMP_ARCH_RISCV64"]
    );
    assert!(filter_arches(profile, "SCMP_ARCH_PARISC").is_empty());
    let old = parse_profile(
        br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"]}"#,
    )
    .unwrap();
    assert_eq!(
        filter_arches(&old, "SCMP_ARCH_AARCH64"),
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    );
}

#[test]
fn actions_and_capability_names() {
    let eperm = libc::EPERM;
    assert_eq!(scmp_action(Action::Errno, None), ScmpAction::Errno(eperm));
    assert_eq!(scmp_action(Action::Errno, Some(38)), ScmpAction::Errno(38));
    assert_eq!(scmp_action(Action::Kill, None), ScmpAction::KillThread);
    assert_eq!(
        scmp_action(Action::Trace, None),
        ScmpAction::Trace(eperm as u16)
    );
    assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(CAP_SYS_ADMIN));
    assert_eq!(capability_number("sys_admin"), Some(CAP_SYS_ADMIN));
    assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
    assert_eq!(capability_number("CAP_FLY"), None);
    assert_eq!(capability_number("CAP_NET_RAW"), Some(13));
    assert_eq!(capability_number("setfcap"), Some(31));
}
