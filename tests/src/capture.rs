//! A packet capture on one interface of one network namespace (AF_PACKET), for tests that must
//! show what crosses a link: e.g. that an encrypted overlay never carries its payload in clear.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

/// What a capture saw.
#[derive(Debug, Default)]
pub struct Captured {
    /// Frames received.
    pub frames: usize,
    /// Every frame's bytes, one after the other.
    pub bytes: Vec<u8>,
}

impl Captured {
    /// Whether `needle` occurs in any frame.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.bytes.windows(needle.len()).any(|w| w == needle)
    }
}

/// A running capture; `finish` stops it and returns what it saw.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Captured>>>,
}

impl Capture {
    /// Starts capturing every frame on `ifname` inside the namespace at `netns` (e.g.
    /// `/run/netns/NAME`); returns once the socket is bound, so nothing sent afterwards is missed.
    pub fn start(netns: &Path, ifname: &str) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (netns, ifname) = (netns.to_path_buf(), ifname.to_string());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_thread(&netns, &ifname, &stop2, ready_tx))
            .context("spawning the capture thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Capture {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => bail!("the capture thread ended before it was ready"),
            },
        }
    }

    /// Stops the capture and returns every frame it saw.
    pub fn finish(mut self) -> Result<Captured> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the capture thread panicked"),
            None => bail!("capture already finished"),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn capture_thread(
    netns: &Path,
    ifname: &str,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<()>>,
) -> Result<Captured> {
    let sock = match open_socket(netns, ifname) {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = ready.send(Err(e));
            bail!(msg);
        }
    };
    let mut out = Captured::default();
    let mut buf = vec![0u8; 65536];
    loop {
        // Read before looking at the flag's value: frames queued before the stop are kept, and
        // the loop ends only on a receive timeout (queue drained) after the stop.
        let stopped = stop.load(Ordering::Relaxed);
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut if stopped => break,
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(err).context("capture recv"),
            }
        }
        out.frames += 1;
        out.bytes.extend_from_slice(&buf[..n as usize]);
    }
    Ok(out)
}

/// Enters `netns` (this thread only) and opens a raw packet socket bound to `ifname`.
fn open_socket(netns: &Path, ifname: &str) -> Result<OwnedFd> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", netns.display()))?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(ifname).context("interface name")?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname} in {}", netns.display());
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("binding the capture socket");
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval; pointer and length describe `timeout`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("setting the capture timeout");
    }
    Ok(sock)
}
