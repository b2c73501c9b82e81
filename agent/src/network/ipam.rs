//! Host-local IPAM for a bridge network: one IPv4 address per task, persisted as a small JSON file.
//!
//! The allocation logic (`Ipam`) is pure; `IpamStore` only loads and atomically saves it, so a
//! restarted agent hands re-adopted containers the very addresses they already use.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Errors of the IPAM and of its state file.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The subnet cannot hold a gateway and at least one task address.
    #[error("subnet {subnet} is too small for a bridge network (need at least a /30)")]
    SubnetTooSmall {
        /// The subnet that was configured.
        subnet: Ipv4Net,
    },
    /// Every usable address of the subnet is allocated.
    #[error("no free address left in {subnet} ({allocated} allocated)")]
    Exhausted {
        /// The exhausted subnet.
        subnet: Ipv4Net,
        /// How many addresses tasks hold.
        allocated: usize,
    },
    /// The state file holds allocations of another subnet than the configured one.
    #[error(
        "IPAM state {path} holds {allocated} allocation(s) in {stored}, but the network is configured with {configured}; \
         stop those tasks or restore the subnet"
    )]
    SubnetChanged {
        /// The state file.
        path: PathBuf,
        /// The subnet recorded in the file.
        stored: Ipv4Net,
        /// The subnet asked for now.
        configured: Ipv4Net,
        /// How many allocations the file holds.
        allocated: usize,
    },
    /// The state file could not be read.
    #[error("reading IPAM state {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("parsing IPAM state {path}: {source}")]
    Parse {
        /// The state file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The state file could not be written.
    #[error("writing IPAM state {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The allocation state of one subnet: which task holds which address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    subnet: Ipv4Net,
    /// task id -> address
    allocations: BTreeMap<String, Ipv4Addr>,
    /// Host-order offset where the next search starts, so a released address is not handed out again
    /// at once (a peer's ARP cache may still point at the old owner's MAC).
    next: u32,
}

