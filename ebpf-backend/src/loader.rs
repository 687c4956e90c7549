//! The aya loader: loads the datapath object, pins its maps and programs in a directory on
//! bpffs (one directory per node instance, `/sys/fs/bpf/polc/<node>` for `polc load`),
//! attaches the classifiers to interfaces with TCX links, and syncs the maps from a
//! [`NodeState`] (see [`crate::sync`] for the order and the rollback).
//!
//! Pins of a node directory:
//!
//! ```text
//! polc_meta polc_ipcache polc_ifaces polc_endpoints polc_policy polc_ct polc_stats polc_counters
//! prog_tc_ingress prog_tc_egress     the classifiers (reused while the object is unchanged)
//! policy/<endpoint id>               each endpoint's policy map (Cilium's 1.19 layout)
//! links/<ifindex>-<hook>             the TCX links
//! ```
//!
//! Everything survives the process: a later [`Loader::open`] reads the pins back, and a sync
//! of the same state changes nothing. **Nothing is changed before every check passed**: root,
//! bpffs, kernel features, the verifier, policy-map capacity and interfaces are checked
//! before the first write; a failure after that rolls every map write and link back.
//!
//! A loader can be opened from any network namespace (interfaces are resolved in the
//! caller's), which is how `polc lab` loads one instance per node namespace.

use crate::abi::{self, Counter, EndpointInfo, IfaceInfo, Meta, Reason, StatsKey};
use crate::state::{
    IpcacheKeyBytes, IpcacheValueBytes, NodeState, PolicyKeyBytes, PolicyValueBytes,
};
use crate::sync::{self, Changes, Fault, Installed, SyncError, Target};
use crate::sys;
use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{
    Array, HashMap, HashOfMaps, IterableMap, LpmTrie, Map, MapData, MapType, PerCpuArray,
    PerCpuHashMap,
};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, ProgramType, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The directory under which `polc load` pins one directory per node.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/polc";

/// `BPF_F_NO_PREALLOC`.
const NO_PREALLOC: u32 = 1;

/// Maps defined by the object, pinned under their own names.
const MAP_NAMES: [&str; 8] = [
    "polc_meta",
    "polc_ipcache",
    "polc_ifaces",
    "polc_endpoints",
    "polc_policy",
    "polc_ct",
    "polc_stats",
    "polc_counters",
];

/// The compiled datapath (`bpf/datapath.c`).
pub fn datapath_object() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/datapath.bpf.o"))
}

/// The datapath with a deliberate out-of-bounds read (`bpf/tests/rejected.c`) that the kernel
/// verifier rejects; for tests of the failure path.
pub fn rejected_object() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/rejected.bpf.o"))
}

/// FNV-1a, to recognise an object already loaded.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Why loading failed. Each variant is one of the errors `polc load` reports with its own
/// code.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not running as root.
    #[error("loading eBPF programs needs root (effective user id is {0})")]
    NotRoot(u32),
    /// bpffs is not mounted and could not be mounted.
    #[error("no bpf filesystem at `{path}`: {reason}")]
    NoBpffs {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The kernel lacks something the datapath needs.
    #[error("the kernel lacks {feature}: {detail}")]
    MissingFeature {
        /// What (`LPM trie maps`, `TCX links (Linux 6.6)`, ...).
        feature: String,
        /// The kernel's answer.
        detail: String,
    },
    /// The kernel verifier rejected a program.
    #[error("the kernel verifier rejected program `{program}`: {error}")]
    Verifier {
        /// The program.
        program: String,
        /// The syscall error.
        error: String,
        /// The verifier's log.
        log: String,
    },
    /// An endpoint's policy needs more entries than its map holds.
    #[error(
        "endpoint `{endpoint}` (id {endpoint_id}) needs {entries} policy-map entries; its map holds {capacity}"
    )]
    Capacity {
        /// The endpoint's name.
        endpoint: String,
        /// Its ID.
        endpoint_id: u16,
        /// Entries needed.
        entries: usize,
        /// The map's capacity.
        capacity: u32,
    },
    /// The pins were made with another capacity or ABI.
    #[error("the datapath pinned in `{dir}` {what}; run `polc unload` first")]
    Incompatible {
        /// The pin directory.
        dir: PathBuf,
        /// What differs.
        what: String,
    },
    /// An interface does not exist, or is given twice.
    #[error("{0}")]
    Interface(String),
    /// A map sync failed (and was rolled back).
    #[error("updating the maps failed: {0}")]
    Sync(SyncError),
    /// Another kernel operation failed.
    #[error("{what}: {detail}")]
    Kernel {
        /// What was attempted.
        what: String,
        /// The error.
        detail: String,
    },
}

fn kernel(what: impl Into<String>, e: impl fmt::Display) -> LoadError {
    LoadError::Kernel {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// An error with its sources, `: `-separated (aya's messages leave the errno to the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn fault(what: impl fmt::Display, e: impl fmt::Display) -> Fault {
    Fault(format!("{what}: {e}"))
}

/// A TC hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// Packets the interface receives.
    Ingress,
    /// Packets the interface sends.
    Egress,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Hook::Ingress => "polc_tc_ingress",
            Hook::Egress => "polc_tc_egress",
        }
    }

    fn pin(self) -> &'static str {
        match self {
            Hook::Ingress => "prog_tc_ingress",
            Hook::Egress => "prog_tc_egress",
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }

    const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];
}

/// Which end of the link an interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node-side end of a pod's veth (Cilium's `lxc*`): what it receives, the pod sent.
    Node,
    /// The endpoint's own device (a host endpoint's uplink, or the pod's end of the veth).
    Endpoint,
    /// A device that serves no endpoint (a node's uplink, `endpoint_id` ignored): only the
    /// packets of the L7 proxy's connections are picked out there, for its sockets.
    Uplink,
}

