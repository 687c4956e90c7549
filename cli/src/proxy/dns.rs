//! The DNS proxy (datapath spec §4.3): an endpoint's DNS queries on ports with DNS rules
//! arrive here (UDP and TCP), the name is checked against the `matchName` / `matchPattern`
//! rules of the selectors that select the server, and the query is forwarded to the server it
//! was sent to, or answered `REFUSED` as Cilium's proxy answers (`tofqdns-dns-reject-response-
//! code` default). Forwarded queries leave from the client's address (transparently, marked as
//! the egress proxy's), so the server's own policy sees the client; answers go back from the
//! server's address.

use super::config::{Config, DnsEndpoint};
use super::wire;
use super::{Identities, Ipcache, Via};
use polc_compiler::eval::{fqdn, pattern_matches};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long the server may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client may take to send a message.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message (a TCP message's length field is 16 bits).
const MAX_MESSAGE: usize = 65535;

/// The verdict on a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsVerdict {
    /// Forwarded, by the rule of this policy.
    Allowed(String),
    /// Refused, and why.
    Refused(&'static str),
}

/// Queries the DNS proxy has handled.
#[derive(Default)]
pub struct DnsCounters {
    /// Forwarded to the server.
    pub forwarded: AtomicU64,
    /// Answered `REFUSED`.
    pub refused: AtomicU64,
    /// Not a query (dropped).
    pub malformed: AtomicU64,
    /// Forwarded, but the server did not answer (the client gets `SERVFAIL`).
    pub failed: AtomicU64,
}

/// Called with the (name, address, TTL) of a forwarded answer whose names a `toFQDNs`
/// selector matches, before the answer goes to the client; returns when the node knows them.
pub type LearnHook = Arc<dyn Fn(Vec<(String, IpAddr, u32)>) + Send + Sync>;

/// The DNS proxy's state.
pub struct DnsProxy {
    by_ip: RwLock<Arc<HashMap<IpAddr, Arc<DnsEndpoint>>>>,
    selectors: RwLock<Arc<Vec<String>>>,
    /// Where learnt addresses go.
    pub learn: RwLock<Option<LearnHook>>,
    identities: RwLock<Arc<Ipcache>>,
    /// What it has done.
    pub counters: DnsCounters,
    log: Option<Mutex<Box<dyn Write + Send>>>,
}

fn index(config: &Config) -> Arc<HashMap<IpAddr, Arc<DnsEndpoint>>> {
    let mut by_ip = HashMap::new();
    for e in &config.dns {
        let e = Arc::new(e.clone());
        for ip in &e.endpoint_ips {
            by_ip.insert(*ip, e.clone());
        }
    }
    Arc::new(by_ip)
}

impl DnsProxy {
    /// A DNS proxy with the DNS rules and the ipcache of `config`, logging to `log`.
    pub fn new(config: &Config, log: Option<Box<dyn Write + Send>>) -> DnsProxy {
        DnsProxy {
            by_ip: RwLock::new(index(config)),
            selectors: RwLock::new(Arc::new(config.fqdn_selectors.clone())),
            learn: RwLock::new(None),
            identities: RwLock::new(Arc::new(config.ipcache())),
            counters: DnsCounters::default(),
            log: log.map(Mutex::new),
        }
    }

    /// Puts a new configuration in use.
    pub fn set_config(&self, config: &Config) {
        *self.by_ip.write().unwrap_or_else(|e| e.into_inner()) = index(config);
        *self.selectors.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(config.fqdn_selectors.clone());
        *self.identities.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config.ipcache());
    }

    /// The verdict on a query for `name` from `client` to `server` (`tcp`: over TCP).
    pub fn judge(&self, client: IpAddr, server: SocketAddr, tcp: bool, name: &str) -> DnsVerdict {
        let by_ip = self.by_ip.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(ep) = by_ip.get(&client) else {
            return DnsVerdict::Refused("the client has no DNS rules");
        };
        let remote = self
            .identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .identity(server.ip());
        let proto = if tcp { "TCP" } else { "UDP" };
        let name = fqdn(name);
        let mut selected = false;
        for p in &ep.ports {
            let on_port = p.port == 0
                || server.port() == p.port
                || (p.end_port != 0 && (p.port..=p.end_port).contains(&server.port()));
            if !on_port || p.protocol.as_deref().is_some_and(|x| x != proto) {
                continue;
            }
            for s in &p.selectors {
                if s.remotes.as_ref().is_some_and(|r| !r.contains(&remote)) {
                    continue;
                }
                selected = true;
                if s.any_name
                    || s.names.contains(&name)
                    || s.patterns.iter().any(|pat| pattern_matches(pat, &name))
                {
                    return DnsVerdict::Allowed(s.policy.clone());
                }
            }
        }
        DnsVerdict::Refused(if selected {
            "no DNS rule allows the name"
        } else {
            "no DNS rule selects the server"
        })
    }

    /// What it has done, for the status file.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "forwarded": c.forwarded.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "malformed": c.malformed.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
        })
    }

    fn record(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        q: &wire::Question,
        verdict: &DnsVerdict,
        answer: Option<&[u8]>,
    ) {
        let (counter, name) = match verdict {
            DnsVerdict::Allowed(_) => (&self.counters.forwarded, "forwarded"),
            DnsVerdict::Refused(_) => (&self.counters.refused, "refused"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(log) = &self.log else {
            return;
        };
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (rcode, addresses) = match answer.and_then(wire::response) {
            Some((rcode, addrs)) => (
                Some(rcode),
                addrs.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(),
            ),
            None => (None, Vec::new()),
        };
        let remote = self
            .identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .identity(server.ip());
        let line = json!({
            "timeMs": ms,
            "type": "dns",
            "direction": "egress",
            "source": client.to_string(),
            "destination": server.to_string(),
            "remoteIdentity": remote,
            "query": q.name,
            "qtype": q.qtype,
            "verdict": name,
            "rule": match verdict { DnsVerdict::Allowed(p) => Some(p.as_str()), DnsVerdict::Refused(_) => None },
            "reason": match verdict { DnsVerdict::Refused(r) => Some(*r), DnsVerdict::Allowed(_) => None },
            "rcode": rcode,
            "answers": addresses,
        });
        let mut line = line.to_string();
        line.push('\n');
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written must not stop the traffic.
        let _ = log.write_all(line.as_bytes());
    }

    /// The answer to one query message from `client` to `server`: REFUSED, the server's
    /// answer, or SERVFAIL when the server does not answer; `None` when the message is not a
    /// query (nothing is sent back).
    async fn answer(
        &self,
        msg: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        tcp: bool,
    ) -> Option<Vec<u8>> {
        let Some(q) = wire::query(msg) else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            // A query's header with nothing readable after it: FORMERR, as servers answer.
            return wire::format_error(msg);
        };
        let verdict = self.judge(client.ip(), server, tcp, &q.name);
        if let DnsVerdict::Refused(_) = verdict {
            self.record(client, server, &q, &verdict, None);
            return Some(wire::answer_with(msg, &q, wire::RCODE_REFUSED));
        }
        let via = Via::of(client.ip(), polc_compiler::ir::Direction::Egress);
        let answer = if tcp {
            forward_tcp(msg, server, via).await
        } else {
            forward_udp(msg, server, via).await
        };
        match answer {
            Ok(a) => {
                self.record(client, server, &q, &verdict, Some(&a));
                self.learn_from(&q.name, &a).await;
                Some(a)
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.record(client, server, &q, &verdict, None);
                Some(wire::answer_with(msg, &q, wire::RCODE_SERVFAIL))
            }
        }
    }

    /// Hands the addresses of an answer to the learn hook, for the names (the question's and
    /// the records' own, after CNAMEs) a `toFQDNs` selector matches; waits until it is done.
    async fn learn_from(&self, question: &str, answer: &[u8]) {
        let Some(hook) = self.learn.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Some((_, addrs)) = wire::response(answer) else {
            return;
        };
        let selectors = self
            .selectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let selected = |name: &str| {
            selectors
                .iter()
                .any(|s| polc_compiler::eval::fqdn_selects(s, name))
        };
        let mut learnt = Vec::new();
        for a in &addrs {
            for name in [question, a.name.as_str()] {
                if selected(name) && !learnt.iter().any(|(n, ip, _)| n == name && *ip == a.ip) {
                    learnt.push((name.to_string(), a.ip, a.ttl));
                }
            }
        }
        if learnt.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || hook(learnt)).await;
    }

    /// Listens on `addr` (UDP and TCP, transparently); returns what it listens on.
    pub fn listen(
        self: Arc<DnsProxy>,
        addr: SocketAddr,
        slots: Arc<tokio::sync::Semaphore>,
    ) -> std::io::Result<Vec<String>> {
        let udp = transparent_udp(addr, true)?;
        polc_ebpf::sys::set_recv_destination(std::os::fd::AsFd::as_fd(&udp), addr.is_ipv6())?;
        let udp = UdpSocket::from_std(udp.into())?;
        let tcp = TcpListener::from_std(super::run::transparent_listener(addr)?)?;
        tokio::spawn(self.clone().serve_udp(udp, slots.clone()));
        tokio::spawn(self.serve_tcp(tcp, slots));
        Ok(vec![format!("dns udp {addr}"), format!("dns tcp {addr}")])
    }

    async fn serve_udp(self: Arc<DnsProxy>, socket: UdpSocket, slots: Arc<tokio::sync::Semaphore>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            if socket.readable().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let got = socket.try_io(tokio::io::Interest::READABLE, || {
                polc_ebpf::sys::recv_with_destination(std::os::fd::AsFd::as_fd(&socket), &mut buf)
            });
            let (n, client, server) = match got {
                Ok((n, client, Some(server))) => (n, client, server),
                // Without its original destination a datagram cannot be forwarded.
                Ok(_) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(_) => continue,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let msg = buf[..n].to_vec();
            let me = self.clone();
            tokio::spawn(async move {
                if let Some(answer) = me.answer(&msg, client, server, false).await {
                    let _ = reply_udp(server, client, &answer);
                }
                drop(permit);
            });
        }
    }

    async fn serve_tcp(
        self: Arc<DnsProxy>,
        listener: TcpListener,
        slots: Arc<tokio::sync::Semaphore>,
    ) {
        loop {
            let Ok((mut tcp, client)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let Ok(server) = tcp.local_addr() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                while let Ok(Some(msg)) =
                    tokio::time::timeout(CLIENT_TIMEOUT, read_message(&mut tcp))
                        .await
                        .unwrap_or(Ok(None))
                        .map_err(|_: std::io::Error| ())
                {
                    let Some(answer) = me.answer(&msg, client, server, true).await else {
                        break;
                    };
                    if write_message(&mut tcp, &answer).await.is_err() {
                        break;
                    }
                }
                drop(permit);
            });
        }
    }
}

