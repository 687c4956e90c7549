//! The polc eBPF backend: Cilium-layout policy-map keys and values, ipcache entries, proxy
//! rules, and the aya loader.
//!
//! Nothing is implemented here yet: it compiles the map state that the semantics issue builds.
//! The crate exists so the workspace has its final shape and dependency direction
//! (`compiler <- ebpf-backend`) from the start.
