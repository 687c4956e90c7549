//! Probes with real packets between the lab's namespaces. A socket belongs to the network
//! namespace of the thread that creates it, so every socket is created by a thread that joined
//! its namespace ([`polc_ebpf::sys::in_netns`]) and used from any thread afterwards.
//!
//! - TCP: a listener on the destination accepts and echoes; the probe connects from the
//!   source address and sends a token that must come back. *Connected* needs the handshake
//!   and the echo (the replies pass the datapath only through its conntrack).
//! - UDP: an echo socket on the destination; *connected* when the datagram comes back.
//! - ICMP / ICMPv6 echo request: the destination's kernel answers; *connected* on the reply.
//! - Other ICMP types and SCTP: one packet, and a raw socket on the destination that sees it
//!   arrive (*delivered*); nothing answers them.
//!
//! - L7: an HTTP request over TCP, or a DNS query over UDP or TCP; the destination's TCP
//!   listener answers HTTP (`200`) and its UDP and TCP listeners answer DNS (from the lab's
//!   records) besides echoing. *Denied* when the proxy refused the request (`403 Access
//!   denied`, `REFUSED`), *connected* when the destination answered it.
//!
//! *Refused* means the destination answered with a reset or an ICMP error (the packets got
//! through); *dropped* means nothing came back in time.

use polc_compiler::eval::Request;
use polc_ebpf::sys;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often server loops look at their stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Token length: every probe carries its own.
const TOKEN: usize = 16;
/// The first two bytes of every token.
const DNS_TCP_LENGTH: u16 = (TOKEN - 2) as u16;

/// Whether `answer` to a probe that carried `token` (and no request) came from the L7 proxy
/// holding the port rather than from the destination: an HTTP answer, or a DNS answer to the
/// token read as a query (over TCP with its length in front).
fn proxy_answer(answer: &[u8], token: &[u8; TOKEN], tcp: bool) -> Option<&'static str> {
    if answer.starts_with(b"HTTP/1.") {
        return Some("the HTTP proxy on the port answered (the probe is not HTTP)");
    }
    // The ID is the header's first two bytes: the token's own over UDP, those after the
    // length over TCP.
    let (id_at, msg) = if tcp {
        (2, answer.get(2..)?)
    } else {
        (0, answer)
    };
    let dns = msg.len() >= 12 && msg[..2] == token[id_at..id_at + 2] && msg[2] & 0x80 != 0;
    dns.then_some("the DNS proxy on the port answered (the probe is not a DNS query)")
}

/// What a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP to a port.
    Tcp(u16),
    /// UDP to a port.
    Udp(u16),
    /// SCTP to a port (one packet).
    Sctp(u16),
    /// ICMP (or ICMPv6, by the addresses' family) of a type.
    Icmp(u8),
}

impl L4 {
    fn proto(self, v6: bool) -> u8 {
        match self {
            L4::Tcp(_) => 6,
            L4::Udp(_) => 17,
            L4::Sctp(_) => 132,
            L4::Icmp(_) if v6 => 58,
            L4::Icmp(_) => 1,
        }
    }

    fn is_echo(self, v6: bool) -> bool {
        matches!(self, L4::Icmp(t) if t == if v6 { 128 } else { 8 })
    }

    /// Whether the probe is one packet that nothing answers.
    pub fn one_way(self, v6: bool) -> bool {
        matches!(self, L4::Sctp(_)) || matches!(self, L4::Icmp(_)) && !self.is_echo(v6)
    }
}

/// One end of a probe: an address in a network namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct End {
    /// The namespace's file (`/run/netns/NAME`).
    pub netns: PathBuf,
    /// The address.
    pub addr: IpAddr,
}

/// What happened to a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The connection (or echo) went both ways.
    Connected,
    /// The one packet arrived.
    Delivered,
    /// The destination answered with a reset or an ICMP error.
    Refused,
    /// Nothing came back in time.
    Dropped,
    /// The L7 proxy refused the request (how it said so).
    Denied(String),
    /// The probe could not be run.
    Failed(String),
}

