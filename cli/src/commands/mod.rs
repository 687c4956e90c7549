//! One module per subcommand.

pub mod explain_code;
pub mod lint;
