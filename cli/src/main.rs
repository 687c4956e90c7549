//! The `polc` binary: parses arguments and dispatches to `polc_cli`.

/// mimalloc instead of the system allocator: reading a large cluster builds millions of
/// small strings and vectors, and glibc's malloc spent a quarter of `polc graph`'s time on
/// them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(polc_cli::main_with_std_io());
}