impl Outcome {
    /// `connected`, `delivered`, `refused`, `dropped`, `error`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Delivered => "delivered",
            Outcome::Refused => "refused",
            Outcome::Dropped => "dropped",
            Outcome::Denied(_) => "denied",
            Outcome::Failed(_) => "error",
        }
    }

    /// Whether the packets got through (the verdict `allow`); `None` for a failed probe.
    pub fn allowed(&self) -> Option<bool> {
        match self {
            Outcome::Connected | Outcome::Delivered | Outcome::Refused => Some(true),
            Outcome::Dropped | Outcome::Denied(_) => Some(false),
            Outcome::Failed(_) => None,
        }
    }
}

/// A probe's outcome and how long it took.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The outcome.
    pub outcome: Outcome,
    /// From the first packet to the answer (or the timeout).
    pub elapsed: Duration,
    /// More about it, for people.
    pub detail: Option<String>,
}

impl Default for Observed {
    fn default() -> Observed {
        Observed::failed("the probe did not run")
    }
}

impl Observed {
    fn new(outcome: Outcome, start: Instant) -> Observed {
        Observed {
            outcome,
            elapsed: start.elapsed(),
            detail: None,
        }
    }

    fn failed(e: impl std::fmt::Display) -> Observed {
        Observed {
            outcome: Outcome::Failed(e.to_string()),
            elapsed: Duration::ZERO,
            detail: None,
        }
    }
}