/// An interface, by name or index, in the caller's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// By name.
    Name(String),
    /// By ifindex.
    Index(u32),
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Name(n) => f.write_str(n),
            Interface::Index(i) => write!(f, "ifindex {i}"),
        }
    }
}

/// Which interface serves which endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The endpoint (a key of [`NodeState::endpoints`]).
    pub endpoint_id: u16,
    /// The interface.
    pub interface: Interface,
    /// Which end it is.
    pub side: Side,
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Capacity of each policy map (`bpf-policy-map-max`); fixed when the pins are created.
    pub policy_map_max: u32,
    /// The object to load (the datapath unless a test says otherwise).
    pub object: &'static [u8],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy_map_max: abi::POLICY_MAP_DEFAULT_MAX,
            object: datapath_object(),
        }
    }
}

/// What an install changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Map changes.
    pub changes: Changes,
    /// TCX links created.
    pub links_attached: usize,
    /// TCX links removed.
    pub links_detached: usize,
    /// Whether the programs were replaced (a new object).
    pub programs_replaced: bool,
}

impl Report {
    /// Every change.
    pub fn total(&self) -> usize {
        self.changes.total()
            + self.links_attached
            + self.links_detached
            + usize::from(self.programs_replaced)
    }
}

type PolicyMap = LpmTrie<MapData, [u8; 8], PolicyValueBytes>;

/// The pinned maps, as the sync writes them.
struct Maps {
    dir: PathBuf,
    capacity: u32,
    ipcache: LpmTrie<MapData, [u8; 20], IpcacheValueBytes>,
    ifaces: HashMap<MapData, u32, [u8; 4]>,
    endpoints: HashMap<MapData, u32, [u8; abi::ENDPOINT_INFO_SIZE]>,
    outer: HashOfMaps<MapData, u32, PolicyMap>,
    meta: Array<MapData, [u8; 16]>,
    policy: BTreeMap<u16, PolicyMap>,
    retired: BTreeMap<u16, PolicyMap>,
}

fn policy_key(k: &PolicyKeyBytes) -> LpmKey<[u8; 8]> {
    let mut data = [0u8; 8];
    data.copy_from_slice(&k[4..]);
    LpmKey::new(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), data)
}

fn policy_key_bytes(k: &LpmKey<[u8; 8]>) -> PolicyKeyBytes {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&k.prefix_len().to_ne_bytes());
    out[4..].copy_from_slice(&k.data());
    out
}

fn ipcache_key(k: &IpcacheKeyBytes) -> LpmKey<[u8; 20]> {
    let mut data = [0u8; 20];
    data.copy_from_slice(&k[4..]);
    LpmKey::new(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), data)
}

fn ipcache_key_bytes(k: &LpmKey<[u8; 20]>) -> IpcacheKeyBytes {
    let mut out = [0u8; 24];
    out[..4].copy_from_slice(&k.prefix_len().to_ne_bytes());
    out[4..].copy_from_slice(&k.data());
    out
}

impl Maps {
    fn policy_pin(&self, ep: u16) -> PathBuf {
        self.dir.join("policy").join(ep.to_string())
    }

    fn map(&mut self, ep: u16) -> Result<&mut PolicyMap, Fault> {
        self.policy
            .get_mut(&ep)
            .ok_or_else(|| Fault(format!("no policy map for endpoint {ep}")))
    }
}

impl Target for Maps {
    fn create_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
        let what = format!("creating the policy map of endpoint {ep}");
        let map =
            PolicyMap::create(self.capacity, NO_PREALLOC).map_err(|e| fault(&what, chain(&e)))?;
        let pin = self.policy_pin(ep);
        let _ = std::fs::remove_file(&pin);
        map.map().pin(&pin).map_err(|e| fault(&what, chain(&e)))?;
        self.policy.insert(ep, map);
        Ok(())
    }

    fn retire_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
        let pin = self.policy_pin(ep);
        std::fs::remove_file(&pin)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| fault(format!("unpinning {}", pin.display()), chain(&e)))?;
        if let Some(m) = self.policy.remove(&ep) {
            self.retired.insert(ep, m);
        }
        Ok(())
    }

    fn restore_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
        if let Some(m) = self.retired.remove(&ep) {
            let pin = self.policy_pin(ep);
            m.map()
                .pin(&pin)
                .map_err(|e| fault(format!("pinning {}", pin.display()), chain(&e)))?;
            self.policy.insert(ep, m);
        }
        Ok(())
    }

    fn discard_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
        self.policy.remove(&ep);
        let pin = self.policy_pin(ep);
        std::fs::remove_file(&pin)
            .map_err(|e| fault(format!("unpinning {}", pin.display()), chain(&e)))
    }

    fn put_policy(
        &mut self,
        ep: u16,
        k: &PolicyKeyBytes,
        v: &PolicyValueBytes,
    ) -> Result<(), Fault> {
        self.map(ep)?.insert(&policy_key(k), v, 0).map_err(|e| {
            fault(
                format!("writing a policy entry of endpoint {ep}"),
                chain(&e),
            )
        })
    }

    fn del_policy(&mut self, ep: u16, k: &PolicyKeyBytes) -> Result<(), Fault> {
        self.map(ep)?.remove(&policy_key(k)).map_err(|e| {
            fault(
                format!("deleting a policy entry of endpoint {ep}"),
                chain(&e),
            )
        })
    }

    fn link(&mut self, ep: u16) -> Result<(), Fault> {
        let Some(m) = self.policy.get(&ep) else {
            return Err(Fault(format!("no policy map for endpoint {ep}")));
        };
        self.outer.insert(u32::from(ep), m, 0).map_err(|e| {
            fault(
                format!("linking the policy map of endpoint {ep}"),
                chain(&e),
            )
        })
    }

    fn unlink(&mut self, ep: u16) -> Result<(), Fault> {
        self.outer.remove(&u32::from(ep)).map_err(|e| {
            fault(
                format!("unlinking the policy map of endpoint {ep}"),
                chain(&e),
            )
        })
    }

    fn put_endpoint(&mut self, ep: u16, info: &EndpointInfo) -> Result<(), Fault> {
        self.endpoints
            .insert(u32::from(ep), info.to_bytes(), 0)
            .map_err(|e| fault(format!("writing the record of endpoint {ep}"), chain(&e)))
    }

    fn del_endpoint(&mut self, ep: u16) -> Result<(), Fault> {
        self.endpoints
            .remove(&u32::from(ep))
            .map_err(|e| fault(format!("deleting the record of endpoint {ep}"), chain(&e)))
    }

    fn put_iface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<(), Fault> {
        self.ifaces
            .insert(ifindex, info.to_bytes(), 0)
            .map_err(|e| fault(format!("writing interface {ifindex}"), chain(&e)))
    }

    fn del_iface(&mut self, ifindex: u32) -> Result<(), Fault> {
        self.ifaces
            .remove(&ifindex)
            .map_err(|e| fault(format!("deleting interface {ifindex}"), chain(&e)))
    }

    fn put_ipcache(&mut self, k: &IpcacheKeyBytes, v: &IpcacheValueBytes) -> Result<(), Fault> {
        self.ipcache
            .insert(&ipcache_key(k), v, 0)
            .map_err(|e| fault("writing an ipcache entry", chain(&e)))
    }

    fn del_ipcache(&mut self, k: &IpcacheKeyBytes) -> Result<(), Fault> {
        self.ipcache
            .remove(&ipcache_key(k))
            .map_err(|e| fault("deleting an ipcache entry", chain(&e)))
    }

    fn commit(&mut self) {
        self.retired.clear();
    }
}

