//! The polc verifier: encodes the compiler's IR in z3 and proves properties about a policy
//! set (shadowed, redundant and bypassed rules, reachability, semantic diff).
//!
//! Nothing is implemented here yet: the IR it stands on (`polc_compiler::ir`) is built by the
//! semantics issue, and the checks by the verifier issue. The crate exists so the workspace has
//! its final shape and dependency direction (`compiler <- verifier`) from the start.
