//! One module per subcommand.

pub mod agent;
pub mod cluster;
pub mod compile;
pub mod diff;
pub mod diff_symbolic;
pub mod explain;
pub mod explain_code;
pub mod r#gen;
pub mod graph;
pub mod lab;
pub mod lint;
pub mod load;
pub mod proxy;
pub mod status;
pub mod symbolic;
pub mod test;
pub mod unload;
pub mod webhook;
