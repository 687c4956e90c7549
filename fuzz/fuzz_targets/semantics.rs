//! Fuzzes the semantics: bytes -> policies (next to a fixed small inventory) -> model ->
//! every flow between the inventory's ends on a few ports. Besides panics, it checks that a
//! lookup in the materialized map state gives the evaluator's verdict at every enforcing end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polc_compiler::eval::{self, Flow, Peer};
use polc_compiler::ir::Proto;
use polc_compiler::mapstate::{self, ProxyPorts, SelectorCache};
use polc_compiler::model::{Config, Model};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::Options;

const INVENTORY: &str = "\
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {zone: a}}
status: {addresses: [{type: InternalIP, address: 172.16.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {zone: b}}
status: {addresses: [{type: InternalIP, address: 172.16.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: b, labels: {app: db}}
spec: {nodeName: n2}
status: {podIP: 10.0.2.10}
";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new("policies.yaml", text.to_string()));
    sources.add(SourceFile::new("inventory.yaml", INVENTORY.to_string()));
    let (objects, diags) = polc_compiler::lint(&sources, &Options::default());
    if diags
        .iter()
        .any(|d| d.severity == polc_compiler::diag::Severity::Error)
    {
        return;
    }
    let (model, _) = Model::build(&objects, Config::default());
    let mut cache = SelectorCache::new(&model);
    let listeners = mapstate::listeners(&model);
    let ends = [
        Peer::Pod(0),
        Peer::Pod(1),
        Peer::Host(0),
        Peer::Host(1),
        Peer::External("203.0.113.7".parse().unwrap()),
    ];
    for src in ends {
        for dst in ends {
            for (proto, port) in [(Proto::Tcp, 80), (Proto::Tcp, 8080), (Proto::Udp, 53), (Proto::Icmp, 8)] {
                let flow = Flow { src, dst, proto, port, request: None };
                let outcome = eval::decide(&model, &flow);
                for d in &outcome.decisions {
                    let policy = mapstate::compute(&model, &mut cache, d.endpoint, &ProxyPorts::default(), &listeners);
                    let hit = mapstate::lookup(&policy.map, d.direction, d.remote_identity, proto.number(), port);
                    assert_eq!(
                        mapstate::verdict_of(hit),
                        d.verdict,
                        "{src:?} -> {dst:?} {proto:?}/{port} at {:?} {:?}: eval {:?} ({:?}), map {hit:?}",
                        d.endpoint,
                        d.direction,
                        d.verdict,
                        d.why
                    );
                }
            }
        }
    }
});
