//! The generated cluster the compile and connectivity benchmarks run on: our users' scale
//! under `cargo bench` (`--bench`), the small scale under `cargo test` so CI stays fast.

use polc_compiler::r#gen::{Scale, generate};
use polc_compiler::ir::{PortRule, PortSpec, Ports, Proto, Rule};
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Kind;
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{Options, lint};
use std::sync::Arc;

/// The generated cluster and its policies, as a model.
pub fn model() -> Model {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { Scale::users() } else { Scale::small() };
    let mut sources = SourceMap::new();
    for f in generate(&scale) {
        sources.add(SourceFile::new(f.path, f.text));
    }
    let (objects, diags) = lint(&sources, &Options::default());
    assert!(
        diags
            .iter()
            .all(|d| d.severity != polc_compiler::diag::Severity::Error),
        "the generated cluster must be valid"
    );
    let (model, _) = Model::build(&objects, Config::default());
    model
}

/// A CNP rule with an ingress item that has ports, and the same rule with one more port.
pub fn changed_rule(model: &Model) -> (usize, Arc<Rule>, Arc<Rule>) {
    let (i, rule) = model
        .policies
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.origin.kind == Kind::CiliumNetworkPolicy
                && r.items
                    .iter()
                    .any(|it| !it.deny && matches!(&it.ports, Ports::List(p) if !p.is_empty()))
        })
        .expect("the generated cluster has a CNP with ports");
    let mut changed = (**rule).clone();
    for item in &mut changed.items {
        if let Ports::List(ports) = &mut item.ports
            && let Some(first) = ports.first().cloned()
        {
            ports.push(PortRule {
                proto: Proto::Tcp,
                port: PortSpec::Range(9443, 9443),
                redirect: None,
                loc: first.loc,
            });
            break;
        }
    }
    (i, rule.clone(), Arc::new(changed))
}
