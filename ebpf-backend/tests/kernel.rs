//! The datapath in a real kernel: the C structs against the Rust ABI, entries read back
//! through the kernel, the classifier's verdicts on crafted packets (`BPF_PROG_TEST_RUN`) and
//! on real packets between network namespaces, sync idempotence, and the failure paths.
//!
//! Every test that needs the kernel runs as root in its own network namespace and pin
//! directory (unique names), removed by a guard even when the test fails. Without root or
//! BPF the test prints why it skips.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use polc_compiler::identity::IpcacheEntry;
use polc_compiler::ir::Direction;
use polc_compiler::mapstate::{Entry, Key};
use polc_ebpf::abi::{self, Reason};
use polc_ebpf::loader::{
    self, Attachment, Hook, Interface, LoadError, Loader, Options, Side, Status,
};
use polc_ebpf::state::{EndpointState, NodeState};
use polc_ebpf::sys;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const PASS: i32 = -1;
const DROP: i32 = 2;

// ---- environment -------------------------------------------------------------------------

/// Why kernel tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if sys::euid() != 0 {
        return Some("needs root (BPF programs, network namespaces)".into());
    }
    if !Path::new("/proc/sys/net/core/bpf_jit_enable").exists()
        && !Path::new("/sys/fs/bpf").exists()
    {
        return Some("the kernel has no BPF support".into());
    }
    None
}

macro_rules! require_kernel {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "pt{}{}{}",
        std::process::id() % 100_000,
        tag,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn run(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces and a pin directory, removed on drop.
struct Guard {
    netns: Vec<String>,
    pins: PathBuf,
}

impl Guard {
    fn new(tag: &str) -> Guard {
        Guard {
            netns: Vec::new(),
            pins: PathBuf::from("/sys/fs/bpf/polc-test").join(unique(tag)),
        }
    }

    fn netns(&mut self, tag: &str) -> String {
        let name = unique(tag);
        run(&format!("ip netns add {name}"));
        run(&format!("ip -n {name} link set lo up"));
        self.netns.push(name.clone());
        name
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.pins.exists() {
            let _ = loader::unload(&self.pins);
        }
        // The shared parent goes when the last test is done with it.
        if let Some(parent) = self.pins.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    sys::in_netns(&netns_path(ns), f).expect("enter netns")
}

// ---- policy and packets ------------------------------------------------------------------

const EP: u16 = 1;
const ID_A: u32 = 1000;
const ID_B: u32 = 2000;
const ID_C: u32 = 3000;

fn key(direction: Direction, identity: u32, proto: u8, port: u16, port_prefix: u8) -> Key {
    Key {
        direction,
        identity,
        proto,
        port,
        port_prefix,
    }
}

fn allow() -> Entry {
    Entry::allow()
}

fn deny() -> Entry {
    let mut e = Entry::allow();
    e.deny = true;
    e
}

fn ip_entry(prefix: &str, identity: u32) -> IpcacheEntry {
    IpcacheEntry {
        prefix: prefix.parse().expect("prefix"),
        identity,
        tunnel_endpoint: None,
    }
}

/// The endpoint 10.0.0.10 / fd00::10 and its peers A (10.0.0.1, fd00::1), B (10.0.0.2),
/// C (10.0.0.3); everything else is world.
fn node_state(policy: &[(Key, Entry)]) -> NodeState {
    let mut s = NodeState::new(&[
        ip_entry("10.0.0.10/32", 300),
        ip_entry("fd00::10/128", 300),
        ip_entry("10.0.0.1/32", ID_A),
        ip_entry("fd00::1/128", ID_A),
        ip_entry("10.0.0.2/32", ID_B),
        ip_entry("10.0.0.3/32", ID_C),
        ip_entry("0.0.0.0/0", 2),
        ip_entry("::/0", 2),
    ])
    .expect("ipcache");
    let map: BTreeMap<Key, Entry> = policy.iter().cloned().collect();
    let ep = EndpointState {
        name: "shop/backend".into(),
        identity: 300,
        ingress_enforced: true,
        egress_enforced: true,
        policy: polc_ebpf::state::policy_bytes(&map),
    };
    s.insert_endpoint(EP, ep);
    s
}

fn test_policy() -> Vec<(Key, Entry)> {
    use Direction::{Egress, Ingress};
    vec![
        // allow A -> TCP/80, and ICMP echo from A
        (key(Ingress, ID_A, 6, 80, 16), allow()),
        (key(Ingress, ID_A, 1, 8, 16), allow()),
        (key(Ingress, ID_A, 58, 128, 16), allow()),
        // a port range: 8080-8095 = 8080/12
        (key(Ingress, ID_A, 6, 8080, 12), allow()),
        // B may use anything, except TCP/443 which identity 0 denies
        (key(Ingress, ID_B, 0, 0, 0), allow()),
        (key(Ingress, 0, 6, 443, 16), deny()),
        // anyone may use UDP/53 (identity-0 fallback)
        (key(Ingress, 0, 17, 53, 16), allow()),
        // C is denied everything (even where identity 0 allows)
        (key(Ingress, ID_C, 0, 0, 0), deny()),
        (key(Ingress, 0, 6, 80, 16), allow()),
        // world is denied
        (key(Ingress, 2, 0, 0, 0), deny()),
        // egress: only B on TCP/5432
        (key(Egress, ID_B, 6, 5432, 16), allow()),
    ]
}

fn mac_header(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn l4(proto: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    match proto {
        6 => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = flags;
            h
        }
        17 | 132 => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h
        }
        // ICMP/ICMPv6: `dport` is the type, `sport` the echo identifier.
        _ => {
            let mut h = vec![0u8; 8];
            h[0] = u8::try_from(dport).expect("icmp type");
            h[4..6].copy_from_slice(&sport.to_be_bytes());
            h
        }
    }
}

/// An Ethernet frame from `src` to `dst`.
fn frame(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    frame_flags(src, dst, proto, sport, dport, 0x02)
}

fn frame_flags(src: &str, dst: &str, proto: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let payload = l4(proto, sport, dport, flags);
    match (
        src.parse::<IpAddr>().expect("ip"),
        dst.parse::<IpAddr>().expect("ip"),
    ) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = mac_header(0x0800);
            let total = u16::try_from(20 + payload.len()).expect("len");
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            f.extend(ip);
            f.extend(payload);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = mac_header(0x86dd);
            let len = u16::try_from(payload.len()).expect("len");
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend(payload);
            f
        }
        _ => panic!("mixed families"),
    }
}

