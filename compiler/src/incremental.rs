//! One node kept compiled while its cluster changes: what `polc agent` does after each
//! batch of watch events, instead of building the model and compiling the node afresh.
//!
//! A [`NodeCompiler`] holds the model, the node's [`Compilation`] (the selector policy of
//! each class of its endpoints, and the selector cache) and each endpoint's map state. A
//! change is applied in place and recomputes only what it reaches:
//! - policies ([`NodeCompiler::replace_policies`]): the classes the old or new rules select
//!   are resolved again; a new or dropped CIDR prefix changes the CIDR identities, and then
//!   every class is resolved again against a fresh selector cache;
//! - pods ([`NodeCompiler::update_pods`]): the pods are merged into the inventory, a new
//!   label set gets the next identity and one no pod has any more is dropped (then every
//!   class is resolved again); endpoints that came get a class (resolved when new);
//! - in both, only the endpoints whose selector policy changed, whose pod changed or that
//!   are new are materialized again (all of them when the named ports defined anywhere
//!   changed: egress named ports resolve on them).
//!
//! The result is the one a model built afresh would give, with the identities numbered as
//! this one numbered them ([`crate::identity::IdentityTable::keep_numbers`]); changes this
//! does not follow in place (namespaces, nodes, services, a switch to or from dual-stack or
//! node-selector identities) are reported as [`Rebuild`], and the caller builds afresh.
//!
//! Endpoint IDs are stable: an endpoint keeps its ID while it exists, a new one gets the
//! lowest free ID, and the first compile takes the IDs given (those installed on the node
//! already), else numbers as [`crate::compile::endpoints`] does.

use crate::compile::{self, Class, Compilation, CompiledEndpoint};
use crate::inventory::Pod;
use crate::ir::{PolicySet, Rule};
use crate::mapstate::{EndpointPolicy, ProxyPorts};
use crate::model::{EndpointRef, Model};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// One endpoint of the node, compiled.
#[derive(Clone, Debug)]
pub struct NodeEndpoint {
    /// The endpoint (its ID is stable).
    pub endpoint: CompiledEndpoint,
    /// Its map state.
    pub policy: Arc<EndpointPolicy>,
}

/// What an update changed on the node.
#[derive(Clone, Debug, Default)]
pub struct Changed {
    /// Endpoints (by name) that are new, or whose map, identity or class changed.
    pub endpoints: BTreeSet<String>,
    /// Endpoints that are gone.
    pub gone: BTreeSet<String>,
    /// Whether the ipcache may have changed.
    pub ipcache: bool,
    /// How long the steps took (for profiling): resolving classes, materializing maps.
    pub timings: Vec<(&'static str, std::time::Duration)>,
    /// Identities that came and went.
    pub identities: (usize, usize),
}

/// Why a change cannot be applied in place; the model must be built afresh (the
/// [`NodeCompiler`] that reported it is left half-updated and must not be used again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// The cluster became dual-stack or stopped being so.
    DualStack,
    /// Policies started or stopped selecting nodes by label.
    NodeSelectors,
}

/// A node kept compiled (see the module documentation).
pub struct NodeCompiler {
    model: Model,
    node: String,
    compilation: Compilation,
    endpoints: BTreeMap<String, NodeEndpoint>,
}

impl NodeCompiler {
    /// Compiles `node` of `model`; endpoints named in `ids` keep those IDs. `None` when the
    /// cluster has no such node.
    pub fn new(model: Model, node: &str, ids: &BTreeMap<String, u16>) -> Option<NodeCompiler> {
        model.inventory.node(node)?;
        let mut eps = compile::endpoints(&model, Some(node));
        stable_ids(&model, &mut eps, ids);
        let compilation = Compilation::new_with(&model, eps, ProxyPorts::default());
        let mut c = NodeCompiler {
            model,
            node: node.to_string(),
            compilation,
            endpoints: BTreeMap::new(),
        };
        let all: Vec<(String, CompiledEndpoint)> = (c.compilation.endpoints.iter())
            .map(|e| (endpoint_name(&c.model, e.endpoint), e.clone()))
            .collect();
        c.materialize(all);
        Some(c)
    }