fn token() -> [u8; TOKEN] {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut t = [0u8; TOKEN];
    t[..8].copy_from_slice(&now.to_be_bytes());
    // Bytes 0-1 read as a DNS-over-TCP length (the 14 bytes that follow) and bytes 2-15 as
    // a DNS header whose QR bit is clear: a DNS proxy on the port (the flow has no request)
    // answers it FORMERR, which the probe can tell from silence.
    t[..2].copy_from_slice(&DNS_TCP_LENGTH.to_be_bytes());
    t[2] &= 0x7f; // QR of the datagram read as a DNS header
    t[4] &= 0x7f; // QR of the 14 bytes after the length
    t[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    // Bytes 12-15 are an ICMP echo's identifier and sequence number: the identifier is never
    // 0, or the echo's conntrack entry (identifier, 0) would match every other ICMP type
    // between the same two addresses, whose ports are (0, 0).
    t[12..14].copy_from_slice(&(0x8000 | (seq as u16 & 0x7fff)).to_be_bytes());
    t[14..].copy_from_slice(&(now as u16).to_be_bytes());
    t
}

/// Creates a socket inside `netns`.
fn socket_in(netns: &Path, domain: Domain, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    sys::in_netns(netns, || Socket::new(domain, ty, Some(proto)))?
}

fn sockaddr(ip: IpAddr, port: u16) -> SockAddr {
    SockAddr::from(SocketAddr::new(ip, port))
}

fn domain(ip: IpAddr) -> Domain {
    if ip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

/// The Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP message of `ty` with the token as identifier/sequence and payload.
fn icmp_packet(ty: u8, v6: bool, token: &[u8; TOKEN]) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    p.extend_from_slice(&token[12..16]); // identifier and sequence
    p.extend_from_slice(token);
    if !v6 {
        // The kernel computes ICMPv6 checksums of raw sockets; ICMP's are ours.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// An SCTP common header (the checksum is left zero: only raw sockets read it) and the token.
fn sctp_packet(sport: u16, dport: u16, token: &[u8; TOKEN]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + TOKEN);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(token);
    p
}

/// The L4 payload of what a raw socket read (IPv4 raw sockets include the IP header).
fn l4_of(buf: &[u8], v6: bool) -> &[u8] {
    if v6 {
        return buf;
    }
    let ihl = usize::from(buf.first().map_or(0, |b| b & 0x0f)) * 4;
    buf.get(ihl..).unwrap_or(&[])
}

/// Whether `payload` (an L4 message) is the one-way probe `l4` with `token`.
fn matches_one_way(payload: &[u8], l4: L4, token: &[u8; TOKEN]) -> bool {
    match l4 {
        L4::Icmp(t) => payload.len() >= 8 + TOKEN && payload[0] == t && payload[8..] == token[..],
        L4::Sctp(port) => {
            payload.len() >= 12 + TOKEN
                && payload[2..4] == port.to_be_bytes()
                && payload[12..12 + TOKEN] == token[..]
        }
        _ => false,
    }
}

/// Packets one raw socket saw, for one-way probes.
#[derive(Default)]
struct Sink {
    seen: Mutex<Vec<(Instant, Vec<u8>)>>,
    cond: Condvar,
}

impl Sink {
    /// Waits until a packet that `matches` arrived, or `deadline`.
    fn wait(&self, deadline: Instant, matches: impl Fn(&[u8]) -> bool) -> Option<Instant> {
        let Ok(mut seen) = self.seen.lock() else {
            return None;
        };
        loop {
            if let Some((at, _)) = seen.iter().find(|(_, p)| matches(p)) {
                return Some(*at);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            seen = match self.cond.wait_timeout(seen, deadline - now) {
                Ok((s, _)) => s,
                Err(_) => return None,
            };
        }
    }
}

/// Key of a server: the destination, the protocol (and for raw sinks the source).
type ServerKey = (End, u8, u16, Option<IpAddr>);

/// The listeners and sinks of a set of probes, stopped together.
pub struct Servers {
    /// The names the lab's DNS servers answer (lower case, trailing dot), and their
    /// addresses.
    records: Arc<Vec<(String, IpAddr)>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sinks: BTreeMap<ServerKey, Arc<Sink>>,
    ready: BTreeMap<ServerKey, Result<(), String>>,
}

impl Default for Servers {
    fn default() -> Self {
        Servers::new()
    }
}

impl Servers {
    /// No servers yet.
    pub fn new() -> Servers {
        Servers {
            records: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            sinks: BTreeMap::new(),
            ready: BTreeMap::new(),
        }
    }

    /// Servers whose DNS answers hold these records (name, address).
    pub fn with_records(records: Vec<(String, IpAddr)>) -> Servers {
        Servers {
            records: Arc::new(
                records
                    .into_iter()
                    .map(|(n, ip)| (polc_compiler::eval::fqdn(&n), ip))
                    .collect(),
            ),
            ..Servers::new()
        }
    }

    fn key(src: &End, dst: &End, l4: L4) -> ServerKey {
        let v6 = dst.addr.is_ipv6();
        let port = match l4 {
            L4::Tcp(p) | L4::Udp(p) | L4::Sctp(p) => p,
            L4::Icmp(t) => u16::from(t),
        };
        let from = l4.one_way(v6).then_some(src.addr);
        (dst.clone(), l4.proto(v6), port, from)
    }

    /// Starts what the probe `src -> dst` needs on the destination (idempotent).
    pub fn prepare(&mut self, src: &End, dst: &End, l4: L4) -> Result<(), String> {
        let key = Self::key(src, dst, l4);
        if let Some(r) = self.ready.get(&key) {
            return r.clone();
        }
        let v6 = dst.addr.is_ipv6();
        let r = match l4 {
            L4::Tcp(port) => self.tcp_echo(dst, port),
            L4::Udp(port) => self.udp_echo(dst, port),
            _ if l4.is_echo(v6) => Ok(()),
            _ => self.sink(src, dst, l4, key.clone()),
        };
        self.ready.insert(key, r.clone());
        r
    }

    fn tcp_echo(&mut self, dst: &End, port: u16) -> Result<(), String> {
        let addr = sockaddr(dst.addr, port);
        let s = socket_in(&dst.netns, domain(dst.addr), Type::STREAM, Protocol::TCP)
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&addr)?;
                s.listen(128)?;
                // SO_RCVTIMEO bounds accept() too.
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            })
            .map_err(|e| format!("cannot listen on {} (TCP): {e}", fmt_addr(dst.addr, port)))?;
        let listener = TcpListener::from(s);
        let stop = self.stop.clone();
        let records = self.records.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let records = records.clone();
                        std::thread::spawn(move || echo_tcp(conn, &records));
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        }));
        Ok(())
    }

    fn udp_echo(&mut self, dst: &End, port: u16) -> Result<(), String> {
        let addr = sockaddr(dst.addr, port);
        let s = socket_in(&dst.netns, domain(dst.addr), Type::DGRAM, Protocol::UDP)
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&addr)?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            })
            .map_err(|e| format!("cannot listen on {} (UDP): {e}", fmt_addr(dst.addr, port)))?;
        let socket = UdpSocket::from(s);
        let stop = self.stop.clone();
        let records = self.records.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    // A token comes back as it came; a DNS query gets an answer.
                    let answer = (n != TOKEN)
                        .then(|| dns_answer(&buf[..n], &records))
                        .flatten();
                    let _ = socket.send_to(answer.as_deref().unwrap_or(&buf[..n]), peer);
                }
            }
        }));
        Ok(())
    }

    fn sink(&mut self, src: &End, dst: &End, l4: L4, key: ServerKey) -> Result<(), String> {
        let v6 = dst.addr.is_ipv6();
        let proto = Protocol::from(i32::from(l4.proto(v6)));
        // Bound to the destination and connected to the source: the socket sees only this
        // pair's packets of the protocol.
        let s = socket_in(&dst.netns, domain(dst.addr), Type::RAW, proto)
            .and_then(|s| {
                s.bind(&sockaddr(dst.addr, 0))?;
                s.connect(&sockaddr(src.addr, 0))?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            })
            .map_err(|e| format!("cannot capture on {}: {e}", dst.addr))?;
        let sink = Arc::new(Sink::default());
        self.sinks.insert(key, sink.clone());
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut s = s;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = s.read(&mut buf) {
                    let at = Instant::now();
                    let payload = l4_of(&buf[..n], v6).to_vec();
                    if let Ok(mut seen) = sink.seen.lock() {
                        seen.push((at, payload));
                    }
                    sink.cond.notify_all();
                }
            }
        }));
        Ok(())
    }

    /// Stops every server.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Echoes a TCP connection; a connection that starts with an HTTP request line is served
