//! pest grammars of polc's small languages and their typed trees.
//!
//! - [`selector`]: label selector expressions in kubectl's syntax
//!   (`app=web,env in (prod,staging),!legacy`), with Cilium's label sources.
//!
//! The `.polt` policy-test language arrives with the verifier issue.

pub mod selector;

pub use selector::{Operator, ParseError, Requirement, Selector, parse_selector};
