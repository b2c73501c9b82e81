//! The userspace WireGuard device: boringtun's protocol state machine (`noise::Tunn`, one per
//! peer) driven by loops of our own over a TUN device and a UDP socket.
//!
//! boringtun's own device moves one packet per system call on both sides (≈4 calls per 1420-byte
//! packet) and, with more than one thread, encrypts one flow's packets on several threads so that
//! they reach the peer out of order. Here:
//!
//! - one thread per direction, so each direction keeps its packets in order while the two run on
//!   different cores: `tun -> encrypt -> UDP` and `UDP -> decrypt -> tun`, plus a timer thread
//!   (handshakes, keepalives, the rate limiter's window);
//! - the UDP side is batched: a run of datagrams to one peer leaves in one `sendmsg` with
//!   `UDP_SEGMENT` (GSO), and the socket takes `UDP_GRO`, so one `recvmsg` returns a run of them;
//!   on the underlay veth the run travels as one packet;
//! - the TUN side is drained in batches (a non-blocking read until it is empty) between one
//!   `poll` and the next;
//! - the TUN carries a virtio-net header (`IFF_VNET_HDR`), and the receive thread merges a run of
//!   decrypted datagrams of one flow (the overlay's VXLAN packets) into one GSO write
//!   ([`vnet::Coalescer`]), so the kernel's receive path (VXLAN, bridge, veth, TCP) runs once per
//!   run rather than once per packet. No offload is enabled for reads (`TUNSETOFFLOAD` 0): what
//!   the device encrypts is always one packet of at most the MTU.
//!
//! What boringtun's device guarantees is kept: a handshake initiation passes the rate limiter
//! (mac1, and a cookie under load) before the costly Diffie-Hellman that finds its peer; a packet
//! a peer decrypts goes to the TUN only if its source is that peer's AllowedIPs (its mesh address);
//! a peer's endpoint follows the source of its authenticated packets (roaming).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::vnet::{self, Coalescer, VnetHdr};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};

/// Handshakes per second the device answers before it asks for cookies. boringtun's device uses
/// 100; each handshake passes the limiter twice here (before the peer lookup and in `Tunn`).
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// Packets taken from the TUN (or datagram runs from the socket) between two polls.
const BATCH: usize = 128;
/// The most segments one `UDP_SEGMENT` send may carry (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// The most payload one UDP datagram (a GSO run included) may carry.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// WireGuard's data header, padding and tag around one packet, at most.
const DATA_OVERHEAD: usize = 32 + 16;
/// The smallest buffer `Tunn` writes into (a handshake initiation).
const MIN_OUT: usize = 148;
/// How often the timer thread runs each peer's timers (boringtun's device: 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Socket buffers asked for (as root, above the sysctl maximum), so a run is not dropped.
const SOCKET_BUFFER: usize = 4 << 20;

/// A peer of the device.
struct Peer {
    tunn: Mutex<Tunn>,
    /// Where its packets go: the configured endpoint, then the source of its latest
    /// authenticated packet.
    endpoint: Mutex<SocketAddrV4>,
    /// Its AllowedIPs (one /32).
    mesh_ip: Ipv4Addr,
}

/// The peers, by every key a packet can name them by.
#[derive(Default)]
struct Peers {
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    /// By `Tunn` index: the high 24 bits of the receiver index in its packets.
    by_index: HashMap<u32, Arc<Peer>>,
    by_ip: HashMap<Ipv4Addr, Arc<Peer>>,
    next_index: u32,
}

/// What the device's threads share.
struct Shared {
    tun: File,
    udp: UdpSocket,
    /// An eventfd: readable once the device is stopping.
    stop: OwnedFd,
    private: StaticSecret,
    public: PublicKey,
    rate_limiter: Arc<RateLimiter>,
    peers: RwLock<Peers>,
    /// Whether `UDP_SEGMENT` sends work (cleared on the first refusal).
    gso: AtomicBool,
}

/// The body of one of the device's threads.
type Loop = fn(&Shared);