/// A loader in a fresh pin directory, inside network namespace `ns` with a dummy interface
/// `d0` serving the endpoint from the node side. IPv6 is off on the pair: otherwise the kernel
/// sends its own MLD reports and router solicitations out of `d0` a moment after it comes up,
/// and they land in the drop counters that the tests count exactly.
fn loaded(g: &Guard, ns: &str, state: &NodeState) -> (Loader, u32) {
    run(&format!(
        "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
         net.ipv6.conf.default.disable_ipv6=1 && \
         ip -n {ns} link add d0 type veth peer name d1 && ip -n {ns} link set d0 up && \
         ip -n {ns} link set d1 up"
    ));
    in_ns(ns, || {
        let mut l = Loader::open(&g.pins, &Options::default()).expect("open");
        let att = [Attachment {
            endpoint_id: EP,
            interface: Interface::Name("d0".into()),
            side: Side::Node,
        }];
        l.install(state, &att).expect("install");
        (l, sys::ifindex("d0").expect("d0"))
    })
}

fn counter(status: &Status, r: Reason) -> u64 {
    status
        .counters
        .iter()
        .find(|(x, _)| *x == r)
        .map_or(0, |(_, c)| c.packets)
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn abi_header_matches_the_rust_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("abi_check.c");
    std::fs::write(&src, abi::c_assertions()).expect("write");
    let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    // The BPF target, as the datapath is built.
    let out = Command::new("clang")
        .args(["-target", "bpf", "-O2", "-c", "-o", "/dev/null", "-I"])
        .arg(&bpf)
        .arg("-I")
        .arg(&multiarch)
        .arg(&src)
        .output()
        .expect("clang (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "abi.h and abi.rs disagree (BPF target):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the host, as the loader sees it.
    let out = Command::new("cc")
        .args(["-fsyntax-only", "-I"])
        .arg(&bpf)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "abi.h and abi.rs disagree (host):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check itself can fail: a wrong offset is caught.
    let wrong = abi::c_assertions().replace(
        "offsetof(struct policy_key, dport) == 10",
        "offsetof(struct policy_key, dport) == 11",
    );
    assert_ne!(wrong, abi::c_assertions());
    std::fs::write(&src, wrong).expect("write");
    let out = Command::new("cc")
        .args(["-fsyntax-only", "-I"])
        .arg(&bpf)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(!out.status.success(), "a wrong offset must not compile");
}

#[test]
fn entries_read_back_identical_and_a_second_install_changes_nothing() {
    require_kernel!();
    let mut g = Guard::new("rb");
    let ns = g.netns("rb");
    let state = node_state(&test_policy());
    let (first, _) = loaded(&g, &ns, &state);
    drop(first);
    // A new loader (a restarted polc) reads the pins back from the kernel.
    in_ns(&ns, || {
        let mut l = Loader::open(&g.pins, &Options::default()).expect("reopen");
        assert_eq!(l.installed().state, state, "kernel maps read back differ");
        assert_eq!(l.installed().ifaces.len(), 1);
        let att = [Attachment {
            endpoint_id: EP,
            interface: Interface::Name("d0".into()),
            side: Side::Node,
        }];
        let report = l.install(&state, &att).expect("install again");
        assert_eq!(report.total(), 0, "{report:?}");
        // The same loader again: still nothing.
        let report = l.install(&state, &att).expect("install again");
        assert_eq!(report.total(), 0, "{report:?}");
    });
    let status = Status::read(&g.pins).expect("status");
    assert_eq!(status.endpoints.len(), 1);
    assert_eq!(status.endpoints[0].entries, test_policy().len());
    assert_eq!(status.endpoints[0].name, "shop/backend");
    assert_eq!(status.ipcache_entries, 8);
    assert_eq!(status.links, 2);
}

#[test]
fn classifier_verdicts_follow_the_cilium_lookup() {
    require_kernel!();
    let mut g = Guard::new("tr");
    let ns = g.netns("tr");
    let state = node_state(&test_policy());
    let (mut l, ifindex) = loaded(&g, &ns, &state);
    let ep = "10.0.0.10";
    // Packets to the endpoint leave the node-side interface: the egress hook.
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        (
            "A tcp/80 allowed",
            frame("10.0.0.1", ep, 6, 40000, 80),
            PASS,
        ),
        (
            "A tcp/82 no entry",
            frame("10.0.0.1", ep, 6, 40001, 82),
            DROP,
        ),
        (
            "A tcp/8090 in 8080/12",
            frame("10.0.0.1", ep, 6, 40002, 8090),
            PASS,
        ),
        (
            "A tcp/8096 outside 8080/12",
            frame("10.0.0.1", ep, 6, 40003, 8096),
            DROP,
        ),
        (
            "B udp/9000 allowed by L3",
            frame("10.0.0.2", ep, 17, 40004, 9000),
            PASS,
        ),
        (
            "B tcp/443 identity-0 deny wins",
            frame("10.0.0.2", ep, 6, 40005, 443),
            DROP,
        ),
        (
            "A udp/53 identity-0 allow",
            frame("10.0.0.1", ep, 17, 40006, 53),
            PASS,
        ),
        (
            "C tcp/80 L3 deny beats identity-0 allow",
            frame("10.0.0.3", ep, 6, 40007, 80),
            DROP,
        ),
        (
            "world tcp/80 denied",
            frame("8.8.8.8", ep, 6, 40008, 80),
            DROP,
        ),
        ("A echo request", frame("10.0.0.1", ep, 1, 7, 8), PASS),
        (
            "A ipv6 tcp/80",
            frame("fd00::1", "fd00::10", 6, 40009, 80),
            PASS,
        ),
        (
            "A ipv6 tcp/81",
            frame("fd00::1", "fd00::10", 6, 40010, 81),
            DROP,
        ),
        (
            "A echo6 request",
            frame("fd00::1", "fd00::10", 58, 9, 128),
            PASS,
        ),
        (
            "ipv6 neighbour solicitation",
            frame("fd00::2", "fd00::10", 58, 0, 135),
            PASS,
        ),
        (
            "MLDv2 report to a multicast group",
            frame("fe80::1", "ff02::16", 58, 0, 143),
            PASS,
        ),
        (
            "MLD type to a unicast address is policed",
            frame("fd00::1", "fd00::10", 58, 0, 143),
            DROP,
        ),
    ];
    in_ns(&ns, || {
        for (what, f, want) in &cases {
            let got = l.test_run(Hook::Egress, f, ifindex).expect("test run");
            assert_eq!(got, *want, "{what}");
        }
        // Egress (the ingress hook): only B on TCP/5432.
        let got = l
            .test_run(
                Hook::Ingress,
                &frame(ep, "10.0.0.2", 6, 50000, 5432),
                ifindex,
            )
            .expect("run");
        assert_eq!(got, PASS, "egress to B tcp/5432");
        let got = l
            .test_run(
                Hook::Ingress,
                &frame(ep, "10.0.0.1", 6, 50001, 5432),
                ifindex,
            )
            .expect("run");
        assert_eq!(got, DROP, "egress to A tcp/5432");
        // Conntrack: the reply to A's allowed connection passes although egress to A is
        // denied, and so does a later packet of the same connection.
        let reply = frame_flags(ep, "10.0.0.1", 6, 80, 40000, 0x12);
        assert_eq!(
            l.test_run(Hook::Ingress, &reply, ifindex).expect("run"),
            PASS,
            "reply"
        );
        let again = frame_flags("10.0.0.1", ep, 6, 40000, 80, 0x10);
        assert_eq!(
            l.test_run(Hook::Egress, &again, ifindex).expect("run"),
            PASS,
            "established"
        );
        // A reply to a dropped connection does not.
        let reply = frame_flags(ep, "10.0.0.1", 6, 82, 40001, 0x12);
        assert_eq!(
            l.test_run(Hook::Ingress, &reply, ifindex).expect("run"),
            DROP,
            "no reply without flow"
        );
        // ICMP echo reply after an allowed request.
        let echo_reply = frame(ep, "10.0.0.1", 1, 7, 0);
        assert_eq!(
            l.test_run(Hook::Ingress, &echo_reply, ifindex)
                .expect("run"),
            PASS,
            "echo reply"
        );
        // ARP is not policed.
        let mut arp = mac_header(0x0806);
        arp.extend_from_slice(&[0u8; 28]);
        assert_eq!(
            l.test_run(Hook::Egress, &arp, ifindex).expect("run"),
            PASS,
            "arp"
        );
        // A truncated TCP header is invalid.
        let mut short = frame("10.0.0.1", ep, 6, 40000, 80);
        short.truncate(14 + 20 + 8);
        assert_eq!(
            l.test_run(Hook::Egress, &short, ifindex).expect("run"),
            DROP,
            "truncated"
        );
    });
    let status = Status::read(&g.pins).expect("status");
    assert_eq!(
        counter(&status, Reason::DropPolicy),
        6,
        "{:?}",
        status.counters
    );
    assert_eq!(
        counter(&status, Reason::DropPolicyDeny),
        3,
        "{:?}",
        status.counters
    );
    assert_eq!(
        counter(&status, Reason::PassCtReply),
        2,
        "{:?}",
        status.counters
    );
    assert_eq!(counter(&status, Reason::PassCtEstablished), 1);
    assert_eq!(counter(&status, Reason::DropInvalid), 1);
    assert_eq!(counter(&status, Reason::PassNotIp), 1);
    assert_eq!(counter(&status, Reason::PassIcmpImplicit), 2);
    // The A tcp/80 entry counted its connection (SYN, SYN-ACK, ACK) and the IPv6 SYN.
    let e = status
        .entries
        .iter()
        .find(|(k, _)| k.sec_label == ID_A && k.protocol == 6 && k.port() == 80)
        .expect("stats for A tcp/80");
    assert_eq!(e.0.prefix_len, 24);
    assert_eq!(e.1.packets, 4);
    // The range entry is counted under its masked key.
    assert!(status.entries.iter().any(|(k, c)| k.sec_label == ID_A
        && k.port() == 8080
        && k.prefix_len == 20
        && c.packets == 1));
    // The identity-0 deny is counted under identity 0.
    assert!(
        status
            .entries
            .iter()
            .any(|(k, _)| k.sec_label == 0 && k.port() == 443)
    );
}