    /// The model as it is now.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's endpoints by name, with their maps.
    pub fn endpoints(&self) -> &BTreeMap<String, NodeEndpoint> {
        &self.endpoints
    }

    /// The endpoint IDs by endpoint name.
    pub fn ids(&self) -> BTreeMap<String, u16> {
        self.endpoints
            .iter()
            .map(|(n, e)| (n.clone(), e.endpoint.endpoint_id))
            .collect()
    }

    /// Replaces the policies with `set` (services bound), where the rules `old` were
    /// replaced by `new` (the rules of the policy objects that changed, before and after;
    /// only their subjects matter).
    pub fn replace_policies(
        &mut self,
        set: PolicySet,
        old: &[Rule],
        new: &[Rule],
    ) -> Result<Changed, Rebuild> {
        let selectors_before = crate::identity::uses_node_selectors(&self.model.policies);
        self.model.policies = set;
        self.model.reindex();
        if crate::identity::uses_node_selectors(&self.model.policies) != selectors_before {
            return Err(Rebuild::NodeSelectors);
        }
        let prefixes = self.model.policies.prefixes();
        let (came, went) = self.model.identities.set_prefixes(&prefixes);
        let identities = !came.is_empty() || !went.is_empty();
        let started = std::time::Instant::now();
        let classes = if identities {
            self.compilation
                .identities_changed(&self.model, &came, &went)
        } else {
            self.compilation.update(&self.model, old, new)
        };
        let resolved = started.elapsed();
        let mut changed = self.rematerialize(&classes.into_iter().collect(), &HashSet::new());
        changed.timings.insert(0, ("resolve", resolved));
        changed.identities = (came.len(), went.len());
        changed.ipcache = identities;
        Ok(changed)
    }

    /// Adds, replaces and removes pods (`None`: gone); see [`Model::update_pods`].
    pub fn update_pods(
        &mut self,
        changes: BTreeMap<(String, String), Option<Pod>>,
    ) -> Result<Changed, Rebuild> {
        let touched: HashSet<String> = changes
            .keys()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect();
        let started = std::time::Instant::now();
        let pods = self.model.update_pods(changes);
        let merged = started.elapsed();
        if pods.dual_stack_changed {
            return Err(Rebuild::DualStack);
        }
        let mut eps = compile::endpoints(&self.model, Some(&self.node));
        stable_ids(&self.model, &mut eps, &self.ids());
        let mut classes: HashSet<Class> = self
            .compilation
            .set_endpoints(&self.model, eps)
            .into_iter()
            .collect();
        if !pods.added.is_empty() || !pods.removed.is_empty() {
            classes.extend(self.compilation.identities_changed(
                &self.model,
                &pods.added,
                &pods.removed,
            ));
        }
        let resolved = started.elapsed() - merged;
        let mut changed = if pods.named_ports {
            let all: HashSet<Class> = self.compilation.policies.keys().cloned().collect();
            self.rematerialize(&all, &touched)
        } else {
            self.rematerialize(&classes, &touched)
        };
        changed.identities = (pods.added.len(), pods.removed.len());
        changed.timings.insert(0, ("merge pods", merged));
        changed.timings.insert(1, ("resolve", resolved));
        changed.ipcache = true;
        Ok(changed)
    }

    /// Materializes again the endpoints of `classes`, those named in `touched`, and those
    /// that are new or whose class or ID changed; forgets the endpoints that are gone.
    fn rematerialize(&mut self, classes: &HashSet<Class>, touched: &HashSet<String>) -> Changed {
        let mut changed = Changed::default();
        let current: Vec<(String, CompiledEndpoint)> = self
            .compilation
            .endpoints
            .iter()
            .map(|e| (endpoint_name(&self.model, e.endpoint), e.clone()))
            .collect();
        let names: HashSet<&String> = current.iter().map(|(n, _)| n).collect();
        for gone in self.endpoints.keys().filter(|n| !names.contains(n)) {
            changed.gone.insert(gone.clone());
        }
        self.endpoints.retain(|n, _| names.contains(n));
        let mut redo = Vec::new();
        for (name, e) in current {
            match self.endpoints.get_mut(&name) {
                Some(old)
                    if old.endpoint.class == e.class
                        && old.endpoint.endpoint_id == e.endpoint_id
                        && !classes.contains(&e.class)
                        && !touched.contains(&name) =>
                {
                    // The same map; the endpoint may have moved in the inventory.
                    old.endpoint = e;
                }
                _ => redo.push((name, e)),
            }
        }
        changed
            .endpoints
            .extend(redo.iter().map(|(n, _)| n.clone()));
        let started = std::time::Instant::now();
        self.materialize(redo);
        changed.timings.push(("materialize", started.elapsed()));
        changed
    }