/// A peer as `PeerControl::add` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PeerConfig {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// Its underlay endpoint.
    pub endpoint: SocketAddrV4,
    /// Its mesh address, the one source address accepted from it.
    pub mesh_ip: Ipv4Addr,
    /// Persistent keepalive, seconds.
    pub keepalive: u16,
}

/// A running userspace device; stopping it (or dropping it) ends its threads and closes the TUN,
/// which removes the link.
pub(super) struct Userspace {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Changes the peers of a running device (from any thread).
#[derive(Clone)]
pub(super) struct PeerControl(Arc<Shared>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves a Tunn or an address that is still consistent enough to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Userspace {
    /// Creates TUN device `ifname` and a UDP socket on `port` in the calling thread's namespace,
    /// and starts the device's threads with private key `private`.
    pub(super) fn start(ifname: &str, port: u16, private: [u8; 32]) -> io::Result<Userspace> {
        let tun = open_tun(ifname)?;
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
        tune_socket(&udp);
        let stop = eventfd()?;
        let private = StaticSecret::from(private);
        let public = PublicKey::from(&private);
        let shared = Arc::new(Shared {
            tun,
            udp,
            stop,
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            peers: RwLock::new(Peers::default()),
            gso: AtomicBool::new(true),
        });
        let mut device = Userspace {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        let loops: [(&str, Loop); 3] = [
            ("wg-tx", tun_to_net),
            ("wg-rx", net_to_tun),
            ("wg-timers", timers),
        ];
        for (name, run) in loops {
            let shared = shared.clone();
            // On failure `device` drops, which stops the threads already started.
            let thread = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || run(&shared))?;
            device.threads.push(thread);
        }
        Ok(device)
    }

    /// A handle that changes the device's peers.
    pub(super) fn control(&self) -> PeerControl {
        PeerControl(self.shared.clone())
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: `stop` is an open eventfd owned by `shared`; writing 8 bytes is its protocol.
        let written = unsafe { libc::write(self.shared.stop.as_raw_fd(), one.as_ptr().cast(), 8) };
        if written != 8 {
            tracing::warn!(error = %io::Error::last_os_error(), "could not signal the WireGuard threads to stop");
            return;
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::warn!("a WireGuard thread panicked");
            }
        }
    }
}

impl PeerControl {
    /// Removes every peer.
    pub(super) fn clear(&self) {
        let mut peers = self.0.peers.write().unwrap_or_else(PoisonError::into_inner);
        let next_index = peers.next_index;
        *peers = Peers {
            next_index,
            ..Peers::default()
        };
    }

    /// Removes the peer with `public_key`, if any.
    pub(super) fn remove(&self, public_key: &[u8; 32]) {
        let mut peers = self.0.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = peers.by_key.remove(public_key) {
            peers.by_index.retain(|_, p| !Arc::ptr_eq(p, &peer));
            peers.by_ip.retain(|_, p| !Arc::ptr_eq(p, &peer));
        }
    }

