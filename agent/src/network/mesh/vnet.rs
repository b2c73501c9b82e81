//! The TUN side's virtio-net header (`IFF_VNET_HDR`) and receive coalescing.
//!
//! Decrypted packets reach the kernel through TUN writes, and each write runs the receive path
//! to its end in the writing thread: for the overlay, IP, UDP, the VXLAN decap, the bridge, the
//! veth and the container's TCP. The packets the mesh carries are VXLAN datagrams, a run of
//! same-sized ones per flow. [`Coalescer`] merges a run of consecutive UDP datagrams with the same
//! addresses and ports (the last may be shorter) into one `GSO_UDP_L4` write, as wireguard-go's
//! UDP GRO on TUN does: the kernel takes the run through IP once and splits it at the UDP socket,
//! and the VXLAN device's GRO cells, now handed the whole run in one softirq, merge the inner TCP
//! segments again, so the bridge, the veth and TCP run once per run instead of once per packet.
//!
//! A kernel that refuses the GSO write (`EINVAL`) gets the run again packet by packet, rebuilt
//! exactly as received, and no merged write after that.

use std::io;

/// The virtio-net header's size (`struct virtio_net_hdr`, the TUN default).
pub(super) const HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub(super) const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
const GSO_UDP_L4: u8 = 5;
/// The most segments one UDP GSO packet may carry (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// The largest IPv4 packet.
const MAX_IP_LEN: usize = 65_535;
/// An IPv4 header without options and a UDP header.
const HEADERS: usize = 20 + 8;
const UDP: u8 = 17;