#[test]
fn map_full_input_installs_nothing() {
    require_kernel!();
    let mut g = Guard::new("mf");
    let ns = g.netns("mf");
    let state = node_state(&test_policy());
    let (_, _) = loaded(&g, &ns, &state);
    let mut big = test_policy();
    for id in 0..(abi::POLICY_MAP_DEFAULT_MAX + 5) {
        big.push((key(Direction::Ingress, 100_000 + id, 6, 80, 16), allow()));
    }
    let mut too_big = node_state(&big);
    // Also change the ipcache, which must not be written either.
    too_big = {
        let mut s = too_big;
        s.ipcache.clear();
        s
    };
    in_ns(&ns, || {
        let mut l = Loader::open(&g.pins, &Options::default()).expect("reopen");
        let before = l.installed().clone();
        let err = l.sync(&too_big).expect_err("over capacity");
        match &err {
            LoadError::Capacity {
                endpoint,
                endpoint_id,
                entries,
                capacity,
            } => {
                assert_eq!(endpoint, "shop/backend");
                assert_eq!(*endpoint_id, EP);
                assert_eq!(*entries, big.len());
                assert_eq!(*capacity, abi::POLICY_MAP_DEFAULT_MAX);
            }
            other => panic!("unexpected error {other}"),
        }
        let again = Loader::open(&g.pins, &Options::default()).expect("reopen");
        assert_eq!(again.installed(), &before, "nothing changed in the kernel");
    });
}

