//! Phase timings for profiling: with `POLC_TIMINGS` set in the environment, the commands
//! that read a cluster print one line per phase to standard error, with the wall time and
//! the process's CPU time (user + system, every thread) the phase took:
//!
//! ```text
//! polc: timing: read files                0.052 s wall   0.050 s cpu
//! ```
//!
//! Only the main thread writes (it holds the lock on standard error while polc runs). The
//! CPU time comes from `/proc/self/stat`; where that cannot be read it shows as 0.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// When the last phase ended: wall clock and CPU seconds.
static LAST: Mutex<Option<(Instant, f64)>> = Mutex::new(None);

/// Whether timings are asked for.
pub fn enabled() -> bool {
    std::env::var_os("POLC_TIMINGS").is_some()
}

/// The process's CPU time so far (user + system, in seconds), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per
    // second on Linux).
    let ticks = |k: usize| fields.get(k).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}

/// Starts the clock (the first phase is measured from here).
pub fn start() {
    if !enabled() {
        return;
    }
    if let Ok(mut last) = LAST.lock() {
        *last = Some((Instant::now(), cpu_seconds()));
    }
}

/// Ends a phase named `what`: prints its times to `out` (standard error) when timings are
/// asked for, and starts the next phase.
pub fn lap(out: &mut dyn Write, what: &str) {
    if !enabled() {
        return;
    }
    let (now, cpu) = (Instant::now(), cpu_seconds());
    let Ok(mut last) = LAST.lock() else { return };
    if let Some((t, c)) = *last {
        let _ = writeln!(
            out,
            "polc: timing: {what:<28} {:>7.3} s wall {:>7.3} s cpu",
            now.duration_since(t).as_secs_f64(),
            cpu - c
        );
    }
    *last = Some((now, cpu));
}
