//! The polc eBPF backend: what the Cilium agent would write for an endpoint, byte for byte.
//!
//! ```text
//! mapstate::EndpointPolicy --layout--> cilium_policy_v2_<ep> keys and values (1.17/1.18, 1.19)
//!                          --npds----> cilium.NetworkPolicy for Envoy (protobuf JSON)
//!                                      --l7--> read back: the proxy's verdict on a request
//! identity::IpcacheEntry   --ipcache-> cilium_ipcache / cilium_ipcache_v2 keys and values
//! records: whole maps as binary record files and as readable JSON
//! ```
//!
//! The encoders are pure (no syscalls, no IO); each has a decoder that rejects what the agent
//! never writes, so map dumps can be read back and compared. On top of them:
//!
//! ```text
//! state::NodeState (desired bytes) --sync--> loader::Loader (aya) --> pinned maps, TCX links
//!                                                                  --> bpf/datapath.c
//! ```
//!
//! `abi` mirrors `bpf/abi.h`; `sync` is the journaled diff (pure, tested with injected
//! faults); `loader` and `sys` make the syscalls.

pub mod abi;
pub mod error;
pub mod ipcache;
pub mod l7;
pub mod layout;
pub mod loader;
pub mod npds;
pub mod records;
pub mod state;
pub mod sync;
pub mod sys;

pub use error::Error;
pub use ipcache::IpcacheLayout;
pub use layout::Layout;