#[test]
fn a_verifier_rejected_program_changes_nothing() {
    require_kernel!();
    let mut g = Guard::new("vr");
    let ns = g.netns("vr");
    let state = node_state(&test_policy());
    let (_, ifindex) = loaded(&g, &ns, &state);
    let before = Status::read(&g.pins).expect("status");
    in_ns(&ns, || {
        let bad = Options {
            object: loader::rejected_object(),
            ..Options::default()
        };
        let err = Loader::open(&g.pins, &bad).expect_err("the verifier rejects it");
        match &err {
            LoadError::Verifier { program, log, .. } => {
                assert!(program.starts_with("polc_tc_"));
                assert!(!log.trim().is_empty(), "the verifier log is kept");
            }
            other => panic!("unexpected error {other}"),
        }
        // The installed datapath still works and still holds the same state.
        let mut l = Loader::open(&g.pins, &Options::default()).expect("reopen");
        assert_eq!(l.installed().state, state);
        let f = frame("10.0.0.1", "10.0.0.10", 6, 41000, 82);
        assert_eq!(l.test_run(Hook::Egress, &f, ifindex).expect("run"), DROP);
    });
    let after = Status::read(&g.pins).expect("status");
    assert_eq!(
        after.meta, before.meta,
        "the pinned programs were not replaced"
    );
    assert_eq!(after.links, 2);
    assert_eq!(after.endpoints, before.endpoints);
}