impl Ipam {
    /// An empty IPAM for `subnet` (host bits are dropped: 10.88.1.7/16 means 10.88.0.0/16).
    pub fn new(subnet: Ipv4Net) -> Result<Ipam, IpamError> {
        let subnet = subnet.trunc();
        // network + gateway + broadcast + one task
        if subnet.prefix_len() > 30 {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        Ok(Ipam {
            subnet,
            allocations: BTreeMap::new(),
            next: 2,
        })
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address: the first host of the subnet, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The address held by `task_id`, if any.
    pub fn get(&self, task_id: &str) -> Option<Ipv4Addr> {
        self.allocations.get(task_id).copied()
    }

    /// Every (task id, address) pair currently allocated.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.allocations.iter().map(|(t, a)| (t.as_str(), *a))
    }

    /// How many addresses are allocated.
    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    /// Whether no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// Gives `task_id` an address: the one it already holds, or a free one.
    pub fn allocate(&mut self, task_id: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(addr) = self.get(task_id) {
            return Ok(addr);
        }
        let size = self.size();
        // Usable offsets are 2..size-1: 0 is the network, 1 the gateway, size-1 the broadcast.
        let usable = size - 3;
        let used: HashSet<Ipv4Addr> = self.allocations.values().copied().collect();
        let base = u32::from(self.subnet.network());
        let mut offset = if (2..size - 1).contains(&self.next) {
            self.next
        } else {
            2
        };
        for _ in 0..usable {
            let addr = Ipv4Addr::from(base + offset);
            offset = if offset + 1 >= size - 1 {
                2
            } else {
                offset + 1
            };
            if !used.contains(&addr) {
                self.allocations.insert(task_id.to_string(), addr);
                self.next = offset;
                return Ok(addr);
            }
        }
        Err(IpamError::Exhausted {
            subnet: self.subnet,
            allocated: self.allocations.len(),
        })
    }

    /// Frees the address of `task_id`; returns it, or `None` when the task held none.
    pub fn release(&mut self, task_id: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(task_id)
    }

    /// Number of addresses in the subnet, including network, gateway and broadcast.
    fn size(&self) -> u32 {
        // prefix_len <= 30 (checked in new), so this fits and is >= 4.
        1u32 << (32 - u32::from(self.subnet.prefix_len()))
    }

    /// Checks an IPAM loaded from disk: addresses inside the subnet, none twice, none reserved.
    fn is_consistent(&self) -> bool {
        let mut seen = HashSet::new();
        let size = self.size();
        let base = u32::from(self.subnet.network());
        self.allocations.values().all(|a| {
            let off = u32::from(*a).wrapping_sub(base);
            self.subnet.contains(a) && (2..size - 1).contains(&off) && seen.insert(*a)
        })
    }
}

/// An `Ipam` persisted in one JSON file, rewritten atomically (temp file, fsync, rename) on each change.
#[derive(Debug)]
pub struct IpamStore {
    path: PathBuf,
    ipam: Ipam,
}

impl IpamStore {
    /// Loads the state at `path`, or starts empty for `subnet` when the file does not exist yet.
    pub fn open(path: &Path, subnet: Ipv4Net) -> Result<IpamStore, IpamError> {
        let configured = Ipam::new(subnet)?;
        let ipam = match fs::read(path) {
            Ok(bytes) => {
                let stored: Ipam =
                    serde_json::from_slice(&bytes).map_err(|source| IpamError::Parse {
                        path: path.to_path_buf(),
                        source,
                    })?;
                if !stored.is_consistent() || Ipam::new(stored.subnet).is_err() {
                    return Err(IpamError::Parse {
                        path: path.to_path_buf(),
                        source: serde::de::Error::custom(
                            "allocations outside the subnet or duplicated",
                        ),
                    });
                }
                if stored.subnet == configured.subnet {
                    stored
                } else if stored.is_empty() {
                    // Nothing is using the old subnet: take the new one.
                    configured
                } else {
                    return Err(IpamError::SubnetChanged {
                        path: path.to_path_buf(),
                        stored: stored.subnet,
                        configured: configured.subnet,
                        allocated: stored.len(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => configured,
            Err(source) => {
                return Err(IpamError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(IpamStore {
            path: path.to_path_buf(),
            ipam,
        })
    }

    /// The current allocation state.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Allocates an address for `task_id` (or returns the one it holds) and persists it before returning.
    pub fn allocate(&mut self, task_id: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(addr) = self.ipam.get(task_id) {
            return Ok(addr);
        }
        let mut next = self.ipam.clone();
        let addr = next.allocate(task_id)?;
        save(&self.path, &next)?;
        self.ipam = next;
        Ok(addr)
    }

    /// Gives `task_id` an address (or returns the one it holds) in memory only: the caller makes
    /// it durable with [`save`] of a later [`IpamStore::ipam`] before handing the address out.
    /// Lets a burst of allocations share one write (group commit).
    pub fn allocate_unsaved(&mut self, task_id: &str) -> Result<Ipv4Addr, IpamError> {
        self.ipam.allocate(task_id)
    }

    /// Releases the address of `task_id` in memory only (see [`IpamStore::allocate_unsaved`]).
    pub fn release_unsaved(&mut self, task_id: &str) -> Option<Ipv4Addr> {
        self.ipam.release(task_id)
    }

    /// The file the state is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the address of `task_id` and persists that; releasing an unknown task is a no-op.
    pub fn release(&mut self, task_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let mut next = self.ipam.clone();
        let Some(addr) = next.release(task_id) else {
            return Ok(None);
        };
        save(&self.path, &next)?;
        self.ipam = next;
        Ok(Some(addr))
    }
}

/// Writes `ipam` to `path` atomically: a reader (or a crash) sees the old file or the new one.
pub fn save(path: &Path, ipam: &Ipam) -> Result<(), IpamError> {
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| IpamError::Write { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err(dir))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(ipam).map_err(|e| IpamError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    {
        let mut f = fs::File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(&bytes).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(err(path))?;
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test subnet literal")
    }

    #[test]
    fn allocates_distinct_addresses_skipping_reserved_ones() {
        let mut ipam = Ipam::new(net("10.88.0.0/16")).expect("valid subnet");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let a = ipam.allocate("a").expect("free");
        let b = ipam.allocate("b").expect("free");
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 88, 0, 3));
        // Same task, same address.
        assert_eq!(ipam.allocate("a").expect("held"), a);
        assert_eq!(ipam.len(), 2);
    }

    #[test]
    fn host_bits_of_the_subnet_are_ignored() {
        let ipam = Ipam::new(net("10.88.7.9/16")).expect("valid subnet");
        assert_eq!(ipam.subnet(), net("10.88.0.0/16"));
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_release_makes_room() {
        // /29: 8 addresses, 5 usable for tasks (.2-.6).
        let mut ipam = Ipam::new(net("192.168.50.0/29")).expect("valid subnet");
        let addrs: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("t{i}")).expect("room left"))
            .collect();
        assert_eq!(addrs.first(), Some(&Ipv4Addr::new(192, 168, 50, 2)));
        assert_eq!(addrs.last(), Some(&Ipv4Addr::new(192, 168, 50, 6)));
        let err = ipam.allocate("t5").expect_err("subnet is full");
        assert!(matches!(err, IpamError::Exhausted { allocated: 5, .. }));
        assert!(err
            .to_string()
            .contains("no free address left in 192.168.50.0/29"));

        assert_eq!(ipam.release("t2"), Some(Ipv4Addr::new(192, 168, 50, 4)));
        assert_eq!(ipam.release("t2"), None);
        assert_eq!(
            ipam.allocate("t5").expect("one freed"),
            Ipv4Addr::new(192, 168, 50, 4)
        );
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let mut ipam = Ipam::new(net("10.0.0.0/24")).expect("valid subnet");
        let a = ipam.allocate("a").expect("free");
        ipam.release("a");
        let b = ipam.allocate("b").expect("free");
        assert_ne!(a, b);
    }

    #[test]
    fn never_hands_out_an_allocated_address_twice() {
        let mut ipam = Ipam::new(net("10.0.0.0/28")).expect("valid subnet");
        // Churn: allocate and release in a pattern that wraps the search pointer many times.
        for round in 0..50 {
            for i in 0..13 {
                let id = format!("r{round}-{i}");
                if i % 3 == 0 {
                    ipam.release(&format!("r{}-{i}", round.max(1) - 1));
                }
                let _ = ipam.allocate(&id);
                assert!(ipam.is_consistent(), "duplicate after {id}");
            }
        }
    }

    #[test]
    fn too_small_subnets_are_refused() {
        assert!(matches!(
            Ipam::new(net("10.0.0.0/31")),
            Err(IpamError::SubnetTooSmall { .. })
        ));
        let mut ipam = Ipam::new(net("10.0.0.0/30")).expect("a /30 holds one task");
        assert_eq!(
            ipam.allocate("a").expect("free"),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert!(ipam.allocate("b").is_err());
    }

    #[test]
    fn store_persists_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        let subnet = net("10.88.0.0/16");
        let (a, b) = {
            let mut store = IpamStore::open(&path, subnet).expect("new store");
            let a = store.allocate("task-a").expect("free");
            let b = store.allocate("task-b").expect("free");
            assert_eq!(store.release("task-a").expect("saved"), Some(a));
            store.allocate("task-a2").expect("free");
            (a, b)
        };
        let mut store = IpamStore::open(&path, subnet).expect("reopen");
        assert_eq!(store.ipam().get("task-b"), Some(b));
        assert_eq!(store.ipam().get("task-a"), None);
        // The search pointer survives too: task-a's old address is not the next one handed out.
        assert_ne!(store.allocate("task-c").expect("free"), a);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn store_refuses_a_changed_subnet_while_addresses_are_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        let mut store = IpamStore::open(&path, net("10.88.0.0/16")).expect("new store");
        store.allocate("t").expect("free");
        let err = IpamStore::open(&path, net("10.99.0.0/16")).expect_err("subnet changed");
        assert!(matches!(err, IpamError::SubnetChanged { allocated: 1, .. }));

        store.release("t").expect("saved");
        let store = IpamStore::open(&path, net("10.99.0.0/16")).expect("empty state adopts it");
        assert_eq!(store.ipam().subnet(), net("10.99.0.0/16"));
    }

    #[test]
    fn store_rejects_a_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        fs::write(&path, b"{not json").expect("write");
        assert!(matches!(
            IpamStore::open(&path, net("10.88.0.0/16")),
            Err(IpamError::Parse { .. })
        ));
        let dup =
            r#"{"subnet":"10.88.0.0/16","allocations":{"a":"10.88.0.2","b":"10.88.0.2"},"next":3}"#;
        fs::write(&path, dup).expect("write");
        assert!(matches!(
            IpamStore::open(&path, net("10.88.0.0/16")),
            Err(IpamError::Parse { .. })
        ));
    }
}
