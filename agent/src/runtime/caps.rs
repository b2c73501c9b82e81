//! Capabilities of the container's process: Docker's default set, everything else dropped from the
//! bounding set so no later exec can regain it.

use nix::errno::Errno;

/// Docker's default capabilities (numbers from `linux/capability.h`).
pub const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`, 40 if unreadable).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The two 32-bit words of a capability set holding `caps`.
pub fn mask(caps: &[u32]) -> [u32; 2] {
    let mut words = [0u32; 2];
    for cap in caps.iter().filter(|c| **c < 64) {
        words[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    words
}

/// Drops every capability outside `keep` from the bounding set (up to `last`), then sets the
/// effective, permitted and inheritable sets to `keep`. A later setuid to a non-root user clears the
/// effective and permitted sets, as with Docker.
pub fn restrict_to(keep: &[u32], last: u32) -> Result<(), Errno> {
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes integers only.
        let res = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if res != 0 && Errno::last() != Errno::EINVAL {
            return Err(Errno::last());
        }
    }
    let words = mask(keep);
    let mut data = [CapData::default(); 2];
    for (d, w) in data.iter_mut().zip(words) {
        *d = CapData {
            effective: w,
            permitted: w,
            inheritable: w,
        };
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a version-3 header and two data structs, both valid for the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(res).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_sets_bits_in_both_words() {
        assert_eq!(mask(&[0, 1, 31]), [0x8000_0003, 0]);
        assert_eq!(mask(&[32, 40]), [0, 0x101]);
        assert_eq!(mask(DEFAULT_CAPS)[0], 0xa80425fb);
    }
}
