//! Seccomp: a profile in Docker's JSON format compiled into a BPF program for this machine and the
//! container's capabilities, as runc does with moby's profiles.
//!
//! The shim compiles (libseccomp allocates, and may take a lock) before it clones the container's
//! init; the init only hands the finished program to the kernel with one syscall, just before
//! `execve`. Loading needs CAP_SYS_ADMIN in the effective set or no_new_privs: runc loads before
//! dropping to the container's user when no_new_privileges is off, and last when it is on.
//!
//! Syscalls the system libseccomp does not know (with Debian 12's 2.5.4: listmount, statmount,
//! mseal, lsm_*, *xattrat) are skipped like runc's unknown names, so the container gets the
//! default action (EPERM) for them, where runc's BPF patching would answer ENOSYS.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::OnceLock;
use std::time::Instant;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, ScmpVersion};
use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MFdFlags};

pub use shoal_proto::seccomp::{
    parse_profile, Action, Condition, Flag, KernelVersion, Operator, Profile, ProfileError, Syscall,
};

/// Docker's default profile (moby/profiles `seccomp/default.json`), kept verbatim as data.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp_default.json");

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Above this many syscall names, libseccomp is asked for a binary tree instead of a linear list
/// (as runc; libseccomp up to 2.5.4 misbehaves with the tree and no rules at all).
const BINARY_TREE_ABOVE: usize = 32;

/// The oldest libseccomp that has everything used here (`SCMP_ACT_KILL_PROCESS`, optimize level 2).
const MIN_LIBSECCOMP: (u32, u32) = (2, 5);

/// Errors of compiling a profile or of probing the kernel.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not valid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// libseccomp refused a step that does not depend on one rule.
    #[error("seccomp: {step}: {source}")]
    Library {
        /// What was being done.
        step: &'static str,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// An architecture of the profile that libseccomp on this machine does not know.
    #[error("seccomp: architecture {arch}: {source}")]
    Arch {
        /// `SCMP_ARCH_*` as written in the profile.
        arch: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// libseccomp refused a rule.
    #[error("seccomp: rule {index} for syscall {syscall}: {source}")]
    Rule {
        /// Index of the rule in the profile's `syscalls`.
        index: usize,
        /// The syscall name.
        syscall: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// A serialized program (`CompiledFilter::to_bytes`) is cut or padded.
    #[error(
        "seccomp: a serialized BPF program of {len} bytes is not flags plus whole instructions"
    )]
    BadBytes {
        /// Its length.
        len: usize,
    },
    /// The BPF program could not be read back from libseccomp.
    #[error("seccomp: export BPF program: {source}")]
    Export {
        /// The I/O error.
        source: std::io::Error,
    },
    /// The compiled program is longer than the kernel accepts.
    #[error("seccomp: BPF program has {len} instructions, the kernel accepts at most {MAX_INSTRUCTIONS}")]
    TooLong {
        /// Number of instructions.
        len: usize,
    },
    /// The running kernel's release could not be read (needed for `minKernel`).
    #[error("seccomp: cannot tell the kernel version from release {release:?}")]
    KernelVersion {
        /// `uname -r`.
        release: String,
    },
    /// This machine cannot confine containers with seccomp.
    #[error("seccomp filters are not supported on this machine: {missing}")]
    Unsupported {
        /// What is missing.
        missing: String,
    },
}