/// A link operation, with what undoes it.
enum LinkOp {
    Attached(PathBuf),
    Updated(PathBuf, Hook),
    Detached(PathBuf, FdLink),
}

fn open_map(dir: &Path, name: &str) -> Result<Map, LoadError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| kernel(format!("opening {}", path.display()), chain(&e)))?;
    Map::from_map_data(data).map_err(|e| kernel(format!("opening {}", path.display()), chain(&e)))
}

fn typed<T: TryFrom<Map>>(map: Map, name: &str) -> Result<T, LoadError>
where
    T::Error: fmt::Display,
{
    T::try_from(map).map_err(|e| kernel(format!("map `{name}` has an unexpected type"), e))
}

fn read_meta(dir: &Path) -> Result<Option<Meta>, LoadError> {
    if !dir.join("polc_meta").exists() {
        return Ok(None);
    }
    let meta: Array<MapData, [u8; 16]> = typed(open_map(dir, "polc_meta")?, "polc_meta")?;
    let b = meta
        .get(&0, 0)
        .map_err(|e| kernel("reading polc_meta", chain(&e)))?;
    Ok(Some(Meta::from_bytes(b)))
}

/// Checks root and bpffs (mounting it when it is missing) and that `dir` is on it.
fn check_environment() -> Result<(), LoadError> {
    let euid = sys::euid();
    if euid != 0 {
        return Err(LoadError::NotRoot(euid));
    }
    let bpffs = Path::new(BPFFS);
    if !sys::is_bpffs(bpffs) {
        std::fs::create_dir_all(bpffs).map_err(|e| LoadError::NoBpffs {
            path: bpffs.into(),
            reason: e.to_string(),
        })?;
        sys::mount_bpffs(bpffs).map_err(|e| LoadError::NoBpffs {
            path: bpffs.into(),
            reason: format!("it is not mounted and mounting it failed: {e}"),
        })?;
    }
    Ok(())
}

fn check_features() -> Result<(), LoadError> {
    let maps = [
        (MapType::LpmTrie, "LPM trie maps"),
        (MapType::HashOfMaps, "hash-of-maps maps"),
        (MapType::LruHash, "LRU hash maps"),
        (MapType::LruPerCpuHash, "per-CPU LRU hash maps"),
        (MapType::PerCpuArray, "per-CPU array maps"),
    ];
    for (t, name) in maps {
        match aya::sys::is_map_supported(t) {
            Ok(true) => {}
            Ok(false) => {
                return Err(LoadError::MissingFeature {
                    feature: name.into(),
                    detail: "BPF_MAP_CREATE refuses the map type".into(),
                });
            }
            Err(e) => {
                return Err(LoadError::MissingFeature {
                    feature: name.into(),
                    detail: e.to_string(),
                });
            }
        }
    }
    match aya::sys::is_program_supported(ProgramType::SchedClassifier) {
        Ok(true) => {}
        Ok(false) => {
            return Err(LoadError::MissingFeature {
                feature: "TC classifier programs".into(),
                detail: "BPF_PROG_LOAD refuses BPF_PROG_TYPE_SCHED_CLS".into(),
            });
        }
        Err(e) => {
            return Err(LoadError::MissingFeature {
                feature: "TC classifier programs".into(),
                detail: e.to_string(),
            });
        }
    }
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(6, 6, 0) => Ok(()),
        Ok(v) => Err(LoadError::MissingFeature {
            feature: "TCX links (Linux 6.6)".into(),
            detail: format!("this kernel is {v}"),
        }),
        Err(e) => Err(LoadError::MissingFeature {
            feature: "TCX links (Linux 6.6)".into(),
            detail: format!("cannot read the kernel version: {e}"),
        }),
    }
}

