//! The `polc` binary: parses arguments and dispatches to `polc_cli`.

fn main() {
    std::process::exit(polc_cli::main_with_std_io());
}