#[test]
fn a_delta_changes_only_what_differs_and_removal_cleans_up() {
    require_kernel!();
    let mut g = Guard::new("dl");
    let ns = g.netns("dl");
    let state = node_state(&test_policy());
    let (mut l, ifindex) = loaded(&g, &ns, &state);
    let mut policy = test_policy();
    policy.retain(|(k, _)| !(k.identity == ID_A && k.port == 80));
    policy.push((key(Direction::Ingress, ID_A, 6, 81, 16), allow()));
    let next = node_state(&policy);
    in_ns(&ns, || {
        let r = l.sync(&next).expect("sync");
        assert_eq!(r.changes.policy.added, 1);
        assert_eq!(r.changes.policy.removed, 1);
        assert_eq!(r.changes.total(), 2);
        let f = frame("10.0.0.1", "10.0.0.10", 6, 42000, 81);
        assert_eq!(l.test_run(Hook::Egress, &f, ifindex).expect("run"), PASS);
        let f = frame("10.0.0.1", "10.0.0.10", 6, 42001, 80);
        // identity 0 still allows TCP/80
        assert_eq!(l.test_run(Hook::Egress, &f, ifindex).expect("run"), PASS);
        // Removing the endpoint and its interface detaches and unpins.
        let empty = NodeState {
            endpoints: BTreeMap::new(),
            ..next.clone()
        };
        let r = l.install(&empty, &[]).expect("install");
        assert_eq!(r.changes.endpoints.removed, 1);
        assert_eq!(r.links_detached, 2);
    });
    let status = Status::read(&g.pins).expect("status");
    assert!(status.endpoints.is_empty());
    assert_eq!(status.links, 0);
    assert_eq!(
        std::fs::read_dir(g.pins.join("policy"))
            .expect("dir")
            .count(),
        0
    );
}