/// The loaded datapath of one node instance, with what is installed.
pub struct Loader {
    dir: PathBuf,
    ebpf: Ebpf,
    pinned_programs: Option<(SchedClassifier, SchedClassifier)>,
    maps: Maps,
    installed: Installed,
    links: BTreeSet<(u32, Hook)>,
    object_hash: u64,
    programs_fresh: bool,
    /// Whether nothing was ever installed in `dir` (its pins came from this `open`).
    fresh: bool,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("dir", &self.dir)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// Opens the instance pinned in `dir` (creating it when needed): checks root, bpffs and
    /// kernel features, loads the object (maps reuse their pins; the programs are verified
    /// unless the same object is already pinned), and reads what is installed. Installs
    /// nothing; on an error, nothing is left behind that was not there before.
    pub fn open(dir: &Path, options: &Options) -> Result<Loader, LoadError> {
        check_environment()?;
        check_features()?;
        let existed = dir.join("polc_meta").exists();
        let result = Self::open_inner(dir, options, existed);
        if result.is_err() && !existed {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    fn open_inner(dir: &Path, options: &Options, existed: bool) -> Result<Loader, LoadError> {
        std::fs::create_dir_all(dir.join("policy"))
            .and_then(|()| std::fs::create_dir_all(dir.join("links")))
            .map_err(|e| LoadError::NoBpffs {
                path: dir.into(),
                reason: e.to_string(),
            })?;
        if !sys::is_bpffs(dir) {
            return Err(LoadError::NoBpffs {
                path: dir.into(),
                reason: "the directory is not on a bpf filesystem".into(),
            });
        }
        let meta = read_meta(dir)?;
        let capacity = match meta {
            Some(m) if m.abi_version != abi::ABI_VERSION => {
                return Err(LoadError::Incompatible {
                    dir: dir.into(),
                    what: format!(
                        "has ABI version {}, this polc writes {}",
                        m.abi_version,
                        abi::ABI_VERSION
                    ),
                });
            }
            Some(m) if m.policy_map_max != options.policy_map_max => {
                return Err(LoadError::Incompatible {
                    dir: dir.into(),
                    what: format!(
                        "has policy maps of {} entries, {} were asked for",
                        m.policy_map_max, options.policy_map_max
                    ),
                });
            }
            _ => options.policy_map_max,
        };
        let outer_pin = dir.join("polc_policy");
        if !outer_pin.exists() {
            // The outer map's inner template decides the capacity every policy map must have.
            let template = PolicyMap::create(capacity, NO_PREALLOC)
                .map_err(|e| kernel("creating the policy map template", chain(&e)))?;
            let fd = sys::create_hash_of_maps(
                "polc_policy",
                abi::MAX_ENDPOINTS,
                NO_PREALLOC,
                template.map().fd().as_fd(),
            )
            .map_err(|e| kernel("creating polc_policy", chain(&e)))?;
            let data =
                MapData::from_fd(fd).map_err(|e| kernel("creating polc_policy", chain(&e)))?;
            data.pin(&outer_pin)
                .map_err(|e| kernel("pinning polc_policy", chain(&e)))?;
        }
        let mut loader = EbpfLoader::new();
        let pins: Vec<PathBuf> = MAP_NAMES.iter().map(|n| dir.join(n)).collect();
        for (name, pin) in MAP_NAMES.iter().zip(&pins) {
            loader.map_pin_path(name, pin.as_path());
        }
        let mut ebpf = loader
            .load(options.object)
            .map_err(|e| kernel("loading the datapath object", chain(&e)))?;

        let object_hash = fnv1a(options.object);
        let same_object = existed && meta.is_some_and(|m| m.object_hash == object_hash);
        let pinned_programs = if same_object {
            match (
                SchedClassifier::from_pin(dir.join(Hook::Ingress.pin())),
                SchedClassifier::from_pin(dir.join(Hook::Egress.pin())),
            ) {
                (Ok(i), Ok(e)) => Some((i, e)),
                _ => None,
            }
        } else {
            None
        };
        let programs_fresh = pinned_programs.is_none();
        if programs_fresh {
            for hook in Hook::BOTH {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(hook.program())
                    .ok_or_else(|| {
                        kernel(
                            "loading the datapath object",
                            format!("no program `{}`", hook.program()),
                        )
                    })?
                    .try_into()
                    .map_err(|e: ProgramError| kernel("loading the datapath object", e))?;
                prog.load().map_err(|e| match e {
                    ProgramError::LoadError {
                        io_error,
                        verifier_log,
                    } => LoadError::Verifier {
                        program: hook.program().into(),
                        error: io_error.to_string(),
                        log: format!("{verifier_log:?}"),
                    },
                    other => kernel(format!("loading program `{}`", hook.program()), other),
                })?;
            }
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| kernel("loading the datapath object", format!("no map `{name}`")))
        };
        let mut maps = Maps {
            dir: dir.into(),
            capacity,
            ipcache: typed(take(&mut ebpf, "polc_ipcache")?, "polc_ipcache")?,
            ifaces: typed(take(&mut ebpf, "polc_ifaces")?, "polc_ifaces")?,
            endpoints: typed(take(&mut ebpf, "polc_endpoints")?, "polc_endpoints")?,
            outer: typed(take(&mut ebpf, "polc_policy")?, "polc_policy")?,
            meta: typed(take(&mut ebpf, "polc_meta")?, "polc_meta")?,
            policy: BTreeMap::new(),
            retired: BTreeMap::new(),
        };
        let installed = read_installed(&mut maps)?;
        let links = read_links(dir);
        Ok(Loader {
            dir: dir.into(),
            ebpf,
            pinned_programs,
            maps,
            installed,
            links,
            object_hash,
            programs_fresh,
            fresh: !existed || meta.is_none_or(|m| m.abi_version == 0),
        })
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What is installed (as last read or written).
    pub fn installed(&self) -> &Installed {
        &self.installed
    }

    /// The capacity of each policy map.
    pub fn policy_map_max(&self) -> u32 {
        self.maps.capacity
    }

    fn program(&mut self, hook: Hook) -> Result<&mut SchedClassifier, LoadError> {
        if let Some((i, e)) = &mut self.pinned_programs {
            return Ok(match hook {
                Hook::Ingress => i,
                Hook::Egress => e,
            });
        }
        self.ebpf
            .program_mut(hook.program())
            .ok_or_else(|| kernel("finding a program", hook.program()))?
            .try_into()
            .map_err(|e: ProgramError| kernel("finding a program", e))
    }

    /// Checks `desired` against the policy maps' capacity, without touching anything.
    pub fn check_capacity(&self, desired: &NodeState) -> Result<(), LoadError> {
        check_capacity(desired, self.maps.capacity)
    }

    fn resolve(
        &self,
        desired: &NodeState,
        attachments: &[Attachment],
    ) -> Result<BTreeMap<u32, IfaceInfo>, LoadError> {
        let mut out = BTreeMap::new();
        for a in attachments {
            if a.side != Side::Uplink && !desired.endpoints.contains_key(&a.endpoint_id) {
                return Err(LoadError::Interface(format!(
                    "interface `{}` is given for endpoint {}, which is not on this node",
                    a.interface, a.endpoint_id
                )));
            }
            let ifindex = match &a.interface {
                Interface::Name(n) => sys::ifindex(n)
                    .ok_or_else(|| LoadError::Interface(format!("no network interface `{n}`")))?,
                Interface::Index(i) => {
                    sys::ifname(*i).ok_or_else(|| {
                        LoadError::Interface(format!("no network interface with index {i}"))
                    })?;
                    *i
                }
            };
            let info = IfaceInfo {
                endpoint_id: if a.side == Side::Uplink {
                    0
                } else {
                    a.endpoint_id
                },
                flags: match a.side {
                    Side::Node => 0,
                    Side::Endpoint => abi::IFACE_F_ENDPOINT_SIDE,
                    Side::Uplink => abi::IFACE_F_UPLINK,
                },
                pad: 0,
            };
            if let Some(prev) = out.insert(ifindex, info)
                && prev.endpoint_id != a.endpoint_id
            {
                return Err(LoadError::Interface(format!(
                    "interface `{}` is given for endpoints {} and {}",
                    a.interface, prev.endpoint_id, a.endpoint_id
                )));
            }
        }
        Ok(out)
    }

    /// Installs `desired` and attaches the classifiers to `attachments` (and detaches them
    /// from interfaces no longer listed). All or nothing: capacity and interfaces are checked
    /// first, and a failure later rolls back every map write and link. When the first install
    /// into a directory fails, the directory is removed again (reopen to retry).
    pub fn install(
        &mut self,
        desired: &NodeState,
        attachments: &[Attachment],
    ) -> Result<Report, LoadError> {
        let result = self.install_inner(desired, attachments);
        match &result {
            Ok(_) => self.fresh = false,
            Err(_) if self.fresh => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Err(_) => {}
        }
        result
    }

    fn install_inner(
        &mut self,
        desired: &NodeState,
        attachments: &[Attachment],
    ) -> Result<Report, LoadError> {
        self.check_capacity(desired)?;
        let ifaces = self.resolve(desired, attachments)?;
        let pending = sync::apply_diff(&mut self.maps, &self.installed, desired, &ifaces)
            .map_err(LoadError::Sync)?;
        let mut journal = Vec::new();
        let mut result = self.sync_links(&ifaces, &mut journal);
        if result.is_ok() && self.programs_fresh {
            result = self.pin_programs();
        }
        if let Err(e) = result {
            let mut failures = self.undo_links(journal);
            failures.extend(pending.rollback(&mut self.maps));
            return Err(match failures.first() {
                None => e,
                Some(f) => kernel(
                    e.to_string(),
                    format!(
                        "and the rollback failed {} times, first: {f}",
                        failures.len()
                    ),
                ),
            });
        }
        let mut report = Report {
            programs_replaced: self.programs_fresh && !self.links.is_empty(),
            ..Report::default()
        };
        for op in journal {
            match op {
                LinkOp::Attached(_) => report.links_attached += 1,
                LinkOp::Detached(_, link) => {
                    report.links_detached += 1;
                    drop(link);
                }
                LinkOp::Updated(..) => {}
            }
        }
        report.changes = pending.commit(&mut self.maps, &mut self.installed, desired);
        self.links = ifaces
            .keys()
            .flat_map(|i| Hook::BOTH.map(|h| (*i, h)))
            .collect();
        Ok(report)
    }

    /// [`Loader::install`] keeping the current interfaces: only the maps change.
    pub fn sync(&mut self, desired: &NodeState) -> Result<Report, LoadError> {
        self.check_capacity(desired)?;
        let ifaces = self.installed.ifaces.clone();
        let changes = sync::sync(&mut self.maps, &mut self.installed, desired, &ifaces)
            .map_err(LoadError::Sync)?;
        Ok(Report {
            changes,
            ..Report::default()
        })
    }

    fn link_pin(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.dir
            .join("links")
            .join(format!("{ifindex}-{}", hook.name()))
    }

    fn sync_links(
        &mut self,
        ifaces: &BTreeMap<u32, IfaceInfo>,
        journal: &mut Vec<LinkOp>,
    ) -> Result<(), LoadError> {
        let want: BTreeSet<(u32, Hook)> = ifaces
            .keys()
            .flat_map(|i| Hook::BOTH.map(|h| (*i, h)))
            .collect();
        for (ifindex, hook) in &want {
            let pin = self.link_pin(*ifindex, *hook);
            if self.links.contains(&(*ifindex, *hook)) && pin.exists() {
                if self.programs_fresh {
                    let link = PinnedLink::from_pin(&pin)
                        .map_err(|e| kernel(format!("opening {}", pin.display()), chain(&e)))?;
                    let link = SchedClassifierLink::try_from(FdLink::from(link))
                        .map_err(|e| kernel(format!("opening {}", pin.display()), chain(&e)))?;
                    let prog = self.program(*hook)?;
                    let id = prog.attach_to_link(link).map_err(|e| {
                        kernel(
                            format!("replacing the program of {}", pin.display()),
                            chain(&e),
                        )
                    })?;
                    // The link stays pinned; our handle can go.
                    let _ = prog.take_link(id);
                    journal.push(LinkOp::Updated(pin, *hook));
                }
                continue;
            }
            let name = sys::ifname(*ifindex).ok_or_else(|| {
                LoadError::Interface(format!("no network interface with index {ifindex}"))
            })?;
            let _ = std::fs::remove_file(&pin);
            let prog = self.program(*hook)?;
            let id = prog
                .attach_with_options(
                    &name,
                    hook.attach_type(),
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| attach_error(&name, *hook, e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| attach_error(&name, *hook, e))?;
            let link = FdLink::try_from(link)
                .map_err(|e| kernel(format!("pinning the link of `{name}`"), chain(&e)))?;
            link.pin(&pin)
                .map_err(|e| kernel(format!("pinning the link of `{name}`"), chain(&e)))?;
            journal.push(LinkOp::Attached(pin));
        }
        let gone: Vec<(u32, Hook)> = read_links(&self.dir).difference(&want).copied().collect();
        for (ifindex, hook) in gone {
            let pin = self.link_pin(ifindex, hook);
            let link = PinnedLink::from_pin(&pin)
                .map_err(|e| kernel(format!("opening {}", pin.display()), chain(&e)))?;
            let link = link
                .unpin()
                .map_err(|e| kernel(format!("unpinning {}", pin.display()), chain(&e)))?;
            journal.push(LinkOp::Detached(pin, link));
        }
        Ok(())
    }

    fn undo_links(&mut self, journal: Vec<LinkOp>) -> Vec<Fault> {
        let mut failures = Vec::new();
        for op in journal.into_iter().rev() {
            match op {
                LinkOp::Attached(pin) => {
                    if let Err(e) = std::fs::remove_file(&pin) {
                        failures.push(fault(format!("unpinning {}", pin.display()), e));
                    }
                }
                LinkOp::Detached(pin, link) => {
                    if let Err(e) = link.pin(&pin) {
                        failures.push(fault(format!("pinning {}", pin.display()), e));
                    }
                }
                LinkOp::Updated(pin, hook) => {
                    let old = SchedClassifier::from_pin(self.dir.join(hook.pin()));
                    let link = PinnedLink::from_pin(&pin)
                        .map_err(|e| e.to_string())
                        .and_then(|l| {
                            SchedClassifierLink::try_from(FdLink::from(l))
                                .map_err(|e| e.to_string())
                        });
                    match (old, link) {
                        (Ok(mut old), Ok(link)) => match old.attach_to_link(link) {
                            Ok(id) => {
                                let _ = old.take_link(id);
                            }
                            Err(e) => {
                                failures.push(fault(format!("restoring {}", pin.display()), e))
                            }
                        },
                        (Err(e), _) => {
                            failures.push(fault(format!("restoring {}", pin.display()), e))
                        }
                        (_, Err(e)) => {
                            failures.push(fault(format!("restoring {}", pin.display()), e))
                        }
                    }
                }
            }
        }
        failures
    }

    fn pin_programs(&mut self) -> Result<(), LoadError> {
        for hook in Hook::BOTH {
            let pin = self.dir.join(hook.pin());
            let staged = self.dir.join(format!("{}_new", hook.pin()));
            let _ = std::fs::remove_file(&staged);
            self.program(hook)?
                .pin(&staged)
                .map_err(|e| kernel(format!("pinning {}", staged.display()), chain(&e)))?;
            std::fs::rename(&staged, &pin)
                .map_err(|e| kernel(format!("pinning {}", pin.display()), chain(&e)))?;
        }
        let meta = Meta {
            abi_version: abi::ABI_VERSION,
            policy_map_max: self.maps.capacity,
            object_hash: self.object_hash,
        };
        self.maps
            .meta
            .set(0, meta.to_bytes(), 0)
            .map_err(|e| kernel("writing polc_meta", chain(&e)))?;
        self.programs_fresh = false;
        Ok(())
    }

    /// Runs the classifier of `hook` on an Ethernet frame with `BPF_PROG_TEST_RUN`, as if
    /// it arrived on (or left through) the interface `ifindex` of the caller's network
    /// namespace (above 1; 1, the loopback device, is the kernel's default), and returns the
    /// TC verdict (`-1` pass, `2` drop). The frame goes nowhere; maps (conntrack, counters)
    /// are updated as for a real packet.
    pub fn test_run(&mut self, hook: Hook, frame: &[u8], ifindex: u32) -> Result<i32, LoadError> {
        let prog = self.program(hook)?;
        let fd = prog
            .fd()
            .map_err(|e| kernel("running the program", chain(&e)))?;
        sys::test_run(fd.as_fd(), frame, (ifindex > 1).then_some(ifindex))
            .map_err(|e| kernel("BPF_PROG_TEST_RUN", chain(&e)))
    }
}

/// Checks that every endpoint of `desired` fits a policy map of `capacity` entries; the error
/// names the first that does not.
pub fn check_capacity(desired: &NodeState, capacity: u32) -> Result<(), LoadError> {
    for (id, e) in &desired.endpoints {
        if e.policy.len() > capacity as usize {
            return Err(LoadError::Capacity {
                endpoint: e.name.clone(),
                endpoint_id: *id,
                entries: e.policy.len(),
                capacity,
            });
        }
    }
    Ok(())
}

/// The policy-map capacity of the datapath pinned in `dir`, if one is.
pub fn pinned_capacity(dir: &Path) -> Option<u32> {
    read_meta(dir)
        .ok()
        .flatten()
        .filter(|m| m.abi_version != 0)
        .map(|m| m.policy_map_max)
}

fn attach_error(name: &str, hook: Hook, e: ProgramError) -> LoadError {
    let text = e.to_string();
    let detail = match &e {
        ProgramError::SyscallError(s) => format!("{text}: {}", s.io_error),
        _ => text,
    };
    if detail.contains("Invalid argument") || detail.contains("not supported") {
        LoadError::MissingFeature {
            feature: "TCX links (Linux 6.6)".into(),
            detail: format!("attaching to `{name}` ({}): {detail}", hook.name()),
        }
    } else {
        kernel(format!("attaching to `{name}` ({})", hook.name()), detail)
    }
}

fn read_links(dir: &Path) -> BTreeSet<(u32, Hook)> {
    let Ok(rd) = std::fs::read_dir(dir.join("links")) else {
        return BTreeSet::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (i, h) = name.split_once('-')?;
            let hook = match h {
                "ingress" => Hook::Ingress,
                "egress" => Hook::Egress,
                _ => return None,
            };
            Some((i.parse().ok()?, hook))
        })
        .collect()
}

fn read_policy(map: &PolicyMap) -> Result<BTreeMap<PolicyKeyBytes, PolicyValueBytes>, LoadError> {
    let mut out = BTreeMap::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| kernel("reading a policy map", chain(&e)))?;
        out.insert(policy_key_bytes(&k), v);
    }
    Ok(out)
}

