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
    let default_action = scmp_action(profile.default_action, profile.default_errno_ret);
    let mut ctx = new_filter(profile, native, default_action)?;
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
        add_rule(&mut ctx, index, rule, action)?;
    }
    let program = export(&ctx)?;
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLong { len: program.len() });
    }
    tracing::debug!(
        instructions = program.len(),
        elapsed = ?started.elapsed(),
        "seccomp profile compiled"
    );
    Ok(CompiledFilter {
        program,
        flags: filter_flags(profile),
    })
}

/// An empty filter taking `default_action`, for the architectures the profile names that fit
/// this machine's `native` one.
fn new_filter(
    profile: &Profile,
    native: &str,
    default_action: ScmpAction,
) -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| SeccompError::Library {
            step: "create filter",
            source,
        })?;
    for name in filter_arches(profile, native) {
        let arch_error = |source| SeccompError::Arch {
            arch: name.to_string(),
            source,
        };
        let scmp: ScmpArch = name.parse().map_err(arch_error)?;
        ctx.add_arch(scmp).map_err(arch_error)?;
    }
    Ok(ctx)
}

/// Adds profile rule `index` (its syscalls, with `action` and the rule's conditions) to the
/// filter. Syscall names libseccomp does not know are skipped.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    index: usize,
    rule: &Syscall,
    action: ScmpAction,
) -> Result<(), SeccompError> {
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
    Ok(())
}

/// The `seccomp(2)` flags the profile asks for.
fn filter_flags(profile: &Profile) -> u32 {
    profile.flags.iter().fold(0, |acc, flag| {
        acc | match flag {
            // The container's init is single-threaded when it loads the filter.
            Flag::Tsync => 0,
            Flag::Log => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            Flag::SpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
        }
    })
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
#[path = "seccomp_tests.rs"]
mod tests;
