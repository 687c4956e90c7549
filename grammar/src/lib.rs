//! pest grammars of polc's small languages and their typed trees.
//!
//! - [`selector`]: label selector expressions in kubectl's syntax
//!   (`app=web,env in (prod,staging),!legacy`), with Cilium's label sources.
//! - [`polt`]: policy tests (`*.polt`), expectations about flows checked by `polc test`.

pub mod polt;
pub mod selector;

pub use polt::{PoltError, PoltFile, parse_polt};
pub use selector::{Operator, ParseError, Requirement, Selector, parse_selector};
