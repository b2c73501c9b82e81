//! Process handles that survive pid reuse: `/proc/<pid>/stat` start times and pidfds.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), `None` if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Extracts field 22 (starttime) from the text of `/proc/<pid>/stat`; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the comm: field 3 (state) is the first; starttime is field 22, so the 20th here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a process (not a zombie) that started at `start` ticks.
pub fn is_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X");
    !zombie && parse_start_time(&stat) == Some(start)
}

/// A pidfd for `pid`, checked against its recorded start time; `Ok(None)` when that process is gone.
pub fn pidfd_open(pid: i32, start: u64) -> Result<Option<OwnedFd>, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match Errno::last() {
            Errno::ESRCH => Ok(None),
            e => Err(e),
        };
    }
    // SAFETY: the syscall succeeded, so `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pidfd pins the pid: if the start time still matches, it refers to the recorded process.
    if start_time(pid) == Some(start) {
        Ok(Some(fd))
    } else {
        Ok(None)
    }
}

/// A pidfd for a child of the caller that has not been reaped yet (its pid cannot be reused).
pub fn pidfd_open_child(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the syscall succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` through a pidfd (never hits a recycled pid).
pub fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a valid fd, a signal number, a null siginfo and zero flags.
    let res = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match Errno::result(res) {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Blocks until the process behind `pidfd` exits or `timeout` passes; true if it exited.
pub fn pidfd_wait(pidfd: &OwnedFd, timeout: Duration) -> Result<bool, Errno> {
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, timeout) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_tricky_comm() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_pidfd_opens() {
        let pid = std::process::id() as i32;
        let start = start_time(pid).unwrap();
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
        assert!(pidfd_open(pid, start).unwrap().is_some());
        assert!(pidfd_open(pid, start + 1).unwrap().is_none());
    }
}

/// Whether process `pid` has a handler installed for `signal` (its `SigCgt` mask in
/// `/proc/PID/status`). Unknown (process gone, unreadable) counts as handled, so callers fall back
/// to the graceful path.
pub fn catches_signal(pid: i32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    sig_caught(&status, signal).unwrap_or(true)
}

/// Parses the `SigCgt:` mask of a `/proc/PID/status` text and tests signal number `signo`.
fn sig_caught(status: &str, signo: i32) -> Option<bool> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())?;
    Some(signo >= 1 && mask & (1u64 << (signo - 1)) != 0)
}

#[cfg(test)]
mod sigcgt_tests {
    use super::sig_caught;

    #[test]
    fn reads_the_caught_mask() {
        // bit 14 = SIGTERM (15), bit 1 = SIGINT (2)
        let status = "Name:\tsh\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000004002\n";
        assert_eq!(sig_caught(status, 15), Some(true));
        assert_eq!(sig_caught(status, 2), Some(true));
        assert_eq!(sig_caught(status, 9), Some(false));
        assert_eq!(sig_caught("Name: x\n", 15), None);
    }
}
