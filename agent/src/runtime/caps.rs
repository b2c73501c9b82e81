//! Capabilities of the container's process: Docker's default set, everything else dropped from the
//! bounding set so no later exec can regain it.

use nix::errno::Errno;

/// Docker's default capabilities (numbers from `linux/capability.h`; the list lives in proto).
pub const DEFAULT_CAPS: &[u32] = shoal_proto::security::DEFAULT_CAPABILITIES;

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

/// Drops every capability outside `keep` from the bounding set (up to `last`), so no later exec
/// can regain it. The process's own sets are untouched: it still has what it needs to change its
/// user and groups.
pub fn drop_bounding(keep: &[u32], last: u32) -> Result<(), Errno> {
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes integers only.
        let res = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if res != 0 && Errno::last() != Errno::EINVAL {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Whether `cap` is in this process's bounding set.
pub fn in_bounding_set(cap: u32) -> bool {
    // SAFETY: prctl(PR_CAPBSET_READ, cap) takes integers only.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
}

/// Sets the effective, permitted and inheritable sets to `keep` (for a root process; a switch to
/// another user has already cleared them, as docker leaves a non-root user no effective capability).
pub fn set_process_caps(keep: &[u32]) -> Result<(), Errno> {
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