/// Two pods and a node namespace: veth pairs, proxy ARP, routes. Returns the node namespace
/// and the pods' namespaces.
fn topology(g: &mut Guard) -> (String, String, String) {
    let node = g.netns("nd");
    let p1 = g.netns("p1");
    let p2 = g.netns("p2");
    for (pod, ip, host) in [(&p1, "10.77.0.1", "h1"), (&p2, "10.77.0.2", "h2")] {
        run(&format!(
            "ip -n {node} link add {host} type veth peer name eth0 netns {pod} && \
             ip -n {node} link set {host} up && \
             ip -n {pod} link set eth0 up && \
             ip -n {pod} addr add {ip}/32 dev eth0 && \
             ip -n {pod} route add default dev eth0 && \
             ip -n {node} route add {ip}/32 dev {host} && \
             ip netns exec {node} sysctl -qw net.ipv4.conf.{host}.proxy_arp=1 \
               net.ipv4.neigh.{host}.proxy_delay=0"
        ));
    }
    run(&format!(
        "ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"
    ));
    (node, p1, p2)
}

/// An endpoint: ID, name, identity, policy.
type Pod<'a> = (u16, &'a str, u32, Vec<(Key, Entry)>);

fn pod_state(pairs: &[Pod<'_>]) -> NodeState {
    let mut s = NodeState::new(&[
        ip_entry("10.77.0.1/32", 1001),
        ip_entry("10.77.0.2/32", 1002),
        ip_entry("0.0.0.0/0", 2),
    ])
    .expect("ipcache");
    for (id, name, identity, policy) in pairs {
        let map: BTreeMap<Key, Entry> = policy.iter().cloned().collect();
        s.insert_endpoint(
            *id,
            EndpointState {
                name: (*name).into(),
                identity: *identity,
                ingress_enforced: true,
                egress_enforced: true,
                policy: polc_ebpf::state::policy_bytes(&map),
            },
        );
    }
    s
}

/// Whether a TCP connection from `from` to `to:port` gets through (a listener is started in
/// `to_ns`), and whether the echoed byte comes back.
fn tcp_probe(from_ns: &str, to_ns: &str, to: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{to}:{port}").parse().expect("addr");
    let listener = in_ns(to_ns, || TcpListener::bind(addr).expect("bind"));
    listener.set_nonblocking(false).expect("blocking");
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
    let ok = in_ns(from_ns, || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && b == *b"x"
    });
    if !ok {
        // Unblock the accept.
        let _ = in_ns(to_ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        });
    }
    let _ = server.join();
    ok
}