/// A virtio-net header, as TUN reads and writes it (native byte order: the legacy layout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the header at the start of `buf` (at least [`HDR_LEN`] bytes).
    pub(super) fn parse(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.get(..HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    fn write(&self, buf: &mut [u8]) {
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Completes a packet the kernel handed over with a partial checksum (`NEEDS_CSUM`): the sum
/// from `csum_start` to the end goes, complemented, at `csum_start + csum_offset`. False when the
/// offsets are outside the packet.
pub(super) fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> bool {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return false;
    }
    // The field holds the pseudo-header's sum, which the sum below includes.
    let c = !fold(sum(&packet[start..], 0));
    // As the kernel's skb_checksum_help: a zero result is sent as all ones.
    let c = if c == 0 { 0xffff } else { c };
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The one's complement sum of `data` as 16-bit big-endian words, added to `acc`, not folded.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Sets the checksum of the IPv4 header `ip` (without options).
fn set_ip_checksum(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = !fold(sum(&ip[..20], 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The UDP payload length of `packet` if it may join a run: IPv4 without options, not a
/// fragment, UDP, lengths consistent, a payload.
fn udp_payload(packet: &[u8]) -> Option<usize> {
    if packet.len() <= HEADERS || packet[0] != 0x45 || packet[9] != UDP {
        return None;
    }
    // MF clear, fragment offset zero (DF may be set).
    if packet[6] & 0x3f != 0 || packet[7] != 0 {
        return None;
    }
    let ip_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let udp_len = usize::from(u16::from_be_bytes([packet[24], packet[25]]));
    (ip_len == packet.len() && udp_len == ip_len - 20).then_some(ip_len - HEADERS)
}

/// Whether `a` and `b` (both passing [`udp_payload`]) may be one run: every header byte equal but
/// the lengths, the IP id and both checksums.
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..24] == b[12..24]
}

/// Gathers decrypted packets into TUN writes; see the module's documentation.
pub(super) struct Coalescer {
    /// The virtio header, then the run: the first packet's headers and every packet's payload.
    buf: Vec<u8>,
    /// Bytes of `buf` in use.
    len: usize,
    count: usize,
    /// Payload bytes of each datagram of the run (the last may be shorter).
    segment: usize,
    /// A shorter datagram ended the run.
    closed: bool,
    /// Each datagram's IP id and UDP checksum, to rebuild them exactly.
    ids: [[u8; 2]; MAX_SEGMENTS],
    checks: [[u8; 2]; MAX_SEGMENTS],
    /// Whether merged writes are still tried.
    gso: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl Coalescer {
    /// An empty coalescer that tries merged writes.
    pub(super) fn new() -> Coalescer {
        Coalescer {
            buf: vec![0; HDR_LEN + MAX_IP_LEN],
            len: 0,
            count: 0,
            segment: 0,
            closed: false,
            ids: [[0; 2]; MAX_SEGMENTS],
            checks: [[0; 2]; MAX_SEGMENTS],
            gso: true,
        }
    }

    /// Whether merged writes are still tried (false after the kernel refused one).
    #[cfg(test)]
    fn gso(&self) -> bool {
        self.gso
    }

    /// Takes decrypted IP `packet`; `write` is handed whole TUN writes (virtio header first), in
    /// the order the packets came, as runs end.
    pub(super) fn push(
        &mut self,
        packet: &[u8],
        write: &mut impl FnMut(&[u8]) -> io::Result<usize>,
    ) {
        let payload = if self.gso { udp_payload(packet) } else { None };
        let Some(payload) = payload else {
            self.flush(write);
            write_single(&mut self.buf, packet, write);
            return;
        };
        if self.count > 0 {
            let run = &self.buf[HDR_LEN..HDR_LEN + HEADERS];
            let joins = !self.closed
                && self.count < MAX_SEGMENTS
                && payload <= self.segment
                && self.len + payload <= HDR_LEN + MAX_IP_LEN
                && same_flow(run, packet);
            if joins {
                self.buf[self.len..self.len + payload].copy_from_slice(&packet[HEADERS..]);
                self.ids[self.count] = [packet[4], packet[5]];
                self.checks[self.count] = [packet[26], packet[27]];
                self.len += payload;
                self.count += 1;
                self.closed = payload < self.segment;
                return;
            }
            self.flush(write);
        }
        self.buf[HDR_LEN..HDR_LEN + packet.len()].copy_from_slice(packet);
        self.ids[0] = [packet[4], packet[5]];
        self.checks[0] = [packet[26], packet[27]];
        (self.len, self.count, self.segment, self.closed) =
            (HDR_LEN + packet.len(), 1, payload, false);
    }

    /// Writes the run gathered so far, if any.
    pub(super) fn flush(&mut self, write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
        let count = std::mem::take(&mut self.count);
        if count == 0 {
            return;
        }
        if count == 1 {
            // Exactly as received.
            VnetHdr::default().write(&mut self.buf);
            report(write(&self.buf[..self.len]));
            return;
        }
        self.merge();
        match write(&self.buf[..self.len]) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("the TUN refused a UDP GSO write; writing packets one by one");
                self.gso = false;
                self.split(count, write);
            }
            Err(e) => report(Err(e)),
        }
    }

    /// Turns the run into one GSO_UDP_L4 packet: lengths, IP checksum, the UDP checksum field
    /// holding the pseudo-header's sum (the partial checksum the kernel completes per segment),
    /// and the virtio header.
    fn merge(&mut self) {
        let total = self.len - HDR_LEN;
        let p = &mut self.buf[HDR_LEN..];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        set_ip_checksum(&mut p[..20]);
        let udp_len = (total - 20) as u16;
        p[24..26].copy_from_slice(&udp_len.to_be_bytes());
        let pseudo = sum(&p[12..20], u64::from(UDP) + u64::from(udp_len));
        p[26..28].copy_from_slice(&fold(pseudo).to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: HEADERS as u16,
            gso_size: self.segment as u16,
            csum_start: 20,
            csum_offset: 6,
        }
        .write(&mut self.buf);
    }

    /// Writes the merged run's `count` packets one by one, each rebuilt as it was received.
    fn split(&mut self, count: usize, write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
        let mut one = vec![0u8; HDR_LEN + HEADERS + self.segment];
        let headers = HDR_LEN..HDR_LEN + HEADERS;
        one[headers.clone()].copy_from_slice(&self.buf[headers]);
        let mut at = HDR_LEN + HEADERS;
        for i in 0..count {
            let payload = self.segment.min(self.len - at);
            let n = HEADERS + payload;
            let p = &mut one[HDR_LEN..];
            p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.ids[i]);
            set_ip_checksum(&mut p[..20]);
            p[24..26].copy_from_slice(&((n - 20) as u16).to_be_bytes());
            p[26..28].copy_from_slice(&self.checks[i]);
            p[HEADERS..n].copy_from_slice(&self.buf[at..at + payload]);
            at += payload;
            report(write(&one[..HDR_LEN + n]));
        }
    }
}

/// Writes `packet` alone, behind an empty virtio header, using `buf` as scratch.
fn write_single(buf: &mut [u8], packet: &[u8], write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
    let Some(dst) = buf.get_mut(..HDR_LEN + packet.len()) else {
        return;
    };
    VnetHdr::default().write(dst);
    dst[HDR_LEN..].copy_from_slice(packet);
    report(write(dst));
}

fn report(result: io::Result<usize>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "writing to the WireGuard TUN failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram 10.255.0.1:4789 -> 10.255.0.2:4789 with `payload`, IP id `id`, and a real
    /// UDP checksum (or none).
    fn datagram(payload: &[u8], id: u16, with_checksum: bool) -> Vec<u8> {
        let n = HEADERS + payload.len();
        let mut p = vec![0u8; n];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = UDP;
        p[12..16].copy_from_slice(&[10, 255, 0, 1]);
        p[16..20].copy_from_slice(&[10, 255, 0, 2]);
        p[20..22].copy_from_slice(&50_000u16.to_be_bytes());
        p[22..24].copy_from_slice(&4789u16.to_be_bytes());
        p[24..26].copy_from_slice(&((n - 20) as u16).to_be_bytes());
        p[HEADERS..].copy_from_slice(payload);
        set_ip_checksum(&mut p[..20]);
        if with_checksum {
            let pseudo = sum(&p[12..20], u64::from(UDP) + (n as u64 - 20));
            let c = !fold(sum(&p[20..], pseudo));
            p[26..28].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
        p
    }

    fn ip_header_valid(p: &[u8]) -> bool {
        fold(sum(&p[..20], 0)) == 0xffff
    }

    /// Splits a merged write as the kernel's UDP GSO does (`__udp_gso_segment`): each segment's
    /// checksum field is the merged partial sum adjusted for its length, then completed over the
    /// segment. Returns (UDP length, completed checksum, payload) per segment.
    fn kernel_segments(write: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        let hdr = VnetHdr::parse(write).expect("header");
        assert_eq!(hdr.gso_type, GSO_UDP_L4);
        assert_eq!(hdr.flags, F_NEEDS_CSUM);
        assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (20, 6, 28));
        let p = &write[HDR_LEN..];
        assert!(ip_header_valid(p));
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        let merged_len = u16::from_be_bytes([p[24], p[25]]);
        assert_eq!(usize::from(merged_len), p.len() - 20);
        let merged_check = u16::from_be_bytes([p[26], p[27]]);
        let mss = usize::from(hdr.gso_size);
        assert!(p.len() - HEADERS <= mss * MAX_SEGMENTS);
        p[HEADERS..]
            .chunks(mss)
            .map(|payload| {
                let len = (8 + payload.len()) as u16;
                // csum16_add(csum16_sub(check, old_len), new_len)
                let check = fold(u64::from(merged_check) + u64::from(!merged_len) + u64::from(len));
                let mut udp = p[20..28].to_vec();
                udp[4..6].copy_from_slice(&len.to_be_bytes());
                udp[6..8].copy_from_slice(&check.to_be_bytes());
                let c = !fold(sum(payload, sum(&udp, 0)));
                (len, if c == 0 { 0xffff } else { c }, payload.to_vec())
            })
            .collect()
    }

    fn collect(c: &mut Coalescer, packets: &[Vec<u8>], refuse_gso: bool) -> Vec<Vec<u8>> {
        let mut writes = Vec::new();
        let mut write = |b: &[u8]| {
            if refuse_gso && VnetHdr::parse(b).is_some_and(|h| h.gso_type != GSO_NONE) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            writes.push(b.to_vec());
            Ok(b.len())
        };
        for p in packets {
            c.push(p, &mut write);
        }
        c.flush(&mut write);
        writes
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_run_becomes_one_write_whose_segments_carry_the_original_checksums() {
        let packets: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                datagram(
                    &payload(if i == 9 { 333 } else { 1392 }, i as u8),
                    7 + i,
                    true,
                )
            })
            .collect();
        let writes = collect(&mut Coalescer::new(), &packets, false);
        assert_eq!(writes.len(), 1);
        let segments = kernel_segments(&writes[0]);
        assert_eq!(segments.len(), packets.len());
        for (original, (len, check, payload)) in packets.iter().zip(segments) {
            assert_eq!(len, u16::from_be_bytes([original[24], original[25]]));
            assert_eq!(check, u16::from_be_bytes([original[26], original[27]]));
            assert_eq!(payload, original[HEADERS..]);
        }
    }

    #[test]
    fn a_refused_merge_is_written_again_packet_by_packet_exactly() {
        // VXLAN sends without a UDP checksum; one packet has one, to see it kept.
        let packets: Vec<Vec<u8>> = (0..5)
            .map(|i| datagram(&payload(1392, i as u8), 100 + i, i == 2))
            .collect();
        let mut c = Coalescer::new();
        let writes = collect(&mut c, &packets, true);
        assert!(!c.gso());
        assert_eq!(writes.len(), packets.len());
        for (w, p) in writes.iter().zip(&packets) {
            assert_eq!(VnetHdr::parse(w), Some(VnetHdr::default()));
            assert_eq!(&w[HDR_LEN..], &p[..]);
        }
        // And from then on nothing is merged.
        let again = collect(&mut c, &packets, true);
        assert_eq!(again.len(), packets.len());
    }

    #[test]
    fn runs_end_at_another_flow_a_longer_or_after_a_shorter_packet_and_keep_the_order() {
        let a = |len: usize, id: u16| datagram(&payload(len, id as u8), id, false);
        let mut other = a(1392, 50);
        other[22..24].copy_from_slice(&4790u16.to_be_bytes()); // another port
        let mut tcp = a(1392, 60);
        tcp[9] = 6;
        let packets = vec![
            a(1392, 1),
            a(1392, 2),
            other.clone(),
            a(1392, 3),
            a(500, 4),
            a(500, 5),  // after a shorter one: new run
            a(1392, 6), // longer than the run's segments: new run
            tcp.clone(),
            a(1392, 7),
        ];
        let writes = collect(&mut Coalescer::new(), &packets, false);
        let shapes: Vec<(u8, usize)> = writes
            .iter()
            .map(|w| (VnetHdr::parse(w).expect("hdr").gso_type, w.len() - HDR_LEN))
            .collect();
        assert_eq!(
            shapes,
            vec![
                (GSO_UDP_L4, HEADERS + 2 * 1392),
                (GSO_NONE, other.len()),
                (GSO_UDP_L4, HEADERS + 1392 + 500),
                (GSO_NONE, HEADERS + 500),
                (GSO_NONE, HEADERS + 1392),
                (GSO_NONE, tcp.len()),
                (GSO_NONE, HEADERS + 1392),
            ]
        );
        assert_eq!(&writes[1][HDR_LEN..], &other[..]);
        assert_eq!(&writes[5][HDR_LEN..], &tcp[..]);
    }

    #[test]
    fn a_run_stops_at_the_segment_and_size_limits() {
        let packets: Vec<Vec<u8>> = (0..70)
            .map(|i| datagram(&payload(100, 1), i, false))
            .collect();
        let writes = collect(&mut Coalescer::new(), &packets, false);
        assert_eq!(writes.len(), 2);
        assert_eq!(kernel_segments(&writes[0]).len(), MAX_SEGMENTS);
        assert_eq!(kernel_segments(&writes[1]).len(), 6);

        let big: Vec<Vec<u8>> = (0..60)
            .map(|i| datagram(&payload(8000, 1), i, false))
            .collect();
        let writes = collect(&mut Coalescer::new(), &big, false);
        assert!(writes.iter().all(|w| w.len() - HDR_LEN <= MAX_IP_LEN));
        let total: usize = writes.iter().map(|w| kernel_segments(w).len()).sum();
        assert_eq!(total, 60);
    }

    #[test]
    fn fragments_and_options_are_not_merged() {
        let mut frag = datagram(&payload(1000, 1), 1, false);
        frag[6] = 0x20; // MF
        assert_eq!(udp_payload(&frag), None);
        let mut options = datagram(&payload(1000, 1), 1, false);
        options[0] = 0x46;
        assert_eq!(udp_payload(&options), None);
        let mut short = datagram(&payload(1000, 1), 1, false);
        short.truncate(500);
        assert_eq!(udp_payload(&short), None);
        assert_eq!(
            udp_payload(&datagram(&payload(1000, 1), 1, false)),
            Some(1000)
        );
    }

    #[test]
    fn a_partial_checksum_read_from_the_tun_is_completed() {
        let mut p = datagram(&payload(777, 3), 9, true);
        let want = [p[26], p[27]];
        let pseudo = fold(sum(&p[12..20], u64::from(UDP) + (p.len() as u64 - 20)));
        p[26..28].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(complete_checksum(&hdr, &mut p));
        assert_eq!([p[26], p[27]], want);
        let bad = VnetHdr {
            csum_offset: 60_000,
            ..hdr
        };
        assert!(!complete_checksum(&bad, &mut p));
    }
}