fn read_installed(maps: &mut Maps) -> Result<Installed, LoadError> {
    let mut installed = Installed::default();
    for item in maps.ipcache.iter() {
        let (k, v) = item.map_err(|e| kernel("reading polc_ipcache", chain(&e)))?;
        installed.state.ipcache.insert(ipcache_key_bytes(&k), v);
    }
    for item in maps.ifaces.iter() {
        let (k, v) = item.map_err(|e| kernel("reading polc_ifaces", chain(&e)))?;
        installed.ifaces.insert(k, IfaceInfo::from_bytes(v));
    }
    let mut infos = BTreeMap::new();
    for item in maps.endpoints.iter() {
        let (k, v) = item.map_err(|e| kernel("reading polc_endpoints", chain(&e)))?;
        infos.insert(k, EndpointInfo::from_bytes(&v));
    }
    let ids: Vec<u32> = maps
        .outer
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| kernel("reading polc_policy", chain(&e)))?;
    for id in ids {
        let Ok(ep) = u16::try_from(id) else { continue };
        let pin = maps.policy_pin(ep);
        let map: PolicyMap = match MapData::from_pin(&pin) {
            Ok(d) => typed(
                Map::from_map_data(d)
                    .map_err(|e| kernel(format!("opening {}", pin.display()), chain(&e)))?,
                "policy",
            )?,
            Err(_) => {
                let m: PolicyMap = maps.outer.get(&id, 0).map_err(|e| {
                    kernel(
                        format!("opening the policy map of endpoint {ep}"),
                        chain(&e),
                    )
                })?;
                m.map()
                    .pin(&pin)
                    .map_err(|e| kernel(format!("pinning {}", pin.display()), chain(&e)))?;
                m
            }
        };
        let policy = read_policy(&map)?;
        let info = infos.get(&id).copied();
        installed.state.endpoints.insert(
            ep,
            crate::state::EndpointState {
                name: info.map(|i| i.name()).unwrap_or_default(),
                identity: info.map_or(0, |i| i.identity),
                ingress_enforced: info
                    .is_some_and(|i| i.flags & abi::ENDPOINT_F_INGRESS_ENFORCED != 0),
                egress_enforced: info
                    .is_some_and(|i| i.flags & abi::ENDPOINT_F_EGRESS_ENFORCED != 0),
                policy,
            },
        );
        maps.policy.insert(ep, map);
    }
    Ok(installed)
}

