//! The proxy on a node: transparent listeners on the configured ports (IPv4 and IPv6), the
//! configuration file read again when it changes (connections in flight stay and judge their
//! next request with the new rules), and a status file `polc status` reads.
//!
//! The datapath hands a listener the connections whose policy entry carries its port, with
//! their original destination as the accepted socket's local address (`bpf_sk_assign`), so
//! the listeners are `IP_TRANSPARENT` and bound to the wildcard address.

use super::Proxy;
use super::config::Config;
use super::dns;
use super::learn::Learner;
use polc_compiler::ir::Direction;
use serde_json::json;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// At most this many client connections at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 8192;
/// How often the configuration file is looked at.
const TICK: Duration = Duration::from_millis(25);
/// The status file is written every this many ticks, and at once after a change.
const STATUS_EVERY: u32 = 10;

/// Where a proxy keeps its status when not told (`<node>.json`), and where `polc status`
/// looks for it.
pub const STATUS_DIR: &str = "/run/polc/proxy";

/// The default status file of node `node`'s proxy.
pub fn default_status(node: &str) -> Option<PathBuf> {
    crate::commands::load::node_dir(Path::new(STATUS_DIR), node).map(|p| p.with_extension("json"))
}

/// What `polc proxy` is told.
#[derive(Clone, Debug)]
pub struct Options {
    /// The configuration file (see [`Config`]).
    pub config: PathBuf,
    /// Where the access log goes (appended, a JSON object per line).
    pub access_log: Option<PathBuf>,
    /// Where the status goes (rewritten every few hundred milliseconds; default
    /// [`default_status`]).
    pub status: Option<PathBuf>,
}

/// A transparent listening socket on `addr`.
pub fn transparent_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = super::transparent_socket(addr, socket2::Type::STREAM, true)?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The wildcard addresses of both families at `port`.
pub fn wildcards(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ]
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    direction: Direction,
    slots: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors or the like: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            proxy
                .counters
                .overloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let Ok(target) = tcp.local_addr() else {
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            proxy.serve(direction, tcp, target).await;
            drop(permit);
        });
    }
}

/// The access log, opened for appending (each line is one write, so the HTTP and the DNS
/// proxy can share it).
fn open_log(opts: &Options) -> Result<Option<Box<dyn Write + Send>>, String> {
    let Some(p) = &opts.access_log else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
    Ok(Some(Box::new(LineWriter(file))))
}

