//! `polc agent`'s `/metrics` and `/healthz`, read over HTTP from the caller's network
//! namespace (the agent's tests, the lab's, and the agent's benchmark).

use std::io::{Read, Write};
use std::time::Duration;

/// GET `path` from 127.0.0.1:`port`: (status, body).
pub fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of metric `name` (its line `NAME VALUE`) in a `/metrics` body; -1 when it has
/// none.
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}
