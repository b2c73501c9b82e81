//! Which device nodes a container may use, and how the kernel is told.
//!
//! The policy is a list of [`DeviceRule`]s (Docker's default allow-list, plus `--device` nodes, or
//! everything for `--privileged`). On cgroup v1 it becomes lines for the `devices` controller
//! ([`v1_writes`]); on cgroup v2 it becomes a `BPF_PROG_TYPE_CGROUP_DEVICE` program ([`program`])
//! that [`attach_program`] loads and attaches to the container's cgroup. [`device_node`] and
//! [`host_devices`] read device nodes from the host's `/dev`.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rbpf::ebpf::{self, Insn};

use super::cgroups::CgroupMode;
use super::DeviceNode;

/// Errors building device rules, looking up host devices, or loading the v2 device program.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The host path does not exist.
    #[error("{path}: no such device on this node")]
    NoSuchDevice {
        /// The host path asked for.
        path: PathBuf,
    },
    /// The host path exists but is neither a character nor a block device.
    #[error("{path} is not a device")]
    NotADevice {
        /// The host path asked for.
        path: PathBuf,
    },
    /// `stat` failed for another reason than the path missing.
    #[error("stat {path}: {source}")]
    Stat {
        /// The host path asked for.
        path: PathBuf,
        /// The error from `stat`.
        source: nix::errno::Errno,
    },
    /// A permission string is empty, repeats a letter, or has a letter other than `r`, `w`, `m`.
    #[error("device permissions {permissions:?} must be a non-empty subset of \"rwm\"")]
    InvalidPermissions {
        /// The string given.
        permissions: String,
    },
    /// The path a device gets inside the container is not absolute.
    #[error("device path {path} inside the container must be absolute")]
    InvalidContainerPath {
        /// The path given.
        path: PathBuf,
    },
    /// A rule the kernel cannot express the same way on v1 and v2.
    #[error("device rule {rule}: {reason}")]
    InvalidRule {
        /// The rule, as a v1 line.
        rule: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Opening the cgroup directory to attach the program to failed.
    #[error("open cgroup {path}: {source}")]
    OpenCgroup {
        /// The cgroup v2 directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The kernel refused the device program (`BPF_PROG_LOAD`).
    #[error("load cgroup device program: {source}{log}")]
    Load {
        /// The error from `bpf(2)`.
        source: io::Error,
        /// The verifier's log, prefixed with a newline, when it wrote one.
        log: String,
    },
    /// The kernel refused to attach the program to the cgroup (`BPF_PROG_ATTACH`).
    #[error("attach cgroup device program to {path}: {source}")]
    Attach {
        /// The cgroup v2 directory.
        path: PathBuf,
        /// The error from `bpf(2)`.
        source: io::Error,
    },
}

/// Which kind of device node a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Every device (`a`).
    All,
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
}

impl DeviceKind {
    /// The letter the v1 controller and `DeviceNode::kind` use.
    pub fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }

    /// The kind for a letter `a`, `c` or `b`.
    pub fn from_letter(letter: char) -> Option<Self> {
        match letter {
            'a' => Some(DeviceKind::All),
            'c' => Some(DeviceKind::Char),
            'b' => Some(DeviceKind::Block),
            _ => None,
        }
    }
}

/// One entry of a container's device policy, as in the v1 `devices.allow`/`devices.deny` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny (false) the access.
    pub allow: bool,
    /// Which kind of node.
    pub kind: DeviceKind,
    /// Major number; `None` is any (`*`).
    pub major: Option<u64>,
    /// Minor number; `None` is any (`*`).
    pub minor: Option<u64>,
    /// Access, a subset of `rwm` (read, write, mknod).
    pub access: String,
}

impl DeviceRule {
    /// An allow rule.
    pub fn allow(kind: DeviceKind, major: Option<u64>, minor: Option<u64>, access: &str) -> Self {
        Self {
            allow: true,
            kind,
            major,
            minor,
            access: access.to_string(),
        }
    }

    /// The rule that allows every access to every device (`a *:* rwm`).
    pub fn allow_all() -> Self {
        Self::allow(DeviceKind::All, None, None, "rwm")
    }

    /// The rule that denies every access to every device (`a *:* rwm` in `devices.deny`).
    pub fn deny_all() -> Self {
        Self {
            allow: false,
            ..Self::allow_all()
        }
    }