    /// Adds a peer (replacing one with the same key).
    pub(super) fn add(&self, config: PeerConfig) {
        self.remove(&config.public_key);
        let mut peers = self.0.peers.write().unwrap_or_else(PoisonError::into_inner);
        // Tunn indices are 24 bits; skip any still in use after a wrap.
        let index = loop {
            let index = peers.next_index & 0x00ff_ffff;
            peers.next_index = peers.next_index.wrapping_add(1);
            if !peers.by_index.contains_key(&index) {
                break index;
            }
        };
        let tunn = Tunn::new(
            self.0.private.clone(),
            PublicKey::from(config.public_key),
            None,
            Some(config.keepalive),
            index,
            Some(self.0.rate_limiter.clone()),
        );
        let peer = Arc::new(Peer {
            tunn: Mutex::new(tunn),
            endpoint: Mutex::new(config.endpoint),
            mesh_ip: config.mesh_ip,
        });
        peers.by_key.insert(config.public_key, peer.clone());
        peers.by_index.insert(index, peer.clone());
        peers.by_ip.insert(config.mesh_ip, peer);
    }
}

/// Opens `/dev/net/tun` as layer-3 device `ifname` (no packet information header, a virtio-net
/// header), non-blocking.
fn open_tun(ifname: &str) -> io::Result<File> {
    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} is too long"),
        ));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back) one ifreq, which `req` is, for the duration of
    // the call; the fd is an open /dev/net/tun.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len = vnet::HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // No offload for reads: the kernel checksums and segments what it hands over. (Writes may
    // carry GSO packets whatever the offloads.)
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETOFFLOAD, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// Large socket buffers and UDP GRO; each is an optimisation, so a refusal is only logged.
fn tune_socket(udp: &UdpSocket) {
    if let Err(e) = setsockopt(udp, sockopt::UdpGroSegment, &true) {
        tracing::debug!(error = %e, "UDP_GRO refused; receiving datagrams one by one");
    }
    for result in [
        setsockopt(udp, sockopt::RcvBufForce, &SOCKET_BUFFER)
            .or_else(|_| setsockopt(udp, sockopt::RcvBuf, &SOCKET_BUFFER)),
        setsockopt(udp, sockopt::SndBufForce, &SOCKET_BUFFER)
            .or_else(|_| setsockopt(udp, sockopt::SndBuf, &SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not enlarge a WireGuard socket buffer");
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we now own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Ready,
    Timeout,
    Stop,
}

/// Waits until `fd` (if any) is readable, the device stops, or `timeout` passes.
fn wait(fd: Option<BorrowedFd<'_>>, stop: &OwnedFd, timeout: PollTimeout) -> Wake {
    let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
    if let Some(fd) = fd {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    match poll(&mut fds, timeout) {
        Ok(0) => Wake::Timeout,
        Ok(_) => {
            let stop_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            if stop_ready {
                Wake::Stop
            } else {
                Wake::Ready
            }
        }
        Err(nix::errno::Errno::EINTR) => Wake::Timeout,
        Err(e) => {
            tracing::warn!(error = %e, "poll failed in a WireGuard thread; stopping it");
            Wake::Stop
        }
    }
}

/// The IPv4 destination of a packet read from the TUN.
fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}

impl Shared {
    fn peer_for(&self, ip: Ipv4Addr) -> Option<Arc<Peer>> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.by_ip.get(&ip).cloned()
    }

    fn send_to(&self, datagram: &[u8], to: SocketAddrV4) {
        if let Err(e) = self.udp.send_to(datagram, to) {
            tracing::debug!(%to, error = %e, "WireGuard send failed");
        }
    }

    /// Sends `run`, datagrams of `segment` bytes (the last may be shorter), to `to`.
    fn send_run(&self, run: &[u8], segment: usize, to: SocketAddrV4) {
        if run.len() > segment && self.gso.load(Ordering::Relaxed) {
            let size = segment as u16;
            let addr = SockaddrIn::from(to);
            let sent = sendmsg(
                self.udp.as_raw_fd(),
                &[IoSlice::new(run)],
                &[ControlMessage::UdpGsoSegments(&size)],
                MsgFlags::empty(),
                Some(&addr),
            );
            match sent {
                Ok(_) => return,
                Err(nix::errno::Errno::EIO | nix::errno::Errno::EINVAL) => {
                    // The route's device cannot checksum or segment UDP: one by one from now on.
                    tracing::debug!(%to, "UDP_SEGMENT refused; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(%to, error = %e, "WireGuard send failed");
                    return;
                }
            }
        }
        for datagram in run.chunks(segment) {
            self.send_to(datagram, to);
        }
    }
}

/// Encrypted datagrams gathered into runs for `UDP_SEGMENT`: same destination, same size (the
/// last of a run may be shorter), contiguous in one buffer.
struct Runs {
    buf: Vec<u8>,
    len: usize,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run.
    closed: bool,
    to: Option<SocketAddrV4>,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            buf: vec![0; MAX_UDP_PAYLOAD + 65_536 + DATA_OVERHEAD],
            len: 0,
            segment: 0,
            count: 0,
            closed: false,
            to: None,
        }
    }

    /// Appends the datagram `encrypt` writes (into at most `room` bytes), bound for `to`.
    fn push(
        &mut self,
        sh: &Shared,
        to: SocketAddrV4,
        room: usize,
        encrypt: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        if self.count > 0
            && (self.to != Some(to)
                || self.closed
                || self.count >= MAX_SEGMENTS
                || self.len + room > MAX_UDP_PAYLOAD)
        {
            self.flush(sh);
        }
        let start = self.len;
        let Some(written) = encrypt(&mut self.buf[start..start + room]) else {
            return;
        };
        if self.count == 0 {
            (self.to, self.segment, self.len, self.count) = (Some(to), written, written, 1);
            return;
        }
        if written <= self.segment {
            self.len += written;
            self.count += 1;
            self.closed = written < self.segment;
            return;
        }
        // Longer than the run's segments: send the run, and start a new one with this datagram.
        sh.send_run(&self.buf[..start], self.segment, to);
        self.buf.copy_within(start..start + written, 0);
        (self.segment, self.len, self.count, self.closed) = (written, written, 1, false);
    }

    fn flush(&mut self, sh: &Shared) {
        if let Some(to) = self.to.filter(|_| self.count > 0) {
            sh.send_run(&self.buf[..self.len], self.segment, to);
        }
        (self.len, self.count, self.closed, self.to) = (0, 0, false, None);
    }
}

/// The `tun -> encrypt -> UDP` loop.
fn tun_to_net(sh: &Shared) {
    let mut packet = vec![0u8; vnet::HDR_LEN + 65_536];
    let mut runs = Runs::new();
    loop {
        match wait(Some(sh.tun.as_fd()), &sh.stop, PollTimeout::NONE) {
            Wake::Stop => return,
            Wake::Timeout => continue,
            Wake::Ready => {}
        }
        for _ in 0..BATCH {
            let n = match (&sh.tun).read(&mut packet) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the WireGuard TUN failed");
                    break;
                }
            };
            let Some(hdr) = VnetHdr::parse(&packet[..n]) else {
                continue;
            };
            let src = &mut packet[vnet::HDR_LEN..n];
            // Never asked for (no TUNSETOFFLOAD), so not expected: a GSO packet would have to be
            // segmented, and a partial checksum is completed.
            if hdr.gso_type != vnet::GSO_NONE || !vnet::complete_checksum(&hdr, src) {
                tracing::debug!(
                    ?hdr,
                    "dropping a TUN packet with an unexpected virtio header"
                );
                continue;
            }
            let src = &*src;
            let n = src.len();
            // Packets to no peer are dropped, as by boringtun (the kernel routes only the mesh
            // prefix here).
            let Some(peer) = ipv4_dst(src).and_then(|dst| sh.peer_for(dst)) else {
                continue;
            };
            let to = *lock(&peer.endpoint);
            let room = (n + DATA_OVERHEAD).max(MIN_OUT);
            runs.push(sh, to, room, |dst| {
                match lock(&peer.tunn).encapsulate(src, dst) {
                    TunnResult::WriteToNetwork(out) => Some(out.len()),
                    TunnResult::Err(e) => {
                        tracing::debug!(error = ?e, "WireGuard encapsulation failed");
                        None
                    }
                    // Queued until a handshake completes.
                    _ => None,
                }
            });
        }
        runs.flush(sh);
    }
}