/// Writes whole lines in one `write` each.
struct LineWriter(std::fs::File);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs the proxy until the process is stopped. Returns early only when it cannot start
/// (an unreadable configuration, a port taken).
pub fn run(opts: &Options) -> Result<(), String> {
    let config = Config::read(&opts.config)?;
    let (rules, ipcache) = config.tables()?;
    let mut opts = opts.clone();
    if opts.status.is_none() {
        opts.status = default_status(&config.node);
        if let Some(dir) = opts.status.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let opts = &opts;
    let mut proxy = Proxy::new(rules, Arc::new(ipcache), open_log(opts)?);
    proxy.transparent = true;
    let proxy = Arc::new(proxy);
    let dns = Arc::new(dns::DnsProxy::new(&config, open_log(opts)?));
    let learner = Learner::new(&config).map(Arc::new);
    let learnt = Arc::new(tokio::sync::Notify::new());
    if let Some(l) = &learner {
        let (proxy, dns_weak) = (proxy.clone(), Arc::downgrade(&dns));
        let (l, learnt) = (l.clone(), learnt.clone());
        let hook: dns::LearnHook = Arc::new(move |answers| {
            if let Some(tables) = l.learn(&answers) {
                install(&proxy, dns_weak.upgrade().as_deref(), &tables);
                // The status file says so at once.
                learnt.notify_one();
            }
        });
        *dns.learn.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(opts, config, proxy, dns, learner, learnt))
}

/// Puts new tables in use in both proxies.
fn install(proxy: &Proxy, dns: Option<&dns::DnsProxy>, tables: &Config) {
    if let Ok((rules, ipcache)) = tables.tables() {
        proxy.set_rules(rules);
        proxy.set_identities(Arc::new(ipcache));
    }
    if let Some(dns) = dns {
        dns.set_config(tables);
    }
}

async fn serve(
    opts: &Options,
    config: Config,
    proxy: Arc<Proxy>,
    dns: Arc<dns::DnsProxy>,
    learner: Option<Arc<Learner>>,
    learnt: Arc<tokio::sync::Notify>,
) -> Result<(), String> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut listening = Vec::new();
    let mut warnings = Vec::new();
    for (port, direction) in [
        (config.ports.http_ingress, Direction::Ingress),
        (config.ports.http_egress, Direction::Egress),
    ] {
        for addr in wildcards(port) {
            match transparent_listener(addr).and_then(TcpListener::from_std) {
                Ok(l) => {
                    tokio::spawn(accept_loop(proxy.clone(), l, direction, slots.clone()));
                    listening.push(format!("http-{} tcp {addr}", direction.name()));
                }
                // A node without IPv6 has no IPv6 flows to proxy.
                Err(e) if addr.is_ipv6() => warnings.push(format!("{addr}: {e}")),
                Err(e) => return Err(format!("cannot listen on {addr} (TCP): {e}")),
            }
        }
    }
    for addr in wildcards(config.ports.dns_egress) {
        match dns.clone().listen(addr, slots.clone()) {
            Ok(what) => listening.extend(what),
            Err(e) if addr.is_ipv6() => warnings.push(format!("{addr}: {e}")),
            Err(e) => return Err(format!("cannot listen on {addr} (DNS): {e}")),
        }
    }
    let started = SystemTime::now();
    let mut seen = modified(&opts.config);
    let mut reload_error: Option<String> = None;
    let mut reloads = 0u64;
    let (mut tick, mut changed) = (0u32, true);
    loop {
        tick = tick.wrapping_add(1);
        if let Some(path) = opts
            .status
            .as_ref()
            .filter(|_| changed || tick % STATUS_EVERY == 0)
        {
            let status = json!({
                "pid": std::process::id(),
                "node": config.node,
                "config": opts.config,
                "startedMs": ms(started),
                "listening": listening,
                "warnings": warnings,
                "reloads": reloads,
                "reloadError": reload_error,
                "http": proxy.status(),
                "dns": dns.status(),
                "fqdn": learner.as_ref().map(|l| l.status()),
            });
            let _ = write_atomically(path, &status.to_string());
        }
        changed = tokio::time::timeout(TICK, learnt.notified()).await.is_ok();
        if let Some(l) = learner.clone().filter(|_| tick % STATUS_EVERY == 0)
            && let Ok(Some(tables)) = tokio::task::spawn_blocking(move || l.expire()).await
        {
            install(&proxy, Some(&dns), &tables);
            changed = true;
        }
        let now = modified(&opts.config);
        if now != seen {
            seen = now;
            match Config::read(&opts.config).and_then(|c| c.tables().map(|t| (c, t))) {
                Ok((c, (rules, ipcache))) => {
                    proxy.set_rules(rules);
                    proxy.set_identities(Arc::new(ipcache));
                    dns.set_config(&c);
                    // New policies: what was learnt goes into them again.
                    if let Some(l) = learner.clone() {
                        let c = c.clone();
                        if let Ok(Some(tables)) =
                            tokio::task::spawn_blocking(move || l.reload(&c)).await
                        {
                            install(&proxy, Some(&dns), &tables);
                        }
                    }
                    reloads += 1;
                    reload_error = None;
                }
                // The rules in use stay; the status says why the new ones were not taken.
                Err(e) => reload_error = Some(e),
            }
            changed = true;
        }
    }
}

fn ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
