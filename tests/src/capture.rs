//! A packet capture on one interface of one network namespace (AF_PACKET), for tests that must
//! show what crosses a link: e.g. that an encrypted overlay never carries its payload in clear.
//! Also the other way round: crafted frames sent out of one interface ([`send_frame`]), for tests
//! that must show what a node does with traffic no well-behaved stack would send.

use std::fs::File;
use std::net::Ipv4Addr;
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
/// An AF_PACKET socket for `protocol` (network byte order; 0 receives nothing) inside `netns`,
/// entered by the calling thread, and the index of `ifname` there.
fn packet_socket(netns: &Path, ifname: &str, protocol: u16) -> Result<(OwnedFd, i32)> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", netns.display()))?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
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
    Ok((sock, index as i32))
}

fn open_socket(netns: &Path, ifname: &str) -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let (sock, index) = packet_socket(netns, ifname, proto)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
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

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Mac> {
    let bytes: Vec<u8> = s
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("not a MAC address: {s:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC address: {s:?}"))
}

/// One IPv4/UDP datagram in an Ethernet frame. Three fixed headers and the one checksum the
/// kernel insists on (IPv4's; UDP's is optional over IPv4 and left 0) are less than a packet
/// library would bring.
#[derive(Debug, Clone)]
pub struct UdpFrame {
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// Ethernet source.
    pub src_mac: Mac,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
}

impl UdpFrame {
    /// The frame's bytes carrying `payload` (at most 1472 bytes: no fragmentation here).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut f = Vec::with_capacity(14 + ip_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45; // version 4, 5 words of header
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        let folded = (folded & 0xffff) + (folded >> 16);
        ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }
}

/// A VXLAN datagram's payload (RFC 7348): the 8-byte header with VNI `vni`, then `inner`.
pub fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + inner.len());
    p.extend_from_slice(&[0x08, 0, 0, 0]); // flags: the VNI is valid
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(inner);
    p
}

/// Sends `frame` (Ethernet header included) out of `ifname` inside the namespace at `netns`, as
/// is, from a thread that enters the namespace and ends with the send.
pub fn send_frame(netns: &Path, ifname: &str, frame: &[u8]) -> Result<()> {
    let (netns, ifname, frame) = (netns.to_path_buf(), ifname.to_string(), frame.to_vec());
    std::thread::Builder::new()
        .name("send-frame".into())
        .spawn(move || send_frame_here(&netns, &ifname, &frame))
        .context("spawning the sender thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
}

fn send_frame_here(netns: &Path, ifname: &str, frame: &[u8]) -> Result<()> {
    // Protocol 0: this socket only sends, and receives nothing.
    let (sock, index) = packet_socket(netns, ifname, 0)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
    // SAFETY: `frame` is valid for `frame.len()` bytes, `addr` is a valid sockaddr_ll and the
    // length passed is its size.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("sending the frame");
    }
    if n as usize != frame.len() {
        bail!("sent {n} of {} bytes", frame.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frames_have_a_valid_ipv4_checksum_and_lengths() {
        let f = UdpFrame {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            sport: 1000,
            dport: 4789,
        }
        .build(&vxlan_payload(0x123456, b"hi"));
        assert_eq!(f.len(), 14 + 20 + 8 + 8 + 2);
        // The checksum of a header with its checksum filled in folds to 0xffff.
        let sum: u32 = f[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
        assert_eq!(&f[42..50], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(
            parse_mac("02:42:0a:00:00:05").unwrap(),
            [2, 0x42, 10, 0, 0, 5]
        );
        assert!(parse_mac("02:42").is_err());
    }
}