/// The `UDP -> decrypt -> tun` loop.
fn net_to_tun(sh: &Shared) {
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; 65_536];
    let mut cmsg = nix::cmsg_space!(i32);
    let mut gro = Coalescer::new();
    loop {
        match wait(Some(sh.udp.as_fd()), &sh.stop, PollTimeout::NONE) {
            Wake::Stop => return,
            Wake::Timeout => continue,
            Wake::Ready => {}
        }
        for _ in 0..BATCH {
            let received = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                match recvmsg::<SockaddrIn>(
                    sh.udp.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(msg) => {
                        let segment = msg
                            .cmsgs()
                            .ok()
                            .and_then(|mut c| {
                                c.find_map(|m| match m {
                                    ControlMessageOwned::UdpGroSegments(s) => {
                                        usize::try_from(s).ok()
                                    }
                                    _ => None,
                                })
                            })
                            .filter(|s| *s > 0);
                        msg.address
                            .map(|a| (msg.bytes, SocketAddrV4::new(a.ip(), a.port()), segment))
                    }
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "WireGuard receive failed");
                        break;
                    }
                }
            };
            let Some((n, from, segment)) = received else {
                continue;
            };
            for datagram in buf[..n].chunks(segment.unwrap_or(n).max(1)) {
                receive(sh, datagram, from, &mut out, &mut gro);
            }
        }
        // The socket is drained (or the batch is over): what was gathered goes now.
        gro.flush(&mut |b: &[u8]| (&sh.tun).write(b));
    }
}