    /// Materializes endpoints (in parallel: at our users' scale an endpoint has thousands of
    /// entries).
    fn materialize(&mut self, endpoints: Vec<(String, CompiledEndpoint)>) {
        use rayon::prelude::*;
        let (compilation, model) = (&self.compilation, &self.model);
        let done: Vec<(String, NodeEndpoint)> = endpoints
            .into_par_iter()
            .map(|(name, e)| {
                let policy = Arc::new(compilation.materialize(model, &e));
                (
                    name,
                    NodeEndpoint {
                        endpoint: e,
                        policy,
                    },
                )
            })
            .collect();
        self.endpoints.extend(done);
    }
}

/// The name polc gives an endpoint: `namespace/pod`, or `host/NODE` (in maps, metrics and
/// explanations).
pub fn endpoint_name(model: &Model, ep: EndpointRef) -> String {
    match ep {
        EndpointRef::Pod(i) => model.inventory.pods[i].key(),
        EndpointRef::Host(n) => format!("host/{}", model.inventory.nodes[n].name),
    }
}

/// Gives the endpoints named in `ids` those IDs, keeps the others' IDs where free, and
/// gives the rest the lowest free IDs.
fn stable_ids(model: &Model, eps: &mut [CompiledEndpoint], ids: &BTreeMap<String, u16>) {
    let names: Vec<String> = eps
        .iter()
        .map(|e| endpoint_name(model, e.endpoint))
        .collect();
    let mut used: BTreeSet<u16> = names.iter().filter_map(|n| ids.get(n).copied()).collect();
    let mut rest = Vec::new();
    for (e, name) in eps.iter_mut().zip(&names) {
        match ids.get(name) {
            Some(&id) => e.endpoint_id = id,
            None if used.insert(e.endpoint_id) => {}
            None => rest.push(e),
        }
    }
    let mut next = 1u16;
    for e in rest {
        while used.contains(&next) {
            next = next.saturating_add(1);
        }
        e.endpoint_id = next;
        used.insert(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use crate::model::Config;
    use crate::raw::Object;
    use crate::source::{FileId, SourceFile};

    /// A small xorshift: the steps are pseudo-random and the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    fn read(name: &str, text: &str, file: u32) -> Vec<Object> {
        let (objects, diags) = crate::read_file(
            FileId(file),
            &SourceFile::new(name, text.to_string()),
            &crate::Options::default(),
        );
        assert!(diags.is_empty(), "{diags:?}");
        objects
    }

    /// The generated small cluster: its policy objects and its inventory.
    fn cluster(seed: u64) -> (Vec<Object>, Inventory) {
        let scale = crate::r#gen::Scale {
            seed,
            ..crate::r#gen::Scale::small()
        };
        let mut objects = Vec::new();
        for (i, f) in crate::r#gen::generate(&scale).iter().enumerate() {
            objects.extend(read(&f.path, &f.text, i as u32));
        }
        let (inventory, _) = Inventory::from_objects(&objects, "default");
        objects.retain(|o| o.kind.is_policy());
        (objects, inventory)
    }

    fn policies(objects: &[Object], inventory: &Inventory) -> PolicySet {
        let (mut set, _) = crate::lower::lower(objects, crate::CiliumVersion::default());
        inventory.bind_services(&mut set);
        set
    }

    fn rules_of(set: &PolicySet, obj: &Object) -> Vec<Rule> {
        set.rules
            .iter()
            .filter(|r| r.origin.kind == obj.kind && r.origin.name == obj.name())
            .filter(|r| r.origin.namespace == obj.namespace())
            .map(|r| (**r).clone())
            .collect()
    }

    /// The model built afresh from the same policies and pods, numbered as `inc` numbers.
    fn fresh(inc: &NodeCompiler, objects: &[Object], base: &Inventory) -> NodeCompiler {
        let mut inventory = base.clone();
        inventory.pods = inc.model().inventory.pods.clone();
        for p in &inventory.pods {
            inventory
                .namespaces
                .entry(p.namespace.clone())
                .or_insert_with(|| crate::inventory::Namespace {
                    name: p.namespace.clone(),
                    labels: vec![("kubernetes.io/metadata.name".into(), p.namespace.clone())],
                });
        }
        inventory.reindex();
        let set = policies(objects, &inventory);
        let mut model = Model::from_parts(set, inventory, Config::default());
        model.identities.keep_numbers(&inc.model().identities);
        NodeCompiler::new(model, inc.node(), &inc.ids()).expect("the node")
    }

    fn assert_same(inc: &NodeCompiler, fresh: &NodeCompiler, step: &str) {
        let ids = |c: &NodeCompiler| -> Vec<(u32, String)> {
            (c.model().identities.iter())
                .map(|i| (i.id, i.labels.allocation_key()))
                .collect()
        };
        assert_eq!(ids(inc), ids(fresh), "identities after {step}");
        let node = inc.node();
        assert_eq!(
            crate::compile::ipcache(inc.model(), node),
            crate::compile::ipcache(fresh.model(), node),
            "ipcache after {step}"
        );
        let names = |c: &NodeCompiler| c.endpoints().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(inc), names(fresh), "endpoints after {step}");
        for (name, a) in inc.endpoints() {
            let b = &fresh.endpoints()[name];
            assert_eq!(
                a.endpoint.endpoint_id, b.endpoint.endpoint_id,
                "{name} {step}"
            );
            assert_eq!(a.endpoint.class, b.endpoint.class, "{name} after {step}");
            assert_eq!(a.policy.map, b.policy.map, "map of {name} after {step}");
            assert_eq!(a.policy.enforced, b.policy.enforced, "{name} after {step}");
            assert_eq!(
                format!("{:?}", a.policy.filters),
                format!("{:?}", b.policy.filters),
                "filters of {name} after {step}"
            );
        }
    }

    /// A pod changed the way pods change: a label (a new value makes a new identity), a
    /// move to another node, a new address, a named port.
    fn changed_pod(rng: &mut Rng, p: &Pod, nodes: &[String], n: usize) -> Pod {
        let mut p = p.clone();
        match rng.below(4) {
            0 => {
                let value = if rng.below(2) == 0 {
                    format!("fresh-{n}")
                } else {
                    "backend".into()
                };
                p.labels.retain(|(k, _)| k != "tier");
                p.labels.push(("tier".into(), value));
            }
            1 => p.node = nodes[rng.below(nodes.len())].clone(),
            2 => {
                p.ips = vec![
                    format!("10.250.{}.{}", n / 200, n % 200 + 1)
                        .parse()
                        .unwrap(),
                ]
            }
            _ => p.named_ports.push(crate::inventory::NamedPort {
                name: format!("extra-{}", rng.below(3)),
                proto: crate::ir::Proto::Tcp,
                port: 7000 + rng.below(3) as u16,
            }),
        }
        p
    }

    const EXTRA: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: extra-egress
