//! The polc eBPF backend: what the Cilium agent would write for an endpoint, byte for byte.
//!
//! ```text
//! mapstate::EndpointPolicy --layout--> cilium_policy_v2_<ep> keys and values (1.17/1.18, 1.19)
//!                          --npds----> cilium.NetworkPolicy for Envoy (protobuf JSON)
//! identity::IpcacheEntry   --ipcache-> cilium_ipcache / cilium_ipcache_v2 keys and values
//! records: whole maps as binary record files and as readable JSON
//! ```
//!
//! Everything here is pure encoding: no syscalls and no IO. Each encoder has a decoder that
//! rejects what the agent never writes, so map dumps can be read back and compared. The aya
//! loader will come on top of these layouts.

pub mod abi;
pub mod error;
pub mod ipcache;
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
