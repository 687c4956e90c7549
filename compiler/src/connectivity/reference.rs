//! The slow, obviously right answer the engine is held against: ask the reference evaluator
//! ([`eval::decide`]) about one flow per port class.
//!
//! Port classes: every boundary a rule of the models draws (each range's first and last
//! port and their neighbours, named ports' numbers and the next port) cuts a protocol's
//! ports into classes whose ports all get the same verdict, so one flow per class decides
//! the whole class. This is what `polc graph` and `polc diff` computed before the engine,
//! for every pair of ends.

use super::{Family, PROTOS, PortSet, domain, family_fits};
use crate::eval::{self, Flow, Peer, Verdict};
use crate::ir::{PortSpec, Ports, Proto};
use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Per protocol, the first port of every port class the rules of `models` draw, ascending;
/// a point stands for the ports up to the next point (the last for itself up to the end of
/// the protocol's [`domain`]).
pub fn port_points(models: &[&Model]) -> BTreeMap<Proto, Vec<u16>> {
    let mut bounds: BTreeSet<u32> = BTreeSet::new();
    for model in models {
        for rule in &model.policies.rules {
            for item in &rule.items {
                let Ports::List(list) = &item.ports else {
                    continue;
                };
                for p in list {
                    match &p.port {
                        PortSpec::Range(0, 0) => {}
                        PortSpec::Range(a, b) => {
                            let (a, b) = (u32::from(*a), u32::from((*b).max(*a)));
                            bounds.extend([a.saturating_sub(1), a, a + 1, b, b + 1]);
                        }
                        PortSpec::Named(name) => {
                            for (_, n) in model.inventory.named_ports_anywhere(name) {
                                bounds.extend([u32::from(*n), u32::from(*n) + 1]);
                            }
                        }
                    }
                }
            }
        }
    }
    PROTOS
        .iter()
        .map(|&proto| {
            let (lo, hi) = domain(proto);
            let mut pts: BTreeSet<u16> = [lo, hi].into_iter().collect();
            pts.extend(
                bounds
                    .iter()
                    .filter_map(|b| u16::try_from(*b).ok())
                    .filter(|b| (lo..=hi).contains(b)),
            );
            (proto, pts.into_iter().collect())
        })
        .collect()
}

/// The family of an end.
pub fn family(p: Peer) -> Family {
    match p {
        Peer::External(IpAddr::V4(_)) => Family::V4,
        Peer::External(IpAddr::V6(_)) => Family::V6,
        _ => Family::Any,
    }
}

/// What `src` may send to `dst` under `model`, one [`eval::decide`] per point of `points`
/// (see [`port_points`]), cut to the protocols the two ends' families carry.
pub fn allowed(model: &Model, src: Peer, dst: Peer, points: &BTreeMap<Proto, Vec<u16>>) -> PortSet {
    let mut set = PortSet::empty();
    if src == dst {
        return set;
    }
    for (&proto, pts) in points {
        if !family_fits(proto, family(src), family(dst)) {
            continue;
        }
        let (_, max) = domain(proto);
        for (k, &port) in pts.iter().enumerate() {
            let end = pts.get(k + 1).map_or(max, |n| n.saturating_sub(1));
            let flow = Flow {
                src,
                dst,
                proto,
                port,
                request: None,
            };
            if eval::decide(model, &flow).verdict == Verdict::Allow {
                set = set.union(&PortSet::range(proto, port, end));
            }
        }
    }
    set
}