spec:
  endpointSelector: {}
  egress:
  - toCIDR: [203.0.113.0/24]
    toPorts:
    - ports: [{port: '443', protocol: TCP}]
  - toEndpoints: [{}]
";

    const NAMED: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: extra-named
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [cluster]
    toPorts:
    - ports: [{port: extra-1, protocol: TCP}]
  egress:
  - toEntities: [cluster]
    toPorts:
    - ports: [{port: extra-2, protocol: TCP}]
";

    #[test]
    fn updates_in_place_equal_a_model_built_afresh() {
        for seed in [1u64, 7, 42] {
            let (mut objects, base) = cluster(seed);
            objects.extend(read("named", NAMED, 9998));
            let nodes: Vec<String> = base.nodes.iter().map(|n| n.name.clone()).collect();
            // The node with the most pods.
            let node = nodes
                .iter()
                .max_by_key(|n| base.pods.iter().filter(|p| p.node == **n).count())
                .unwrap()
                .clone();
            let set = policies(&objects, &base);
            let model = Model::from_parts(set, base.clone(), Config::default());
            let mut inc = NodeCompiler::new(model, &node, &BTreeMap::new()).unwrap();
            assert_same(&inc, &fresh(&inc, &objects, &base), "the first compile");
            // A named port an ingress rule uses comes to a pod elsewhere, then to one on the
            // node: the second changes only that endpoint's map.
            for on_node in [false, true] {
                let pods = &inc.model().inventory.pods;
                let p = pods
                    .iter()
                    .find(|p| (p.node == node) == on_node && !p.host_network)
                    .unwrap();
                let mut p = p.clone();
                p.named_ports.push(crate::inventory::NamedPort {
                    name: "extra-1".into(),
                    proto: crate::ir::Proto::Tcp,
                    port: 7001,
                });
                let key = (p.namespace.clone(), p.name.clone());
                inc.update_pods(BTreeMap::from([(key, Some(p))])).unwrap();
                let what = format!("a named port on a pod (on the node: {on_node})");
                assert_same(&inc, &fresh(&inc, &objects, &base), &what);
            }
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut shelved: Vec<Object> = read("extra", EXTRA, 9999);
            for step in 0..60 {
                let what;
                if rng.below(3) == 0 {
                    // A policy goes, or one comes back (the extra one names a new prefix).
                    let old_set = policies(&objects, &inc.model().inventory);
                    let (old, new) = if rng.below(2) == 0 && !shelved.is_empty() {
                        let o = shelved.remove(rng.below(shelved.len()));
                        objects.push(o.clone());
                        let set = policies(&objects, &inc.model().inventory);
                        what = format!("step {step}: policy {} back", o.name());
                        (Vec::new(), rules_of(&set, &o))
                    } else {
                        let o = objects.remove(rng.below(objects.len()));
                        what = format!("step {step}: policy {} gone", o.name());
                        let old = rules_of(&old_set, &o);
                        shelved.push(o);
                        (old, Vec::new())
                    };
                    let set = policies(&objects, &inc.model().inventory);
                    inc.replace_policies(set, &old, &new).unwrap();
                } else {
                    // Pods come, go and change.
                    let pods = &inc.model().inventory.pods;
                    let mut changes = BTreeMap::new();
                    for k in 0..1 + rng.below(6) {
                        // Half of them on the node.
                        let local: Vec<&Pod> = pods.iter().filter(|p| p.node == node).collect();
                        let p = match rng.below(2) {
                            0 if !local.is_empty() => local[rng.below(local.len())],
                            _ => &pods[rng.below(pods.len())],
                        };
                        let key = (p.namespace.clone(), p.name.clone());
                        let change = match rng.below(3) {
                            0 => None,
                            1 => Some(changed_pod(&mut rng, p, &nodes, step * 10 + k)),
                            _ => {
                                let mut new = changed_pod(&mut rng, p, &nodes, step * 10 + k);
                                new.name = format!("{}-copy-{step}-{k}", p.name);
                                new.ips = vec![format!("10.251.{step}.{}", k + 1).parse().unwrap()];
                                changes
                                    .insert((new.namespace.clone(), new.name.clone()), Some(new));
                                continue;
                            }
                        };
                        changes.insert(key, change);
                    }
                    what = format!("step {step}: {} pods", changes.len());
                    inc.update_pods(changes).unwrap();
                }
                assert_same(&inc, &fresh(&inc, &objects, &base), &what);
            }
            // An agent that restarts takes the numbers from the node's ipcache.
            let installed: BTreeMap<ipnet::IpNet, u32> =
                crate::compile::ipcache(inc.model(), &node)
                    .into_iter()
                    .map(|e| (e.prefix, e.identity))
                    .collect();
            let mut restarted = fresh(&inc, &objects, &base).model().clone();
            let set = restarted.policies.clone();
            let inventory = (*restarted.inventory).clone();
            restarted = Model::from_parts(set, inventory, Config::default());
            restarted
                .identities
                .adopt_numbers(&restarted.inventory, |net| installed.get(net).copied());
            let restarted = NodeCompiler::new(restarted, &node, &inc.ids()).unwrap();
            assert_same(&inc, &restarted, "a restart");
        }
    }
}