    /// Whether the rule applies to an access (`access` as `BPF_DEVCG_ACC_*` bits) to a device.
    ///
    /// An allow rule covers a request only when it grants every bit asked for (as the v1
    /// controller does); a deny rule covers it when it refuses any bit asked for, so a later deny
    /// of `w` also refuses an `open(O_RDWR)` that an earlier `rwm` allowed.
    fn covers(&self, kind: DeviceKind, major: u32, minor: u32, access: u32) -> bool {
        let Ok(granted) = access_bits(&self.access) else {
            return false;
        };
        let kind_ok = self.kind == DeviceKind::All || self.kind == kind;
        let major_ok = self.major.is_none_or(|m| m == u64::from(major));
        let minor_ok = self.minor.is_none_or(|m| m == u64::from(minor));
        let access_ok = if self.allow {
            access & !granted == 0
        } else {
            access & granted != 0
        };
        kind_ok && major_ok && minor_ok && access_ok
    }
}

/// The v1 line: `c 1:3 rwm`, `c 136:* rwm`, `a *:* rwm`.
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |n: Option<u64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind.letter(),
            number(self.major),
            number(self.minor),
            self.access
        )
    }
}

/// `BPF_DEVCG_ACC_MKNOD` (include/uapi/linux/bpf.h).
const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
const ACC_WRITE: u32 = 4;
/// All three access bits.
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_BLOCK`.
const DEV_BLOCK: i32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
const DEV_CHAR: i32 = 2;

/// The device policy of an unprivileged container: Docker's default.
///
/// Deny everything, then allow creating any node (`c *:* m`, `b *:* m`: a node can be made, with
/// CAP_MKNOD, but not opened) and read/write/mknod on null 1:3, zero 1:5, full 1:7, random 1:8,
/// urandom 1:9, tty 5:0, console 5:1, ptmx 5:2 and the pseudo-terminals 136:*.
///
/// Where this differs from Docker: Docker's list is runc's `specconv.AllowedDevices` (moby's
/// `oci/defaults.go` only contributes the leading deny-all), which also allows `/dev/net/tun`
/// (c 10:200 rwm) and does not list the console. We do not allow tun (the issue allows nothing
/// beyond the list above; `--device /dev/net/tun` adds it). We allow the console 5:1 because the
/// issue lists it and moby's own `oci/defaults.go` did before runc took the list over; note that
/// runc dropped it: a container's console is a pty in 136:*, and a node made for 5:1 reaches the
/// host's system console, so removing it is the tighter choice if nothing needs it.
pub fn default_rules() -> Vec<DeviceRule> {
    let c = DeviceKind::Char;
    let rwm = |major: u64, minor: Option<u64>| DeviceRule::allow(c, Some(major), minor, "rwm");
    vec![
        DeviceRule::deny_all(),
        DeviceRule::allow(DeviceKind::Char, None, None, "m"),
        DeviceRule::allow(DeviceKind::Block, None, None, "m"),
        rwm(1, Some(3)), // null
        rwm(1, Some(5)), // zero
        rwm(1, Some(7)), // full
        rwm(1, Some(8)), // random
        rwm(1, Some(9)), // urandom
        rwm(5, Some(0)), // tty
        rwm(5, Some(1)), // console
        rwm(5, Some(2)), // ptmx
        rwm(136, None),  // pts
    ]
}

/// The device policy of a container: everything when privileged, otherwise [`default_rules`]
/// plus one allow rule per requested device with its permissions.
///
/// A node whose kind is neither `c` nor `b` gets no rule, so it stays denied ([`device_node`]
/// never makes one).
pub fn rules_for(devices: &[DeviceNode], privileged: bool) -> Vec<DeviceRule> {
    if privileged {
        return vec![DeviceRule::allow_all()];
    }
    let mut rules = default_rules();
    for device in devices {
        let kind = match DeviceKind::from_letter(device.kind) {
            Some(kind @ (DeviceKind::Char | DeviceKind::Block)) => kind,
            _ => continue,
        };
        rules.push(DeviceRule::allow(
            kind,
            Some(device.major),
            Some(device.minor),
            &device.permissions,
        ));
    }
    rules
}

/// Checks a permission string: a non-empty subset of `rwm`, each letter at most once.
pub fn validate_permissions(permissions: &str) -> Result<(), DeviceError> {
    access_bits(permissions).map(|_| ())
}

fn access_bits(permissions: &str) -> Result<u32, DeviceError> {
    let invalid = || DeviceError::InvalidPermissions {
        permissions: permissions.to_string(),
    };
    let mut bits = 0;
    for letter in permissions.chars() {
        let bit = match letter {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(invalid()),
        };
        if bits & bit != 0 {
            return Err(invalid());
        }
        bits |= bit;
    }
    if bits == 0 {
        return Err(invalid());
    }
    Ok(bits)
}

/// Refuses rules that v1 and v2 would read differently: v1 ignores the numbers and the access
/// of an `a` rule, so one must be `a *:* rwm`; numbers must fit the program's 32-bit immediates.
fn validate_rule(rule: &DeviceRule) -> Result<u32, DeviceError> {
    let invalid = |reason| DeviceError::InvalidRule {
        rule: rule.to_string(),
        reason,
    };
    let access = access_bits(&rule.access)?;
    if rule.kind == DeviceKind::All
        && (rule.major.is_some() || rule.minor.is_some() || access != ACC_ALL)
    {
        return Err(invalid("an `a` rule must be `a *:* rwm`"));
    }
    let too_big = |n: Option<u64>| n.is_some_and(|n| n > i32::MAX as u64);
    if too_big(rule.major) || too_big(rule.minor) {
        return Err(invalid("device numbers above 2^31-1 do not exist"));
    }
    Ok(access)
}

/// Whether `rules` let a process in the container make `access` (letters of `rwm`) to a
/// device: the last rule that covers the access decides, and nothing covering it means deny.
///
/// This is the decision the v2 program makes. For the lists [`rules_for`] builds (one `a` rule
/// first, then rules of the other verdict) it is also exactly the v1 controller's.
pub fn allows(
    rules: &[DeviceRule],
    kind: DeviceKind,
    major: u32,
    minor: u32,
    access: &str,
) -> bool {
    let Ok(bits) = access_bits(access) else {
        return false;
    };
    rules
        .iter()
        .rev()
        .find(|rule| rule.covers(kind, major, minor, bits))
        .is_some_and(|rule| rule.allow)
}

/// The writes that apply `rules` to a v1 `devices` cgroup, in order: (file name, line).
///
/// The kernel applies each line to the cgroup's list as it comes: `a` in `devices.deny` clears
/// the list inherited from the parent and denies by default, each allow line adds an exception.
pub fn v1_writes(rules: &[DeviceRule]) -> Result<Vec<(&'static str, String)>, DeviceError> {
    rules
        .iter()
        .map(|rule| {
            validate_rule(rule)?;
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            Ok((file, rule.to_string()))
        })
        .collect()
}

const R0: u8 = 0;
const R1: u8 = 1;
/// Device type (`BPF_DEVCG_DEV_*`), the low 16 bits of `access_type`.
const R_TYPE: u8 = 2;
/// Access asked for (`BPF_DEVCG_ACC_*`), the high 16 bits of `access_type`.
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        opc,
        dst,
        src,
        off,
        imm,
    }
}

/// The `BPF_PROG_TYPE_CGROUP_DEVICE` program that decides as [`allows`] does.
///
/// Shape (as runc's and crun's): load `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
/// u32 minor; }` into r2..r5, then one block per rule, last rule first, each jumping to the next
/// block on the first field that does not match and returning 1 (allow) or 0 (deny) otherwise;
/// when no block matched, deny. A rule that matches everything ends the program, because the
/// kernel's verifier refuses unreachable instructions.
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>, DeviceError> {
    let mut prog = vec![
        insn(ebpf::LD_W_REG, R_TYPE, R1, 0, 0),
        insn(ebpf::AND32_IMM, R_TYPE, 0, 0, 0xFFFF),
        insn(ebpf::LD_W_REG, R_ACCESS, R1, 0, 0),
        insn(ebpf::RSH32_IMM, R_ACCESS, 0, 0, 16),
        insn(ebpf::LD_W_REG, R_MAJOR, R1, 4, 0),
        insn(ebpf::LD_W_REG, R_MINOR, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let (block, matches_everything) = rule_block(rule)?;
        prog.extend(block);
        if matches_everything {
            return Ok(prog);
        }
    }
    prog.push(insn(ebpf::MOV32_IMM, R0, 0, 0, 0));
    prog.push(insn(ebpf::EXIT, 0, 0, 0, 0));
    Ok(prog)
}

/// One rule's block, and whether it has no condition (so nothing after it can run).
fn rule_block(rule: &DeviceRule) -> Result<(Vec<Insn>, bool), DeviceError> {
    let access = validate_rule(rule)?;
    let mut block = Vec::new();
    // Indices of the jumps to the next block, whose offsets are known once the block is complete.
    let mut to_next = Vec::new();
    let dev_type = match rule.kind {
        DeviceKind::All => None,
        DeviceKind::Char => Some(DEV_CHAR),
        DeviceKind::Block => Some(DEV_BLOCK),
    };
    if let Some(dev_type) = dev_type {
        to_next.push(block.len());
        block.push(insn(ebpf::JNE_IMM, R_TYPE, 0, 0, dev_type));
    }
    // Every request asks for at least one bit, so a deny of `rwm` covers all of them, and an
    // allow of `rwm` grants all of them: no test needed.
    if access != ACC_ALL {
        block.push(insn(ebpf::MOV32_REG, R1, R_ACCESS, 0, 0));
        block.push(insn(ebpf::AND32_IMM, R1, 0, 0, access as i32));
        to_next.push(block.len());
        block.push(if rule.allow {
            // Allow only when every bit asked for is granted.
            insn(ebpf::JNE_REG, R1, R_ACCESS, 0, 0)
        } else {
            // Deny when any bit asked for is refused.
            insn(ebpf::JEQ_IMM, R1, 0, 0, 0)
        });
    }
    // validate_rule bounds both numbers by i32::MAX (and leaves `a` rules without any), so the
    // casts keep their value.
    if let Some(major) = rule.major {
        to_next.push(block.len());
        block.push(insn(ebpf::JNE_IMM, R_MAJOR, 0, 0, major as i32));
    }
    if let Some(minor) = rule.minor {
        to_next.push(block.len());
        block.push(insn(ebpf::JNE_IMM, R_MINOR, 0, 0, minor as i32));
    }
    block.push(insn(ebpf::MOV32_IMM, R0, 0, 0, i32::from(rule.allow)));
    block.push(insn(ebpf::EXIT, 0, 0, 0, 0));
    let len = block.len();
    for index in &to_next {
        // A jump lands at index + 1 + off; the next block starts at len. Blocks are < 10 long.
        block[*index].off = (len - index - 1) as i16;
    }
    Ok((block, to_next.is_empty()))
}

/// The program as the kernel reads it: 8 bytes per instruction (little-endian hosts only, as
/// `rbpf`'s encoding; x86_64 and aarch64 are).
pub fn program_bytes(prog: &[Insn]) -> Vec<u8> {
    prog.iter().flat_map(|i| i.to_array()).collect()
}

/// `bpf(2)` commands and constants (include/uapi/linux/bpf.h); libc does not carry them.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// License string as the kernel's MODULE_LICENSE; the program calls no GPL-only helper.
const LICENSE: &std::ffi::CStr = c"Apache";
/// Verifier log size asked for when a load fails.
const LOG_SIZE: usize = 64 * 1024;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel zero-fills the rest
/// when told this size. `prog_flags` is named so the struct has no padding bytes.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The fields of `union bpf_attr` for `BPF_PROG_ATTACH` (without `replace_bpf_fd` and later).
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` without
    // padding, and the size passed is its own; pointers inside it are checked by the caller.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads a cgroup device program into the kernel; the returned fd keeps it alive.
pub fn load_program(prog: &[Insn]) -> Result<OwnedFd, DeviceError> {
    let bytes = program_bytes(prog);
    let load = |log: Option<&mut Vec<u8>>| {
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: bytes.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            kern_version: 0,
            prog_flags: 0,
        };
        // `bytes`, LICENSE and the log buffer outlive the call.
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match load(None) {
        Ok(fd) => fd,
        Err(source) => {
            // Ask again with a log, only to explain the refusal.
            let mut buf = vec![0u8; LOG_SIZE];
            let _ = load(Some(&mut buf));
            let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..end]);
            let text = text.trim();
            let log = if text.is_empty() {
                String::new()
            } else {
                format!("\n{text}")
            };
            return Err(DeviceError::Load { source, log });
        }
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Builds the program for `rules`, loads it and attaches it to the cgroup v2 directory
/// `cgroup_dir` (with `BPF_F_ALLOW_MULTI`, so programs of ancestor cgroups still apply).
///
/// The attachment outlives the descriptors closed here and goes away with the cgroup. A second
/// call adds a second program: both must allow an access, so call it once per container.
pub fn attach_program(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<(), DeviceError> {
    let prog = load_program(&program(rules)?)?;
    let cgroup = File::open(cgroup_dir).map_err(|source| DeviceError::OpenCgroup {
        path: cgroup_dir.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| DeviceError::Attach {
        path: cgroup_dir.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Whether this host can restrict containers' device access; the error says what is missing.
///
/// v1 needs the `devices` controller mounted; v2 needs the kernel to accept cgroup device
/// programs, tried by loading (and dropping) one that allows everything.
pub fn check_device_control(mode: &CgroupMode) -> Result<(), String> {
    match mode {
        CgroupMode::V1(mounts) => {
            if mounts.iter().any(|(controller, _)| controller == "devices") {
                Ok(())
            } else {
                Err(
                    "no cgroup v1 devices controller is mounted: containers' device access \
                     cannot be restricted"
                        .to_string(),
                )
            }
        }
        CgroupMode::V2(_) => {
            match program(&[DeviceRule::allow_all()]).and_then(|p| load_program(&p)) {
                Ok(_fd) => Ok(()),
                Err(e) => Err(format!(
                    "the kernel refuses cgroup device eBPF programs ({e}): containers' device \
                 access cannot be restricted"
                )),
            }
        }
    }
}

/// The host device at `host_path` (symlinks followed), to appear at `container_path` with cgroup
/// access `permissions` (`--device HOST:CONTAINER:PERMS`).
pub fn device_node(
    host_path: &Path,
    container_path: &Path,
    permissions: &str,
) -> Result<DeviceNode, DeviceError> {
    validate_permissions(permissions)?;
    if !container_path.is_absolute() {
        return Err(DeviceError::InvalidContainerPath {
            path: container_path.to_path_buf(),
        });
    }
    let st = nix::sys::stat::stat(host_path).map_err(|source| match source {
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => DeviceError::NoSuchDevice {
            path: host_path.to_path_buf(),
        },
        source => DeviceError::Stat {
            path: host_path.to_path_buf(),
            source,
        },
    })?;
    node_from_stat(&st, container_path, permissions).ok_or_else(|| DeviceError::NotADevice {
        path: host_path.to_path_buf(),
    })
}

/// The node for a stat result, or `None` when it is not a character or block device.
fn node_from_stat(
    st: &nix::sys::stat::FileStat,
    path: &Path,
    permissions: &str,
) -> Option<DeviceNode> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => return None,
    };
    Some(DeviceNode {
        path: path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(st.st_rdev),
        minor: nix::sys::stat::minor(st.st_rdev),
        file_mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        permissions: permissions.to_string(),
    })
}

/// Directories under `/dev` whose nodes a `--privileged` container does not get from the host
/// (as runc's `HostDevices`): each container has its own pts, shm and mqueue, and the others
/// belong to the host's container managers.
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every character and block device under the host's `/dev` with `rwm`, for `--privileged`.
///
/// Symlinks and `/dev/console` are skipped (the container's console is its own pty), as are the
/// directories in `SKIPPED_DIRS`; a directory that cannot be read is logged and skipped.
pub fn host_devices() -> Vec<DeviceNode> {
    let mut out = Vec::new();
    collect_devices(Path::new("/dev"), &mut out);
    out
}

fn collect_devices(dir: &Path, out: &mut Vec<DeviceNode>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "skipping unreadable device directory");
            return;
        }
    };
    let mut paths: Vec<(PathBuf, std::fs::FileType)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            Some((entry.path(), entry.file_type().ok()?))
        })
        .collect();
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file_type) in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if file_type.is_dir() {
            if !SKIPPED_DIRS.contains(&name) {
                collect_devices(&path, out);
            }
            continue;
        }
        if file_type.is_symlink() || name == "console" {
            continue;
        }
        // lstat: a node that vanished meanwhile is simply not there.
        if let Ok(st) = nix::sys::stat::lstat(&path) {
            if let Some(node) = node_from_stat(&st, &path, "rwm") {
                out.push(node);
            }
        }
    }
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