/// One endpoint in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    /// Endpoint ID.
    pub endpoint_id: u16,
    /// Name.
    pub name: String,
    /// Identity.
    pub identity: u32,
    /// Ingress enforced.
    pub ingress_enforced: bool,
    /// Egress enforced.
    pub egress_enforced: bool,
    /// Policy-map entries.
    pub entries: usize,
    /// Entries with a proxy port (redirected to the L7 proxy).
    pub redirect_entries: usize,
    /// Those entries by proxy port.
    pub proxy_ports: BTreeMap<u16, usize>,
    /// Interfaces serving it: (ifindex, name if it still exists).
    pub interfaces: Vec<(u32, Option<String>)>,
}

/// What is installed in one pin directory, and its counters.
#[derive(Clone, Debug)]
pub struct Status {
    /// The pin directory.
    pub dir: PathBuf,
    /// Its meta record.
    pub meta: Meta,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
    /// ipcache entries.
    pub ipcache_entries: usize,
    /// Tracked connections.
    pub connections: usize,
    /// TCX links.
    pub links: usize,
    /// Packets and bytes by reason (summed over CPUs), every reason listed.
    pub counters: Vec<(Reason, Counter)>,
    /// Packets and bytes per policy entry (summed over CPUs).
    pub entries: Vec<(StatsKey, Counter)>,
}