/// Handles one datagram from `from`; what it decrypts goes to the TUN through `gro`.
fn receive(sh: &Shared, datagram: &[u8], from: SocketAddrV4, out: &mut [u8], gro: &mut Coalescer) {
    let peer = {
        let peers = sh.peers.read().unwrap_or_else(PoisonError::into_inner);
        match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(p)) => {
                // mac1 (and, under load, the cookie) before the Diffie-Hellman below.
                match sh
                    .rate_limiter
                    .verify_packet(Some(IpAddr::V4(*from.ip())), datagram, out)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        sh.send_to(cookie, from);
                        return;
                    }
                    Err(_) => return,
                }
                parse_handshake_anon(&sh.private, &sh.public, &p)
                    .ok()
                    .and_then(|half| peers.by_key.get(&half.peer_static_public).cloned())
            }
            Ok(Packet::HandshakeResponse(p)) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Ok(Packet::PacketCookieReply(p)) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Ok(Packet::PacketData(p)) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Err(_) => None,
        }
    };
    let Some(peer) = peer else {
        return;
    };
    let mut tunn = lock(&peer.tunn);
    match tunn.decapsulate(Some(IpAddr::V4(*from.ip())), datagram, out) {
        TunnResult::Done => {}
        TunnResult::Err(e) => {
            tracing::debug!(%from, error = ?e, "WireGuard packet refused");
            return;
        }
        TunnResult::WriteToNetwork(reply) => {
            sh.send_to(reply, from);
            // Packets queued while the handshake was under way.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
                sh.send_to(queued, from);
            }
        }
        TunnResult::WriteToTunnelV4(packet, src) => {
            drop(tunn);
            if src == peer.mesh_ip {
                gro.push(packet, &mut |b: &[u8]| (&sh.tun).write(b));
            } else {
                tracing::debug!(%from, %src, "dropping a packet from outside the peer's allowed IPs");
            }
        }
        TunnResult::WriteToTunnelV6(..) => {}
    }
    // Authenticated: the peer is at `from` now.
    *lock(&peer.endpoint) = from;
}

/// Runs every peer's timers each tick, and resets the rate limiter's count every second.
fn timers(sh: &Shared) {
    let mut out = vec![0u8; 256];
    let mut ticks = 0u32;
    loop {
        let tick = PollTimeout::try_from(TIMER_TICK).unwrap_or(PollTimeout::MAX);
        match wait(None, &sh.stop, tick) {
            Wake::Stop => return,
            Wake::Ready | Wake::Timeout => {}
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(4) {
            sh.rate_limiter.reset_count();
        }
        let peers: Vec<Arc<Peer>> = {
            let peers = sh.peers.read().unwrap_or_else(PoisonError::into_inner);
            peers.by_key.values().cloned().collect()
        };
        for peer in peers {
            let to = *lock(&peer.endpoint);
            match lock(&peer.tunn).update_timers(&mut out) {
                TunnResult::WriteToNetwork(packet) => sh.send_to(packet, to),
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                TunnResult::Err(e) => tracing::debug!(error = ?e, "WireGuard timer error"),
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_packets_have_a_destination() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 255, 0, 2]);
        assert_eq!(ipv4_dst(&p), Some(Ipv4Addr::new(10, 255, 0, 2)));
        p[0] = 0x60;
        assert_eq!(ipv4_dst(&p), None);
        assert_eq!(ipv4_dst(&[0x45; 10]), None);
    }
}
