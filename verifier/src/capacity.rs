//! V0409: with an inventory, endpoints whose policy map would hold more entries than the map's
//! capacity (`bpf-policy-map-max`, 16,384 by default).
//!
//! The compiler's upper bound (`Compilation::estimates`) sorts out the endpoints that fit for
//! sure; for the others the map state is built, exactly as `polc compile` builds it, and its
//! entries counted. Endpoints with the same selector policy and the same count are reported
//! once, with how many there are.

use polc_compiler::compile::Compilation;
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::{EndpointRef, Model};
use std::collections::BTreeMap;

/// The capacity Cilium gives every endpoint's policy map by default.
pub const DEFAULT_POLICY_MAP_MAX: usize = 16_384;

/// Runs the check against a map capacity.
pub fn check(model: &Model, max_entries: usize) -> Vec<Diagnostic> {
    let compilation = Compilation::new(model, None, ProxyPorts::default());
    let estimates = compilation.estimates(model);
    // (class representative's name and place, entries) -> how many endpoints.
    type Place = (polc_compiler::source::Loc, String, usize);
    let mut over: BTreeMap<(String, usize), Place> = BTreeMap::new();
    for (e, estimate) in compilation.endpoints.iter().zip(estimates) {
        if estimate <= max_entries {
            continue;
        }
        let entries = compilation.materialize(model, e).map.len();
        if entries <= max_entries {
            continue;
        }
        let (what, loc) = match e.endpoint {
            EndpointRef::Pod(i) => {
                let p = &model.inventory.pods[i];
                (p.key(), p.loc)
            }
            EndpointRef::Host(n) => {
                let node = &model.inventory.nodes[n];
                (format!("host/{}", node.name), node.loc)
            }
        };
        let class = format!("{:?}", e.class);
        over.entry((class, entries)).or_insert((loc, what, 0)).2 += 1;
    }
    over.into_iter()
        .map(|((_, entries), (loc, what, count))| {
            Diagnostic::new(
                Code::PolicyMapCapacity,
                loc,
                format!(
                    "{what}{} needs {entries} policy-map entries; its map holds {max_entries}",
                    if count > 1 {
                        format!(" (and {} more with the same policy)", count - 1)
                    } else {
                        String::new()
                    }
                ),
            )
            .label("policy map overflows")
            .help(
                "the agent fails to regenerate such an endpoint and keeps its previous policy; \
                 narrow the rules that select many identities on many ports (entities \
                 `cluster`/`world`, wide selectors), or raise `bpf-policy-map-max`",
            )
        })
        .collect()
}