/// A UDP socket bound to `addr` with `IP_TRANSPARENT` (any address, also another host's).
fn transparent_udp(addr: SocketAddr, reuse: bool) -> std::io::Result<socket2::Socket> {
    super::transparent_socket(addr, socket2::Type::DGRAM, reuse)
}

/// Sends `msg` to `to` from `from` (the server's address, as the client expects). The
/// socket is connected to the client: the datapath hands a socket only the packets of its
/// own peer, so it cannot take another client's query to the server while it lives.
fn reply_udp(from: SocketAddr, to: SocketAddr, msg: &[u8]) -> std::io::Result<()> {
    let s = transparent_udp(from, true)?;
    s.connect(&to.into())?;
    s.send(msg).map(|_| ())
}

async fn forward_udp(msg: &[u8], server: SocketAddr, via: Via) -> std::io::Result<Vec<u8>> {
    let s = transparent_udp(SocketAddr::new(via.source, 0), false)?;
    s.set_mark(via.mark)?;
    s.connect(&server.into())?;
    let socket = UdpSocket::from_std(s.into())?;
    socket.send(msg).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        // The answer to this query: same ID.
        if n >= 2 && buf[..2] == msg[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(msg: &[u8], server: SocketAddr, via: Via) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut tcp = super::connect(server, Some(via)).await?;
        write_message(&mut tcp, msg).await?;
        read_message(&mut tcp)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// One length-prefixed DNS message over TCP (`None` at a clean end of stream).
async fn read_message(tcp: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match tcp.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_message(tcp: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    tcp.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::{DnsPort, DnsSelector, IpcacheRow, Ports};

    fn config() -> Config {
        let sel = |remotes: Option<Vec<u32>>, names: &[&str], patterns: &[&str]| DnsSelector {
            remotes,
            names: names.iter().map(|s| s.to_string()).collect(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            any_name: names.is_empty() && patterns.is_empty(),
            policy: "CiliumNetworkPolicy app/dns spec.egress[0]".into(),
        };
        Config {
            node: "n1".into(),
            ports: Ports {
                http_ingress: 15000,
                http_egress: 15001,
                dns_egress: 15053,
            },
            ipcache: vec![
                IpcacheRow {
                    prefix: "10.0.0.53/32".parse().unwrap(),
                    identity: 300,
                },
                IpcacheRow {
                    prefix: "10.0.0.54/32".parse().unwrap(),
                    identity: 301,
                },
            ],
            endpoints: Vec::new(),
            dns: vec![DnsEndpoint {
                endpoint_id: 9,
                endpoint_ips: vec!["10.0.1.1".parse().unwrap()],
                ports: vec![
                    DnsPort {
                        port: 53,
                        end_port: 0,
                        protocol: Some("UDP".into()),
                        selectors: vec![sel(Some(vec![300]), &["api.shop."], &["*.cdn.shop."])],
                    },
                    DnsPort {
                        port: 53,
                        end_port: 0,
                        protocol: None,
                        selectors: vec![sel(Some(vec![301]), &[], &[])],
                    },
                ],
            }],
            policies: Default::default(),
            fqdn_selectors: Vec::new(),
            datapath: None,
        }
    }

    #[test]
    fn names_are_allowed_per_server_port_and_protocol() {
        let dns = DnsProxy::new(&config(), None);
        let client: IpAddr = "10.0.1.1".parse().unwrap();
        let s300: SocketAddr = "10.0.0.53:53".parse().unwrap();
        let s301: SocketAddr = "10.0.0.54:53".parse().unwrap();
        let ok = |v: DnsVerdict| matches!(v, DnsVerdict::Allowed(_));
        assert!(ok(dns.judge(client, s300, false, "API.shop")));
        assert!(ok(dns.judge(client, s300, false, "img.cdn.shop.")));
        assert!(
            !ok(dns.judge(client, s300, false, "a.img.cdn.shop.")),
            "`*` is one label"
        );
        assert!(!ok(dns.judge(client, s300, false, "evil.com")));
        // The UDP rules only; TCP has none for this server.
        assert_eq!(
            dns.judge(client, s300, true, "api.shop"),
            DnsVerdict::Refused("no DNS rule selects the server")
        );
        // No DNS rules on a selector: every name.
        assert!(ok(dns.judge(client, s301, true, "anything.at.all")));
        // Another port, another client.
        assert!(!ok(dns.judge(
            client,
            "10.0.0.54:5353".parse().unwrap(),
            false,
            "x"
        )));
        assert!(!ok(dns.judge(
            "10.0.1.2".parse().unwrap(),
            s301,
            false,
            "x"
        )));
    }
}