impl Status {
    /// Reads the pins of `dir` (no object is loaded, nothing changes).
    pub fn read(dir: &Path) -> Result<Status, LoadError> {
        let meta = read_meta(dir)?.ok_or_else(|| LoadError::Kernel {
            what: format!("reading {}", dir.display()),
            detail: "no polc datapath is pinned there".into(),
        })?;
        let ipcache: LpmTrie<MapData, [u8; 20], IpcacheValueBytes> =
            typed(open_map(dir, "polc_ipcache")?, "polc_ipcache")?;
        let ifaces: HashMap<MapData, u32, [u8; 4]> =
            typed(open_map(dir, "polc_ifaces")?, "polc_ifaces")?;
        let endpoints: HashMap<MapData, u32, [u8; abi::ENDPOINT_INFO_SIZE]> =
            typed(open_map(dir, "polc_endpoints")?, "polc_endpoints")?;
        let outer: HashOfMaps<MapData, u32, PolicyMap> =
            typed(open_map(dir, "polc_policy")?, "polc_policy")?;
        let ct: HashMap<MapData, [u8; 44], [u8; 40]> = typed(open_map(dir, "polc_ct")?, "polc_ct")?;
        let stats: PerCpuHashMap<MapData, [u8; 12], [u8; 16]> =
            typed(open_map(dir, "polc_stats")?, "polc_stats")?;
        let counters: PerCpuArray<MapData, [u8; 16]> =
            typed(open_map(dir, "polc_counters")?, "polc_counters")?;

        let mut by_ep: BTreeMap<u16, Vec<(u32, Option<String>)>> = BTreeMap::new();
        for item in ifaces.iter() {
            let (i, v) = item.map_err(|e| kernel("reading polc_ifaces", chain(&e)))?;
            by_ep
                .entry(IfaceInfo::from_bytes(v).endpoint_id)
                .or_default()
                .push((i, sys::ifname(i)));
        }
        let mut eps = Vec::new();
        for item in endpoints.iter() {
            let (id, v) = item.map_err(|e| kernel("reading polc_endpoints", chain(&e)))?;
            let info = EndpointInfo::from_bytes(&v);
            let ep = info.endpoint_id;
            let mut proxy_ports: BTreeMap<u16, usize> = BTreeMap::new();
            let (entries, redirect_entries) = match outer.get(&id, 0) {
                Ok(m) => {
                    let p = read_policy(&m)?;
                    for v in p.values() {
                        let port = u16::from_be_bytes([v[0], v[1]]);
                        if port != 0 {
                            *proxy_ports.entry(port).or_default() += 1;
                        }
                    }
                    (p.len(), proxy_ports.values().sum())
                }
                Err(_) => (0, 0),
            };
            eps.push(EndpointStatus {
                endpoint_id: ep,
                name: info.name(),
                identity: info.identity,
                ingress_enforced: info.flags & abi::ENDPOINT_F_INGRESS_ENFORCED != 0,
                egress_enforced: info.flags & abi::ENDPOINT_F_EGRESS_ENFORCED != 0,
                entries,
                redirect_entries,
                proxy_ports,
                interfaces: by_ep.remove(&ep).unwrap_or_default(),
            });
        }
        eps.sort_by_key(|e| e.endpoint_id);
        let mut counts = Vec::new();
        for r in Reason::ALL {
            let values = counters
                .get(&r.index(), 0)
                .map_err(|e| kernel("reading polc_counters", chain(&e)))?;
            counts.push((r, sum(values.iter())));
        }
        let mut entries = Vec::new();
        for item in stats.iter() {
            let (k, values) = item.map_err(|e| kernel("reading polc_stats", chain(&e)))?;
            entries.push((StatsKey::from_bytes(k), sum(values.iter())));
        }
        entries.sort_by_key(|(k, _)| *k);
        Ok(Status {
            dir: dir.into(),
            meta,
            endpoints: eps,
            ipcache_entries: ipcache.keys().count(),
            connections: ct.keys().count(),
            links: read_links(dir).len(),
            counters: counts,
            entries,
        })
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a [u8; 16]>) -> Counter {
    values.fold(Counter::default(), |acc, v| {
        let c = Counter::from_bytes(*v);
        Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }
    })
}

