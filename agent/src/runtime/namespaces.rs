//! Namespaces of the container's init: which ones are new, and joining an existing network namespace.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;

/// Stack for the cloned init until it execs; it runs ordinary Rust (allocation, formatting).
const INIT_STACK_BYTES: usize = 1 << 20;

/// The namespaces a container gets: new pid, mount, UTS and IPC, and a new network namespace unless
/// it joins one (`join_netns`).
pub fn clone_flags(join_netns: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if !join_netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Moves the calling process into the network namespace behind `fd` (an open `/run/netns/...` file).
pub fn join_netns(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    setns(fd, CloneFlags::CLONE_NEWNET)
}

/// Clones a child in new namespaces running `init` (whose return value is its exit status). The
/// caller must be single-threaded: the child is a copy of this process, not sharing memory with it.
pub fn clone_init(init: impl FnMut() -> isize, flags: CloneFlags) -> Result<Pid, Errno> {
    let mut stack = vec![0u8; INIT_STACK_BYTES];
    // SAFETY: no CLONE_VM, so the child gets its own copy of the address space (and of `stack`, which
    // it runs on, sized generously for the init's code); the shim is single-threaded, so no lock can be
    // held by another thread at the time of the copy. SIGCHLD makes it an ordinary waitable child.
    unsafe {
        nix::sched::clone(
            Box::new(init),
            &mut stack,
            flags,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_netns_is_not_created() {
        assert!(clone_flags(false).contains(CloneFlags::CLONE_NEWNET));
        let joined = clone_flags(true);
        assert!(!joined.contains(CloneFlags::CLONE_NEWNET));
        assert!(joined.contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS));
    }
}