/// as HTTP, one that starts with a length-prefixed DNS query as DNS.
fn echo_tcp(mut conn: TcpStream, records: &[(String, IpAddr)]) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let mut first = true;
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if first && buf[0].is_ascii_uppercase() {
                    return serve_http(conn, buf[..n].to_vec());
                }
                let framed =
                    usize::from(u16::from_be_bytes([buf[0], buf[1]])) == n.saturating_sub(2);
                if first
                    && n > 2
                    && n != TOKEN
                    && framed
                    && let Some(answer) = dns_answer(&buf[2..n], records)
                {
                    let mut out = (answer.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&answer);
                    let _ = conn.write_all(&out);
                    return;
                }
                first = false;
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Answers HTTP/1.1 requests on `conn` (`got` holds what was read already) with `200` and
/// the request line, until the client closes or says `Connection: close`.
fn serve_http(mut conn: TcpStream, mut got: Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            if got.len() > 64 * 1024 {
                return;
            }
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).into_owned();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // The body, read and dropped.
        let mut rest = got.split_off(end + 4);
        while rest.len() < length {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
        got = rest.split_off(length);
        let line = head.lines().next().unwrap_or_default();
        let body = format!("polc lab: {line}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// The lab DNS server's answer to a query: the records of the name (`NXDOMAIN` without any);
/// `None` when `msg` is not a query.
fn dns_answer(msg: &[u8], records: &[(String, IpAddr)]) -> Option<Vec<u8>> {
    use crate::proxy::wire;
    let q = wire::query(msg)?;
    let ips: Vec<(IpAddr, u32)> = records
        .iter()
        .filter(|(name, ip)| {
            *name == q.name
                && match q.qtype {
                    wire::TYPE_A => ip.is_ipv4(),
                    wire::TYPE_AAAA => ip.is_ipv6(),
                    _ => false,
                }
        })
        .map(|(_, ip)| (*ip, 30))
        .collect();
    let known = records.iter().any(|(name, _)| *name == q.name);
    let rcode = if known { 0 } else { wire::RCODE_NXDOMAIN };
    Some(wire::build_response(msg, &q, rcode, &ips))
}

fn fmt_addr(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// Runs one probe from `src` to `dst`, with the L7 request `request` if any (the
/// destination's server must be prepared).
pub fn probe(
    servers: &Servers,
    src: &End,
    dst: &End,
    l4: L4,
    request: Option<&Request>,
    timeout: Duration,
) -> Observed {
    let v6 = dst.addr.is_ipv6();
    if src.addr.is_ipv6() != v6 {
        return Observed::failed("the two addresses are of different families");
    }
    match (l4, request) {
        (L4::Tcp(port), Some(r @ Request::Http { .. })) => {
            return probe_http(src, dst, port, r, timeout);
        }
        (L4::Tcp(port), Some(Request::Dns { query })) => {
            return probe_dns(src, dst, L4::Tcp(port), query, timeout);
        }
        (L4::Udp(port), Some(Request::Dns { query })) => {
            return probe_dns(src, dst, L4::Udp(port), query, timeout);
        }
        (_, Some(_)) => {
            return Observed::failed("the lab sends HTTP over TCP and DNS over UDP or TCP only");
        }
        (_, None) => {}
    }
    match l4 {
        L4::Tcp(port) => probe_tcp(src, dst, port, timeout),
        L4::Udp(port) => probe_udp(src, dst, port, timeout),
        _ if l4.is_echo(v6) => probe_echo(src, dst, l4, timeout),
        _ => match servers.sinks.get(&Servers::key(src, dst, l4)) {
            Some(sink) => probe_one_way(sink, src, dst, l4, timeout),
            None => Observed::failed("no capture on the destination"),
        },
    }
}

fn connected_socket(src: &End, dst: &End, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = socket_in(&src.netns, domain(dst.addr), ty, proto)?;
    s.bind(&sockaddr(src.addr, 0))?;
    Ok(s)
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn probe_tcp(src: &End, dst: &End, port: u16, timeout: Duration) -> Observed {
    let s = match connected_socket(src, dst, Type::STREAM, Protocol::TCP) {
        Ok(s) => s,
        Err(e) => return Observed::failed(format!("TCP socket on {}: {e}", src.addr)),
    };
    let start = Instant::now();
    let deadline = start + timeout;
    match s.connect_timeout(&sockaddr(dst.addr, port), timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            return Observed::new(Outcome::Refused, start);
        }
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return Observed::new(Outcome::Dropped, start);
        }
        Err(e) => return Observed::failed(format!("connecting to {}: {e}", dst.addr)),
    }
    let mut stream = TcpStream::from(s);
    let t = token();
    let back = if stream.write_all(&t).is_ok() {
        read_until(&mut stream, deadline, |b| {
            b.len() >= TOKEN || proxy_answer(b, &t, true).is_some()
        })
    } else {
        Vec::new()
    };
    if back.get(..TOKEN) == Some(&t[..]) {
        Observed::new(Outcome::Connected, start)
    } else if let Some(who) = proxy_answer(&back, &t, true) {
        let mut o = Observed::new(Outcome::Connected, start);
        o.detail = Some(who.into());
        o
    } else {
        let mut o = Observed::new(Outcome::Dropped, start);
        o.detail = Some("the handshake completed but the echo did not come back".into());
        o
    }
}

/// A TCP connection from `src` to `dst`, or the outcome that stopped it.
fn connect_tcp(src: &End, dst: &End, port: u16, timeout: Duration) -> Result<TcpStream, Observed> {
    let s = connected_socket(src, dst, Type::STREAM, Protocol::TCP)
        .map_err(|e| Observed::failed(format!("TCP socket on {}: {e}", src.addr)))?;
    let start = Instant::now();
    match s.connect_timeout(&sockaddr(dst.addr, port), timeout) {
        Ok(()) => Ok(TcpStream::from(s)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            Err(Observed::new(Outcome::Refused, start))
        }
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Err(Observed::new(Outcome::Dropped, start))
        }
        Err(e) => Err(Observed::failed(format!("connecting to {}: {e}", dst.addr))),
    }
}

/// Reads from `stream` until `done` says the bytes are complete, the peer closes, or the
/// deadline.
fn read_until(stream: &mut TcpStream, deadline: Instant, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) && got.len() < 256 * 1024 {
        let _ = stream.set_read_timeout(Some(remaining(deadline)));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    got
}

/// An HTTP/1.1 request; the answer decides: `403` with Cilium's `Access denied` body is the
/// proxy's refusal, any other answer the destination's.
fn probe_http(src: &End, dst: &End, port: u16, req: &Request, timeout: Duration) -> Observed {
    let Request::Http {
        method,
        path,
        host,
        headers,
    } = req
    else {
        return Observed::failed("not an HTTP request");
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let mut stream = match connect_tcp(src, dst, port, timeout) {
        Ok(s) => s,
        Err(o) => return o,
    };
    // The host as the flow gives it (empty when it gives none), as eval judges it.
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(text.as_bytes()).is_err() {
        let mut o = Observed::new(Outcome::Dropped, start);
        o.detail = Some("the connection broke before the request was sent".into());
        return o;
    }
    let answer = read_until(&mut stream, deadline, |_| false);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .lines()
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The lab's servers answer 200: a 403 is the proxy's (Cilium's body, none to HEAD).
    let proxy_body = body.starts_with("Access denied") || (method == "HEAD" && body.is_empty());
    match status {
        Some(403) if proxy_body => {
            Observed::new(Outcome::Denied("403 Access denied".into()), start)
        }
        Some(code) => {
            let mut o = Observed::new(Outcome::Connected, start);
            o.detail = Some(format!("HTTP {code}"));
            o
        }
        None => {
            let mut o = Observed::new(Outcome::Dropped, start);
            o.detail = Some("the connection was made but no HTTP answer came".into());
            o
        }
    }
}

/// A DNS query for `name` (type A, AAAA from an IPv6 source); `REFUSED` is the proxy's
/// refusal, any other answer the server's.
fn probe_dns(src: &End, dst: &End, l4: L4, name: &str, timeout: Duration) -> Observed {
    use crate::proxy::wire;
    let t = token();
    let id = u16::from_be_bytes([t[14], t[15]]);
    let qtype = if dst.addr.is_ipv6() {
        wire::TYPE_AAAA
    } else {
        wire::TYPE_A
    };
    let query = wire::build_query(id, name, qtype);
    let start = Instant::now();
    let deadline = start + timeout;
    let answer = match l4 {
        L4::Tcp(port) => {
            let mut stream = match connect_tcp(src, dst, port, timeout) {
                Ok(s) => s,
                Err(o) => return o,
            };
            let mut msg = (query.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&query);
            if stream.write_all(&msg).is_err() {
                return Observed::new(Outcome::Dropped, start);
            }
            let got = read_until(&mut stream, deadline, |b| {
                b.len() >= 2 && b.len() >= 2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
            });
            got.get(2..).map(<[u8]>::to_vec)
        }
        L4::Udp(port) => {
            let s = match connected_socket(src, dst, Type::DGRAM, Protocol::UDP)
                .and_then(|s| s.connect(&sockaddr(dst.addr, port)).map(|()| s))
            {
                Ok(s) => UdpSocket::from(s),
                Err(e) => return Observed::failed(format!("UDP socket on {}: {e}", src.addr)),
            };
            if let Err(e) = s.send(&query) {
                return Observed::failed(format!("sending to {}: {e}", dst.addr));
            }
            let mut buf = [0u8; 4096];
            let mut got = None;
            while got.is_none() && Instant::now() < deadline {
                let _ = s.set_read_timeout(Some(remaining(deadline)));
                match s.recv(&mut buf) {
                    Ok(n) if n >= 2 && buf[..2] == query[..2] => got = Some(buf[..n].to_vec()),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        return Observed::new(Outcome::Refused, start);
                    }
                    _ => {}
                }
            }
            got
        }
        _ => return Observed::failed("DNS goes over UDP or TCP"),
    };
    match answer.as_deref().and_then(wire::response) {
        Some((wire::RCODE_REFUSED, _)) => Observed::new(Outcome::Denied("REFUSED".into()), start),
        Some((rcode, addrs)) => {
            let mut o = Observed::new(Outcome::Connected, start);
            let ips: Vec<String> = addrs.iter().map(|a| a.ip.to_string()).collect();
            o.detail = Some(format!(
                "rcode {rcode}, {} address(es) {}",
                ips.len(),
                ips.join(" ")
            ));
            o
        }
        None => Observed::new(Outcome::Dropped, start),
    }
}

fn probe_udp(src: &End, dst: &End, port: u16, timeout: Duration) -> Observed {
    let s = match connected_socket(src, dst, Type::DGRAM, Protocol::UDP)
        .and_then(|s| s.connect(&sockaddr(dst.addr, port)).map(|()| s))
    {
        Ok(s) => UdpSocket::from(s),
        Err(e) => return Observed::failed(format!("UDP socket on {}: {e}", src.addr)),
    };
    let t = token();
    let start = Instant::now();
    let deadline = start + timeout;
    if let Err(e) = s.send(&t) {
        return Observed::failed(format!("sending to {}: {e}", dst.addr));
    }
    let mut buf = [0u8; 2048];
    loop {
        let _ = s.set_read_timeout(Some(remaining(deadline)));
        match s.recv(&mut buf) {
            Ok(n) if buf[..n] == t => return Observed::new(Outcome::Connected, start),
            Ok(n) if proxy_answer(&buf[..n], &t, false).is_some() => {
                let mut o = Observed::new(Outcome::Connected, start);
                o.detail = proxy_answer(&buf[..n], &t, false).map(Into::into);
                return o;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Observed::new(Outcome::Refused, start);
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Observed::new(Outcome::Dropped, start);
        }
    }
}

fn raw_socket(src: &End, dst: &End, proto: u8) -> std::io::Result<Socket> {
    let s = connected_socket(src, dst, Type::RAW, Protocol::from(i32::from(proto)))?;
    s.connect(&sockaddr(dst.addr, 0))?;
    Ok(s)
}

fn probe_echo(src: &End, dst: &End, l4: L4, timeout: Duration) -> Observed {
    let v6 = dst.addr.is_ipv6();
    let L4::Icmp(ty) = l4 else {
        return Observed::failed("not an echo request");
    };
    let mut s = match raw_socket(src, dst, l4.proto(v6)) {
        Ok(s) => s,
        Err(e) => return Observed::failed(format!("ICMP socket on {}: {e}", src.addr)),
    };
    let t = token();
    let packet = icmp_packet(ty, v6, &t);
    let reply = if v6 { 129 } else { 0 };
    let start = Instant::now();
    let deadline = start + timeout;
    if let Err(e) = s.send(&packet) {
        return Observed::failed(format!("sending to {}: {e}", dst.addr));
    }
    let mut buf = [0u8; 2048];
    loop {
        let _ = s.set_read_timeout(Some(remaining(deadline)));
        if let Ok(n) = s.read(&mut buf) {
            let m = l4_of(&buf[..n], v6);
            if m.len() >= 8 + TOKEN && m[0] == reply && m[4..8] == packet[4..8] && m[8..] == t {
                return Observed::new(Outcome::Connected, start);
            }
        }
        if Instant::now() >= deadline {
            return Observed::new(Outcome::Dropped, start);
        }
    }
}

fn probe_one_way(sink: &Sink, src: &End, dst: &End, l4: L4, timeout: Duration) -> Observed {
    let v6 = dst.addr.is_ipv6();
    let s = match raw_socket(src, dst, l4.proto(v6)) {
        Ok(s) => s,
        Err(e) => return Observed::failed(format!("raw socket on {}: {e}", src.addr)),
    };
    let t = token();
    let packet = match l4 {
        L4::Icmp(ty) => icmp_packet(ty, v6, &t),
        L4::Sctp(port) => sctp_packet(u16::from_be_bytes([t[14], t[15]]) | 0x8000, port, &t),
        _ => return Observed::failed("not a one-way probe"),
    };
    let start = Instant::now();
    if let Err(e) = s.send(&packet) {
        return Observed::failed(format!("sending to {}: {e}", dst.addr));
    }
    match sink.wait(start + timeout, |p| matches_one_way(p, l4, &t)) {
        Some(at) => Observed {
            outcome: Outcome::Delivered,
            elapsed: at.saturating_duration_since(start),
            detail: None,
        },
        None => Observed::new(Outcome::Dropped, start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum_verifies() {
        let t = token();
        let p = icmp_packet(8, false, &t);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[8..], &t);
        let p6 = icmp_packet(128, true, &t);
        assert_eq!(&p6[2..4], &[0, 0]);
    }

    #[test]
    fn one_way_matching() {
        let t = token();
        let other = token();
        assert_ne!(t, other);
        assert_ne!(&t[12..14], &[0, 0], "an echo identifier is never 0");
        let p = icmp_packet(13, false, &t);
        assert!(matches_one_way(&p, L4::Icmp(13), &t));
        assert!(!matches_one_way(&p, L4::Icmp(14), &t));
        assert!(!matches_one_way(&p, L4::Icmp(13), &other));
        let s = sctp_packet(40000, 9999, &t);
        assert!(matches_one_way(&s, L4::Sctp(9999), &t));
        assert!(!matches_one_way(&s, L4::Sctp(9998), &t));
        let mut v4 = vec![0x45u8];
        v4.extend_from_slice(&[0; 19]);
        v4.extend_from_slice(&p);
        assert_eq!(l4_of(&v4, false), &p[..]);
        assert!(L4::Icmp(13).one_way(false));
        assert!(!L4::Icmp(8).one_way(false));
        assert!(L4::Icmp(8).one_way(true));
        assert!(!L4::Icmp(128).one_way(true));
        assert!(L4::Sctp(1).one_way(false));
    }

    /// A token reads as a DNS query header over UDP and, after its length, over TCP; the
    /// DNS proxy's FORMERR to either (and an HTTP proxy's answer) is recognised, an echo is
    /// not. (Each probe has its own socket, so answers need not carry the token.)
    #[test]
    fn a_proxy_answering_a_token_is_recognised() {
        use crate::proxy::wire;
        let t = token();
        assert_eq!(usize::from(u16::from_be_bytes([t[0], t[1]])), TOKEN - 2);
        assert!(wire::query(&t).is_none() && wire::query(&t[2..]).is_none());
        let udp = wire::format_error(&t).unwrap();
        assert!(proxy_answer(&udp, &t, false).is_some());
        let mut tcp = ((udp.len()) as u16).to_be_bytes().to_vec();
        tcp.extend(wire::format_error(&t[2..]).unwrap());
        assert!(proxy_answer(&tcp, &t, true).is_some());
        assert!(proxy_answer(b"HTTP/1.1 400 Bad Request\r\n", &t, true).is_some());
        assert!(
            proxy_answer(&t, &t, false).is_none(),
            "an echo is the destination's"
        );
        // A query coming back (QR clear) is no answer; nor is a short one.
        assert!(proxy_answer(&t[..12], &t, false).is_none());
        assert!(proxy_answer(&udp[..11], &t, false).is_none());
    }

    #[test]
    fn outcomes_map_to_verdicts() {
        assert_eq!(Outcome::Refused.allowed(), Some(true));
        assert_eq!(Outcome::Dropped.allowed(), Some(false));
        assert_eq!(Outcome::Failed("x".into()).allowed(), None);
    }
}