fn udp_probe(from_ns: &str, to_ns: &str, to: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{to}:{port}").parse().expect("addr");
    let server = in_ns(to_ns, || UdpSocket::bind(addr).expect("bind"));
    server
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 16];
        if let Ok((n, peer)) = server.recv_from(&mut b) {
            let _ = server.send_to(&b[..n], peer);
        }
    });
    let ok = in_ns(from_ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        s.send_to(b"ping", addr).expect("send");
        let mut b = [0u8; 16];
        matches!(s.recv_from(&mut b), Ok((4, _)))
    });
    let _ = echo.join();
    ok
}

#[test]
fn real_packets_between_network_namespaces() {
    require_kernel!();
    let mut g = Guard::new("rp");
    let (node, p1, p2) = topology(&mut g);
    use Direction::{Egress, Ingress};
    // Without polc everything flows.
    assert!(tcp_probe(&p1, &p2, "10.77.0.2", 8080), "baseline tcp");
    // pod1 (1001) may reach pod2 (1002) on TCP/8080 and UDP/53 (identity 0 on pod2's side);
    // pod2 denies TCP/9090 from anyone though pod1 allows all egress to pod2; nothing is
    // allowed in the reply directions, so replies pass only through conntrack.
    let state = pod_state(&[
        (
            1,
            "ns/pod1",
            1001,
            vec![(key(Egress, 1002, 0, 0, 0), allow())],
        ),
        (
            2,
            "ns/pod2",
            1002,
            vec![
                (key(Ingress, 1001, 6, 8080, 16), allow()),
                (key(Ingress, 0, 17, 53, 16), allow()),
                (key(Ingress, 1001, 0, 0, 0), allow()),
                (key(Ingress, 0, 6, 9090, 16), deny()),
            ],
        ),
    ]);
    let att = [
        Attachment {
            endpoint_id: 1,
            interface: Interface::Name("h1".into()),
            side: Side::Node,
        },
        Attachment {
            endpoint_id: 2,
            interface: Interface::Name("h2".into()),
            side: Side::Node,
        },
    ];
    let report = in_ns(&node, || {
        let mut l = Loader::open(&g.pins, &Options::default()).expect("open");
        l.install(&state, &att).expect("install")
    });
    assert_eq!(report.links_attached, 4);
    // Forget the neighbours, so ARP crosses the classifiers again.
    run(&format!(
        "ip -n {p1} neigh flush all && ip -n {p2} neigh flush all"
    ));
    assert!(
        tcp_probe(&p1, &p2, "10.77.0.2", 8080),
        "allowed tcp, reply via conntrack"
    );
    assert!(
        udp_probe(&p1, &p2, "10.77.0.2", 53),
        "allowed udp, reply via conntrack"
    );
    assert!(
        !tcp_probe(&p1, &p2, "10.77.0.2", 9090),
        "identity-0 deny beats the L3 allow"
    );
    assert!(
        !tcp_probe(&p2, &p1, "10.77.0.1", 8080),
        "pod2 has no egress"
    );
    let status = Status::read(&g.pins).expect("status");
    assert!(
        counter(&status, Reason::PassCtReply) >= 2,
        "{:?}",
        status.counters
    );
    assert!(counter(&status, Reason::DropPolicyDeny) >= 1);
    assert!(counter(&status, Reason::DropPolicy) >= 1);
    assert!(counter(&status, Reason::PassNotIp) >= 1, "ARP passes");
    // Unload: everything flows again.
    loader::unload(&g.pins).expect("unload");
    assert!(!g.pins.exists());
    assert!(tcp_probe(&p2, &p1, "10.77.0.1", 8080), "after unload");
}