/// A finished BPF program for `seccomp(SECCOMP_SET_MODE_FILTER)`, ready to load without allocating.
#[derive(Clone)]
pub struct CompiledFilter {
    program: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` (all of them fit in 32 bits).
    flags: u32,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .finish()
    }
}

impl CompiledFilter {
    /// Installs the filter on the calling thread. Async-signal-safe: one syscall, no allocation,
    /// so it may run in a freshly cloned child. The kernel requires CAP_SYS_ADMIN in the effective
    /// set or `PR_SET_NO_NEW_PRIVS` set before (EACCES otherwise).
    pub fn load(&self) -> Result<(), Errno> {
        // `compile` refused longer programs, so the length fits.
        let len = u16::try_from(self.program.len()).map_err(|_| Errno::E2BIG)?;
        let prog = libc::sock_fprog {
            len,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel copies the
        // program and never writes through the pointer.
        let res = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::c_ulong::from(self.flags),
                &prog as *const libc::sock_fprog,
            )
        };
        Errno::result(res).map(drop)
    }

    /// The number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Whether the program is empty (never true for a compiled profile).
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// The BPF instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.program
    }

    /// The filter as bytes, to hand a program compiled once to another process: the flags (u64)
    /// then the instructions, in this machine's byte order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.program.len() * INSTRUCTION_SIZE);
        out.extend_from_slice(&u64::from(self.flags).to_ne_bytes());
        for i in &self.program {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.extend_from_slice(&[i.jt, i.jf]);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// A filter written by `to_bytes` on this machine.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompiledFilter, SeccompError> {
        let bad = || SeccompError::BadBytes { len: bytes.len() };
        let (flags, program) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
        let program = instructions(program).ok_or_else(bad)?;
        if program.is_empty() || program.len() > MAX_INSTRUCTIONS {
            return Err(bad());
        }
        Ok(CompiledFilter {
            program,
            flags: u32::try_from(u64::from_ne_bytes(*flags)).map_err(|_| bad())?,
        })
    }
}

/// Size of one `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }`.
const INSTRUCTION_SIZE: usize = std::mem::size_of::<libc::sock_filter>();

/// The instructions of a raw BPF program (None if the length is not a whole number of them).
fn instructions(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if !bytes.len().is_multiple_of(INSTRUCTION_SIZE) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSTRUCTION_SIZE)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Docker's default profile, parsed once.
pub fn default_profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        parse_profile(DEFAULT_PROFILE_JSON.as_bytes())
            .expect("the embedded default profile is valid (tests parse it)")
    })
}

/// What a profile's conditional rules are resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The native architecture as Docker names it (`amd64`, `arm64`).
    pub arch: &'a str,
    /// The capability numbers the container's process will have.
    pub caps: &'a [u32],
    /// The running kernel.
    pub kernel: KernelVersion,
}

/// The capability number of a name (`CAP_SYS_ADMIN`, also without the prefix, any case).
pub fn capability_number(name: &str) -> Option<u32> {
    shoal_proto::security::capability_number(name)
}

/// Whether a rule is part of the filter for `target`, with moby's semantics: every `includes`
/// condition must hold (all its caps present, the native arch listed, the kernel at least
/// `minKernel`) and no `excludes` condition may (any of its caps present, the native arch listed,
/// the kernel at least `minKernel`).
pub fn applies(rule: &Syscall, target: &Target<'_>) -> bool {
    let has_cap = |name: &String| capability_number(name).is_some_and(|n| target.caps.contains(&n));
    if let Some(Condition {
        caps,
        arches,
        min_kernel,
    }) = &rule.excludes
    {
        if arches.iter().any(|a| a == target.arch)
            || caps.iter().any(has_cap)
            || min_kernel.is_some_and(|v| target.kernel >= v)
        {
            return false;
        }
    }
    if let Some(Condition {
        caps,
        arches,
        min_kernel,
    }) = &rule.includes
    {
        if (!arches.is_empty() && !arches.iter().any(|a| a == target.arch))
            || !caps.iter().all(has_cap)
            || min_kernel.is_some_and(|v| target.kernel < v)
        {
            return false;
        }
    }
    true
}

/// The `SCMP_ARCH_*` architectures the filter covers on a machine whose native one is `native`:
/// with an `archMap`, the native entry and its sub-architectures (none if the map has no entry for
/// it, which leaves the native one alone); otherwise the profile's `architectures`.
pub fn filter_arches<'p>(profile: &'p Profile, native: &str) -> Vec<&'p str> {
    if profile.arch_map.is_empty() {
        return profile.architectures.iter().map(String::as_str).collect();
    }
    profile
        .arch_map
        .iter()
        .find(|m| m.architecture == native)
        .map(|m| {
            std::iter::once(m.architecture.as_str())
                .chain(m.sub_architectures.iter().map(String::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// This machine's architecture: Docker's name (for `arches`) and libseccomp's (for `archMap`).
pub fn native_arch() -> (&'static str, &'static str) {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("x86", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "loongarch64" => ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
        "powerpc64" if little => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "powerpc64" => ("ppc64", "SCMP_ARCH_PPC64"),
        "mips64" if little => ("mipsel64", "SCMP_ARCH_MIPSEL64"),
        "mips64" => ("mips64", "SCMP_ARCH_MIPS64"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

/// The running kernel's version (`uname -r`).
pub fn kernel_version() -> Result<KernelVersion, SeccompError> {
    // SAFETY: utsname is plain old data (arrays of c_char), so all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(SeccompError::KernelVersion {
            release: format!("(uname failed: {})", Errno::last()),
        });
    }
    // SAFETY: the kernel NUL-terminates `release` inside the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    KernelVersion::from_release(&release).ok_or(SeccompError::KernelVersion { release })
}

/// libseccomp's action for a profile's action and errno.
fn scmp_action(action: Action, errno_ret: Option<u32>) -> ScmpAction {
    // The kernel keeps the low 16 bits (SECCOMP_RET_DATA); libseccomp masks the same way.
    let errno = errno_ret.unwrap_or(libc::EPERM as u32) & 0xffff;
    match action {
        Action::Allow => ScmpAction::Allow,
        Action::Errno => ScmpAction::Errno(errno as i32),
        // runc treats the older name as killing the thread.
        Action::Kill | Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Log => ScmpAction::Log,
        Action::Trace => ScmpAction::Trace(errno as u16),
    }
}

/// libseccomp's comparison for a profile's argument condition.
fn scmp_compare(arg: &shoal_proto::seccomp::Arg) -> ScmpArgCompare {
    let (op, datum) = match arg.op {
        Operator::NotEqual => (ScmpCompareOp::NotEqual, arg.value),
        Operator::LessThan => (ScmpCompareOp::Less, arg.value),
        Operator::LessOrEqual => (ScmpCompareOp::LessOrEqual, arg.value),
        Operator::Equal => (ScmpCompareOp::Equal, arg.value),
        Operator::GreaterOrEqual => (ScmpCompareOp::GreaterEqual, arg.value),
        Operator::GreaterThan => (ScmpCompareOp::Greater, arg.value),
        Operator::MaskedEqual => (ScmpCompareOp::MaskedEqual(arg.value), arg.value_two),
    };
    ScmpArgCompare::new(arg.index, op, datum)
}

/// Compiles `profile` for this machine and a process holding capabilities `caps` (numbers, see
/// `caps::DEFAULT_CAPS`). Syscall names libseccomp does not know are skipped, as runc does.
/// Docker's default profile takes ~15 ms, nearly all of it libseccomp generating the program, so
/// the runtime keeps compiled programs in a cache on disk (`Runtime::seccomp_program`).
pub fn compile(profile: &Profile, caps: &[u32]) -> Result<CompiledFilter, SeccompError> {
    let started = Instant::now();
    let (arch, native) = native_arch();
    let target = Target {
        arch,
        caps,
        kernel: kernel_version()?,
    };
    let lib = |step| move |source| SeccompError::Library { step, source };

    let default_action = scmp_action(profile.default_action, profile.default_errno_ret);
    let mut ctx = ScmpFilterContext::new(default_action).map_err(lib("create filter"))?;
    for name in filter_arches(profile, native) {
        let scmp: ScmpArch = name.parse().map_err(|source| SeccompError::Arch {
            arch: name.to_string(),
            source,
        })?;
        ctx.add_arch(scmp).map_err(|source| SeccompError::Arch {
            arch: name.to_string(),
            source,
        })?;
    }

    let rules: Vec<(usize, &Syscall)> = profile
        .syscalls
        .iter()
        .enumerate()
        .filter(|(_, rule)| applies(rule, &target))
        .collect();
    let names: usize = rules.iter().map(|(_, r)| r.names.len()).sum();
    if names > BINARY_TREE_ABOVE {
        // Only a speed-up of the filter: an older libseccomp without it still filters correctly.
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!(error = %e, "seccomp binary tree optimization unavailable");
        }
    }
    for (index, rule) in rules {
        let action = scmp_action(rule.action, rule.errno_ret);
        if action == default_action {
            // libseccomp refuses rules that repeat the default action; they change nothing.
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().map(scmp_compare).collect();
        // libseccomp cannot AND two conditions on one argument: as runc, such a rule becomes one
        // rule per condition (OR), which is what Docker's profiles mean by them.
        let same_arg_twice = rule
            .args
            .iter()
            .enumerate()
            .any(|(i, a)| rule.args[..i].iter().any(|b| b.index == a.index));
        for name in &rule.names {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: syscall unknown to libseccomp, rule skipped");
                continue;
            };
            let result = if conditions.is_empty() {
                ctx.add_rule(action, syscall).map(drop)
            } else if same_arg_twice {
                conditions.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(action, syscall, std::slice::from_ref(c))
                        .map(drop)
                })
            } else {
                ctx.add_rule_conditional(action, syscall, &conditions)
                    .map(drop)
            };
            result.map_err(|source| SeccompError::Rule {
                index,
                syscall: name.to_string(),
                source,
            })?;
        }
    }

    let program = export(&ctx)?;
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLong { len: program.len() });
    }
    let flags = profile.flags.iter().fold(0, |acc, flag| {
        acc | match flag {
            // The container's init is single-threaded when it loads the filter.
            Flag::Tsync => 0,
            Flag::Log => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            Flag::SpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
        }
    });
    tracing::debug!(
        instructions = program.len(),
        elapsed = ?started.elapsed(),
        "seccomp profile compiled"
    );
    Ok(CompiledFilter { program, flags })
}

/// The BPF program libseccomp generates for `ctx`. The in-memory export needs libseccomp 2.6, so
/// the program goes through a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let io = |source| SeccompError::Export { source };
    let fd = memfd_create(c"shoal-seccomp", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| io(std::io::Error::from(e)))?;
    ctx.export_bpf(&fd)
        .map_err(|source| SeccompError::Library {
            step: "export BPF program",
            source,
        })?;
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    instructions(&bytes).ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} bytes is not a whole number of instructions",
                bytes.len()
            ),
        ))
    })
}

/// Whether this machine can confine containers with seccomp filters; the error says what is
/// missing (the agent refuses to start containers without it).
pub fn supported() -> Result<(), SeccompError> {
    let missing = |missing: String| Err(SeccompError::Unsupported { missing });
    // SAFETY: prctl(PR_GET_SECCOMP) takes no pointers.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0 {
        return missing(format!(
            "prctl(PR_GET_SECCOMP) failed ({}): the kernel is built without CONFIG_SECCOMP",
            Errno::last()
        ));
    }
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) if status.lines().any(|l| l.starts_with("Seccomp:")) => {}
        Ok(_) => return missing(
            "/proc/self/status has no Seccomp: line: the kernel is built without CONFIG_SECCOMP"
                .into(),
        ),
        Err(e) => return missing(format!("cannot read /proc/self/status: {e}")),
    }
    // Filter mode (CONFIG_SECCOMP_FILTER) and the errno action the default profile uses.
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 behind the pointer, which is alive.
    let res = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if res != 0 {
        let reason = match Errno::last() {
            Errno::ENOSYS => "the seccomp syscall is missing (kernel older than 3.17?)".to_string(),
            Errno::EINVAL => {
                "filter mode is unavailable: the kernel is built without CONFIG_SECCOMP_FILTER (or is older than 4.14)".to_string()
            }
            Errno::EOPNOTSUPP => "the kernel does not support the SECCOMP_RET_ERRNO action".to_string(),
            e => format!("seccomp(SECCOMP_GET_ACTION_AVAIL) failed: {e}"),
        };
        return missing(reason);
    }
    match ScmpVersion::current() {
        Ok(v) if (v.major, v.minor) >= MIN_LIBSECCOMP => Ok(()),
        Ok(v) => missing(format!(
            "libseccomp {}.{}.{} is too old: {}.{} or newer is needed",
            v.major, v.minor, v.micro, MIN_LIBSECCOMP.0, MIN_LIBSECCOMP.1
        )),
        Err(e) => missing(format!("cannot tell libseccomp's version: {e}")),
    }
}

#[cfg(test)]
mod tests {
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
            if pid <= 0 || libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) != pid as i32
            {
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
                if libc::syscall(libc::SYS_mkdir, dir.as_ptr(), 0o700) != -1
                    || errno() != libc::EPERM
                {
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
}