/// The node directories pinned under `root` (those with a `polc_meta`), sorted.
pub fn instances(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("polc_meta").exists())
        .collect();
    out.sort();
    out
}

/// Turns on the kernel's per-program run statistics (`BPF_ENABLE_STATS`) while the returned
/// descriptor is open; [`run_stats`] reads them.
pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd, LoadError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| kernel("enabling BPF run statistics", chain(&e)))
}

/// How often the classifiers pinned in `dir` ran and for how long in all (both hooks; counted
/// only while statistics are on).
pub fn run_stats(dir: &Path) -> Result<(u64, std::time::Duration), LoadError> {
    let mut runs = 0;
    let mut time = std::time::Duration::ZERO;
    for hook in Hook::BOTH {
        let pin = dir.join(hook.pin());
        let info = aya::programs::ProgramInfo::from_pin(&pin)
            .map_err(|e| kernel(format!("reading {}", pin.display()), chain(&e)))?;
        runs += info.run_count();
        time += info.run_time();
    }
    Ok((runs, time))
}

/// What [`unload`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unloaded {
    /// TCX links detached.
    pub links: usize,
    /// Endpoints whose policy maps went.
    pub endpoints: usize,
}

/// Detaches every link pinned in `dir` and removes the directory with all its pins (the
/// kernel frees the maps and programs when nothing else holds them).
pub fn unload(dir: &Path) -> Result<Unloaded, LoadError> {
    check_environment()?;
    let links = read_links(dir).len();
    let endpoints = std::fs::read_dir(dir.join("policy")).map_or(0, |rd| rd.count());
    // Links first, so no program runs on half-removed maps.
    if let Ok(rd) = std::fs::read_dir(dir.join("links")) {
        for e in rd.filter_map(Result::ok) {
            std::fs::remove_file(e.path())
                .map_err(|err| kernel(format!("unpinning {}", e.path().display()), chain(&err)))?;
        }
    }
    std::fs::remove_dir_all(dir)
        .map_err(|e| kernel(format!("removing {}", dir.display()), chain(&e)))?;
    Ok(Unloaded { links, endpoints })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_round_trip_through_aya_keys() {
        let k: PolicyKeyBytes = [64, 0, 0, 0, 0x39, 0x30, 0, 0, 0, 6, 0x1f, 0x90];
        assert_eq!(policy_key_bytes(&policy_key(&k)), k);
        let mut ik = [0u8; 24];
        ik[0] = 64;
        ik[7] = 1;
        ik[8..12].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(ipcache_key_bytes(&ipcache_key(&ik)), ik);
    }

    #[test]
    fn the_objects_are_elf() {
        assert_eq!(&datapath_object()[..4], b"\x7fELF");
        assert_eq!(&rejected_object()[..4], b"\x7fELF");
        assert_ne!(fnv1a(datapath_object()), fnv1a(rejected_object()));
    }
}
