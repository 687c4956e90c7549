//! What the agent keeps between batches of changes, so that a change costs what it reaches
//! rather than what the cluster holds: each object read (parsed, validated and, for a
//! policy, lowered and bound) once per version; the node kept compiled
//! ([`NodeCompiler`]); and the node's desired datapath state, of which only the endpoints a
//! change rewrote are converted again.
//!
//! - A policy that changes (CNP, CCNP, NetworkPolicy) is read again alone and its rules
//!   replace its old ones; a CIDR group that changes has the policies that use it (as it
//!   was or is) lowered again.
//! - Pods that change are merged into the model (new identities numbered after the
//!   existing ones).
//! - Namespaces, nodes and services change what many pods or rules mean (namespace labels
//!   are pod labels, node labels and addresses are identities and tunnels, services bind
//!   `toServices`): the model is then built afresh from the objects already read, keeping
//!   the identity numbers and endpoint IDs. So is it on the first batch, and when the
//!   compiler cannot follow a change in place ([`polc_compiler::incremental::Rebuild`]).
//!
//! - The first batch after a restart takes the identity numbers the node's pinned ipcache
//!   has, and the endpoint IDs its pinned endpoints have, so its install rewrites nothing
//!   that did not change.
//! - Only endpoints that changed are converted to map bytes (and, for the proxy's
//!   configuration, to NPDS rules); the ipcache by difference. An endpoint whose map would
//!   not fit keeps the map it had (denies all if it had none), as the Cilium agent keeps
//!   an endpoint's policy when its regeneration fails.
//!
//! An object the Cilium agent would reject (an error diagnostic) is left out, as a whole,
//! and said once per version.

use crate::live::{Change, KINDS, object_name};
use polc_compiler::CiliumVersion;
use polc_compiler::diag::{Diagnostic, Severity};
use polc_compiler::identity::IpcacheEntry;
use polc_compiler::incremental::{Changed, NodeCompiler};
use polc_compiler::inventory::{Inventory, Pod};
use polc_compiler::ir::{CidrGroup, PolicySet, Rule};
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{FileId, SourceFile};
use polc_ebpf::state::{EndpointState, NodeState};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What a kind of object changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Rules (CNP, CCNP, NetworkPolicy).
    Policy,
    /// A CiliumCIDRGroup.
    Group,
    /// A pod.
    Pod,
    /// A namespace, node or service.
    Inventory,
}

fn role(kind: usize) -> Role {
    match KINDS[kind].kind {
        "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy" | "NetworkPolicy" => Role::Policy,
        "CiliumCIDRGroup" => Role::Group,
        "Pod" => Role::Pod,
        _ => Role::Inventory,
    }
}

/// One object as read.
struct Read {
    /// A hash of its text (a listing again of the same text changes nothing).
    hash: u64,
    /// For inventory objects, a hash of what polc takes from them (a node's heartbeat or a
    /// pod's container statuses change the text, not the cluster polc sees).
    seen: u64,
    /// The object, unless it could not be read or validated (none for a pod: `pod`).
    object: Option<Object>,
    /// A pod as the inventory keeps it (the raw object is not kept: pods are most of a
    /// cluster's objects).
    pod: Option<Pod>,
    /// Why it could not be read or validated.
    error: Option<String>,
    /// Why it could not be lowered (with the CIDR groups as they are).
    lower_error: Option<String>,
    /// A policy's rules, lowered (`toServices` not bound).
    lowered: Vec<Arc<Rule>>,
    /// ... and bound to the services.
    rules: Vec<Arc<Rule>>,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Whether the model was built afresh.
    pub rebuilt: bool,
    /// Endpoints whose maps were computed again.
    pub endpoints: usize,
    /// Endpoints that went.
    pub gone: usize,
    /// Objects read (again) in this batch.
    pub read: usize,
    /// Things to say (objects left out, and why).
    pub notes: Vec<String>,
    /// How long each step took (for profiling, `POLC_TIMINGS`).
    pub timings: Vec<(&'static str, std::time::Duration)>,
    /// Identities that came and went (in place; a rebuild renumbers).
    pub identities: (usize, usize),
}

/// The agent's state between batches (see the module documentation).
pub struct Engine {
    node: String,
    config: Config,
    objects: Vec<BTreeMap<(String, String), Read>>,
    groups: Vec<CidrGroup>,
    compiled: Option<NodeCompiler>,
    /// Endpoint IDs to keep (those installed, then those compiled).
    ids: BTreeMap<String, u16>,
    state: NodeState,
    /// The endpoints in `state`, by name.
    installed: BTreeMap<String, u16>,
    /// The entries of `state`'s ipcache (none until the first build).
    ipcache: Option<Vec<IpcacheEntry>>,
    /// Each endpoint's NPDS rules, when the proxy's configuration is wanted
    /// ([`Engine::with_proxy`]).
    npds: Option<BTreeMap<String, serde_json::Value>>,
    /// Policy-map capacity.
    capacity: usize,
    /// Endpoints whose new map does not fit: they keep the map they had (as the Cilium
    /// agent keeps an endpoint's policy when its regeneration fails), or, new, deny all.
    overflowing: BTreeMap<String, usize>,
}

impl Engine {
    /// An engine for `node` that has read nothing yet. `installed` is what the node has
    /// installed already (after a restart of the agent): its endpoints keep their IDs.
    /// Policy maps hold `capacity` entries.
    pub fn new(
        node: &str,
        version: CiliumVersion,
        cluster_name: &str,
        installed: NodeState,
        capacity: usize,
    ) -> Engine {
        let names: BTreeMap<String, u16> = (installed.endpoints.iter())
            .filter(|(_, e)| !e.name.is_empty())
            .map(|(id, e)| (e.name.clone(), *id))
            .collect();
        Engine {
            node: node.to_string(),
            config: Config {
                version,
                cluster_name: cluster_name.to_string(),
                ..Config::default()
            },
            objects: KINDS.iter().map(|_| BTreeMap::new()).collect(),
            groups: Vec::new(),
            compiled: None,
            ids: names.clone(),
            state: installed,
            installed: names,
            ipcache: None,
            npds: None,
            capacity,
            overflowing: BTreeMap::new(),
        }
    }

    /// Keeps what the proxy's configuration needs ([`Engine::proxy_config`]).
    pub fn with_proxy(mut self) -> Engine {
        self.npds = Some(BTreeMap::new());
        self
    }

    /// The node's `polc proxy` configuration (with [`Engine::with_proxy`], after a build):
    /// each endpoint's NPDS rules are worked out when its map changes, not per batch.
    pub fn proxy_config(&self) -> Option<crate::proxy::config::Config> {
        let (compiled, npds, cache) = (
            self.compiled.as_ref()?,
            self.npds.as_ref()?,
            self.ipcache.as_ref()?,
        );
        let model = compiled.model();
        let mut config = crate::proxy::config::Config::new(
            model,
            &self.node,
            &polc_compiler::mapstate::ProxyPorts::default(),
            cache,
        );
        let mut endpoints: Vec<(&String, &polc_compiler::incremental::NodeEndpoint)> =
            compiled.endpoints().iter().collect();
        endpoints.sort_by_key(|(_, e)| e.endpoint.endpoint_id);
        for (name, e) in endpoints {
            let (ep, id) = (e.endpoint.endpoint, e.endpoint.endpoint_id);
            let rules = npds.get(name).cloned().unwrap_or_default();
            config.add_endpoint(model, ep, id, rules, &e.policy);
        }
        Some(config)
    }

    /// Endpoints whose new map does not fit (with the entries it needs): they keep what
    /// they had.
    pub fn overflowing(&self) -> &BTreeMap<String, usize> {
        &self.overflowing
    }

    /// The node's desired datapath state after the last batch.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// The model after the last batch (none before the first, or after a batch that found
    /// no such node).
    pub fn model(&self) -> Option<&Model> {
        self.compiled.as_ref().map(NodeCompiler::model)
    }

    /// The compiled node.
    pub fn compiled(&self) -> Option<&NodeCompiler> {
        self.compiled.as_ref()
    }

    /// Objects left out because the Cilium agent would reject them.
    pub fn invalid(&self) -> usize {
        self.objects
            .iter()
            .flat_map(|o| o.values())
            .filter(|r| !r.valid())
            .count()
    }

    /// Takes a batch of changes (every kind listed at least once, the first time) and
    /// brings the node's state in line with them.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let mut clock = std::time::Instant::now();
        let mut lap = |out: &mut Outcome, what: &'static str| {
            out.timings.push((what, clock.elapsed()));
            clock = std::time::Instant::now();
        };
        let mut policies: BTreeSet<(usize, (String, String))> = BTreeSet::new();
        let mut groups: Vec<CidrGroup> = Vec::new();
        let mut pods: BTreeMap<(String, String), Option<Pod>> = BTreeMap::new();
        let mut rebuild = self.compiled.is_none();
        // The rules of the policies that change, before.
        let mut old: Vec<Rule> = Vec::new();
        // Read what changed, in parallel (the first batch holds every object).
        let reads: Vec<Option<Read>> = {
            use rayon::prelude::*;
            let (objects, version) = (&self.objects, self.config.version);
            changes
                .par_iter()
                .map(|(kind, key, text)| {
                    let text = text.as_deref()?;
                    let hash = hash_of(text);
                    let unchanged = (objects[*kind].get(key)).is_some_and(|b| b.hash == hash);
                    (!unchanged).then(|| read(*kind, key, text, hash, version))
                })
                .collect()
        };
        for ((kind, key, text), read) in changes.into_iter().zip(reads) {
            let r = role(kind);
            let before = self.objects[kind].get(&key);
            if text.is_some() && read.is_none() {
                // The same text again (a list after a reconnect).
                continue;
            }
            let unseen = matches!(r, Role::Pod | Role::Inventory)
                && before.is_some_and(|b| b.valid())
                && read.as_ref().is_some_and(|n| n.valid())
                && before.map(|b| b.seen) == read.as_ref().map(|n| n.seen);
            if unseen {
                // Nothing polc takes from it changed (a heartbeat, a container's status).
                if let Some(n) = read {
                    self.objects[kind].insert(key, n);
                }
                continue;
            }
            if let Some(b) = before {
                old.extend(b.rules.iter().map(|r| (**r).clone()));
            }
            if r == Role::Group {
                groups.extend(before.and_then(|b| group_of(b.used())));
            }
            match read {
                None => {
                    self.objects[kind].remove(&key);
                }
                Some(read) => {
                    out.read += 1;
                    if let Some(e) = &read.error {
                        out.notes.push(e.clone());
                    }
                    if r == Role::Group {
                        groups.extend(group_of(read.used()));
                    }
                    self.objects[kind].insert(key.clone(), read);
                }
            }
            match r {
                Role::Policy => {
                    policies.insert((kind, key));
                }
                Role::Group => {}
                Role::Pod => {
                    let pod = (self.objects[kind].get(&key))
                        .filter(|r| r.valid())
                        .and_then(|r| r.pod.clone());
                    pods.insert(key, pod);
                }
                Role::Inventory => rebuild = true,
            }
        }
        if !groups.is_empty() {
            self.groups = self.all_groups();
            // The policies that use a changed group, as it was or is, are lowered again.
            let changed: Vec<&CidrGroup> = groups.iter().collect();
            for kind in (0..KINDS.len()).filter(|&k| role(k) == Role::Policy) {
                for (key, r) in &self.objects[kind] {
                    if r.object
                        .as_ref()
                        .is_some_and(|o| polc_compiler::lower::uses_cidr_groups(o, &changed))
                    {
                        policies.insert((kind, key.clone()));
                    }
                }
            }
        }
        lap(&mut out, "read");
        // Lower the changed policies (with the groups as they are now); the users of a
        // changed group that did not change themselves have their rules before still.
        for (kind, key) in &policies {
            if let Some(r) = self.objects[*kind].get(key) {
                old.extend(r.rules.iter().map(|r| (**r).clone()));
            }
            // A changed object was read above (rules not yet bound); an unchanged user of a
            // changed group is lowered again here.
            if let Some(r) = self.objects[*kind].get_mut(key) {
                lower(r, &self.groups, self.config.version);
                out.notes.extend(r.lower_error.clone());
            }
        }
        lap(&mut out, "lower");
        if !rebuild {
            match self.update_in_place(&policies, old, pods) {
                Ok(changed) => {
                    out.endpoints = changed.endpoints.len();
                    out.gone = changed.gone.len();
                    out.timings.extend(changed.timings.iter().copied());
                    out.identities = changed.identities;
                    lap(&mut out, "compile");
                    self.sync_state(&changed)?;
                    lap(&mut out, "convert");
                }
                Err(()) => rebuild = true,
            }
        }
        if rebuild {
            out.rebuilt = true;
            self.rebuild()?;
            out.endpoints = self.installed.len();
            lap(&mut out, "rebuild");
        }
        Ok(out)
    }

    /// Applies pods and policies to the compiled node; `Err` when it must be rebuilt.
    fn update_in_place(
        &mut self,
        policies: &BTreeSet<(usize, (String, String))>,
        old: Vec<Rule>,
        pods: BTreeMap<(String, String), Option<Pod>>,
    ) -> Result<Changed, ()> {
        let mut changed = Changed::default();
        let Some(compiled) = self.compiled.as_mut() else {
            return Err(());
        };
        if !pods.is_empty() {
            changed = compiled.update_pods(pods).map_err(|_| ())?;
        }
        if !policies.is_empty() {
            let inventory = compiled.model().inventory.clone();
            let mut new: Vec<Rule> = Vec::new();
            for (kind, key) in policies {
                if let Some(r) = self.objects[*kind].get_mut(key) {
                    bind(r, &inventory);
                    new.extend(r.rules.iter().map(|r| (**r).clone()));
                }
            }
            let set = self.policy_set();
            let Some(compiled) = self.compiled.as_mut() else {
                return Err(());
            };
            let more = compiled.replace_policies(set, &old, &new).map_err(|_| ())?;
            changed.endpoints.extend(more.endpoints);
            changed.gone.extend(more.gone);
            changed.ipcache |= more.ipcache;
            changed.timings.extend(more.timings);
            changed.identities.0 += more.identities.0;
            changed.identities.1 += more.identities.1;
        }
        Ok(changed)
    }

    /// Builds the model afresh from the objects read, keeping identity numbers and endpoint
    /// IDs, and the node's state with it.
    fn rebuild(&mut self) -> Result<(), String> {
        let inventory_objects = (0..KINDS.len())
            .filter(|&k| role(k) == Role::Inventory)
            .flat_map(|k| self.objects[k].values())
            .filter_map(Read::used);
        let pods: Vec<Pod> = (0..KINDS.len())
            .filter(|&k| role(k) == Role::Pod)
            .flat_map(|k| self.objects[k].values())
            .filter(|r| r.valid())
            .filter_map(|r| r.pod.clone())
            .collect();
        let (inventory, _) =
            Inventory::with_pods(inventory_objects, pods, &self.config.cluster_name);
        for kind in (0..KINDS.len()).filter(|&k| role(k) == Role::Policy) {
            for r in self.objects[kind].values_mut() {
                bind(r, &inventory);
            }
        }
        let mut model = Model::from_parts(self.policy_set(), inventory, self.config.clone());
        if let Some(prior) = self.compiled.take() {
            model.identities.keep_numbers(&prior.model().identities);
            self.ids = prior.ids();
        } else if !self.state.ipcache.is_empty() {
            // A restart: the numbers the node has installed.
            let installed = self.state.ipcache_identities();
            let inventory = model.inventory.clone();
            model
                .identities
                .adopt_numbers(&inventory, |net| installed.get(net).copied());
        }
        let compiled = NodeCompiler::new(model, &self.node, &self.ids)
            .ok_or_else(|| format!("the cluster has no node `{}`", self.node))?;
        self.compiled = Some(compiled);
        // Endpoints keep their IDs, so the state is rewritten in place; those gone are
        // dropped below.
        let all = Changed {
            endpoints: self
                .compiled
                .as_ref()
                .map(|c| c.endpoints().keys().cloned().collect())
                .unwrap_or_default(),
            gone: (self.installed.keys())
                .filter(|n| {
                    self.compiled
                        .as_ref()
                        .is_some_and(|c| !c.endpoints().contains_key(*n))
                })
                .cloned()
                .collect(),
            ipcache: true,
            timings: Vec::new(),
            identities: (0, 0),
        };
        self.sync_state(&all)?;
        // What the node had that is no endpoint now (nameless, or renamed).
        let ids: BTreeSet<u16> = self.installed.values().copied().collect();
        self.state.endpoints.retain(|id, _| ids.contains(id));
        Ok(())
    }

    /// Converts what changed into the node's state (in parallel).
    fn sync_state(&mut self, changed: &Changed) -> Result<(), String> {
        use rayon::prelude::*;
        let Some(compiled) = self.compiled.as_ref() else {
            return Ok(());
        };
        for name in &changed.gone {
            if let Some(id) = self.installed.remove(name) {
                self.state.endpoints.remove(&id);
            }
            self.overflowing.remove(name);
        }
        let converted: Vec<(String, u16, EndpointState)> = changed
            .endpoints
            .par_iter()
            .filter_map(|name| {
                let e = compiled.endpoints().get(name)?;
                let st = EndpointState::from_policy(name, e.endpoint.identity, &e.policy);
                Some((name.clone(), e.endpoint.endpoint_id, st))
            })
            .collect();
        for (name, id, st) in converted {
            if let Some(was) = self.installed.insert(name.clone(), id)
                && was != id
                && let Some(old) = self.state.endpoints.remove(&was)
            {
                self.state.endpoints.insert(id, old);
            }
            if st.policy.len() > self.capacity {
                self.overflowing.insert(name.clone(), st.policy.len());
                let kept = self
                    .state
                    .endpoints
                    .get(&id)
                    .is_some_and(|o| o.name == name);
                if !kept {
                    // Nothing to keep: the endpoint denies everything until its map fits.
                    let deny = EndpointState {
                        name: name.clone(),
                        identity: st.identity,
                        ingress_enforced: true,
                        egress_enforced: true,
                        policy: BTreeMap::new(),
                    };
                    self.state.insert_endpoint(id, deny);
                }
                continue;
            }
            self.overflowing.remove(&name);
            self.state.insert_endpoint(id, st);
        }
        if let Some(npds) = self.npds.as_mut() {
            for name in &changed.gone {
                npds.remove(name);
            }
            let model = compiled.model();
            let rules: Vec<(String, serde_json::Value)> = changed
                .endpoints
                .par_iter()
                .filter_map(|name| {
                    let e = compiled.endpoints().get(name)?;
                    let (ep, id) = (e.endpoint.endpoint, e.endpoint.endpoint_id);
                    let rules = polc_ebpf::npds::network_policy(model, ep, id, &e.policy);
                    Some((name.clone(), rules))
                })
                .collect();
            npds.extend(rules);
        }
        if changed.ipcache {
            let model = compiled.model();
            let cache = model.identities.ipcache(&model.inventory, &self.node);
            match &self.ipcache {
                Some(old) => self.state.update_ipcache(old, &cache),
                None => NodeState::new(&cache).map(|s| self.state.ipcache = s.ipcache),
            }
            .map_err(|e| format!("ipcache: {e}"))?;
            self.ipcache = Some(cache);
        }
        self.ids = compiled.ids();
        Ok(())
    }

    /// Every valid CIDR group.
    fn all_groups(&self) -> Vec<CidrGroup> {
        let objects: Vec<Object> = (0..KINDS.len())
            .filter(|&k| role(k) == Role::Group)
            .flat_map(|k| self.objects[k].values())
            .filter_map(|r| r.used().cloned())
            .collect();
        polc_compiler::lower::cidr_groups(&objects)
    }

    /// The policy set: every valid policy's rules, in the order the kinds and objects are
    /// listed (as `polc --cluster` reads them).
    fn policy_set(&self) -> PolicySet {
        let rules = (0..KINDS.len())
            .filter(|&k| role(k) == Role::Policy)
            .flat_map(|k| self.objects[k].values())
            .flat_map(|r| r.rules.iter().cloned())
            .collect();
        PolicySet {
            rules,
            cidr_groups: self.groups.clone(),
        }
    }
}

/// Reads one object's text (whose hash is `hash`): parsed and validated (a policy is lowered later, with the CIDR
/// groups of its batch).
fn read(
    kind: usize,
    key: &(String, String),
    text: &str,
    hash: u64,
    version: CiliumVersion,
) -> Read {
    let k = &KINDS[kind];
    let name = format!("cluster: {}", object_name(k.kind, &key.0, &key.1));
    let file = SourceFile::new(name.clone(), text.to_string());
    let opts = polc_compiler::Options {
        version,
        ..polc_compiler::Options::default()
    };
    let (mut objects, mut diags) = polc_compiler::read_file(FileId(0), &file, &opts);
    if k.policy {
        diags.extend(polc_compiler::validate::check(&objects, &opts).into_vec());
    }
    let mut read = Read {
        hash,
        seen: 0,
        object: None,
        pod: None,
        error: error_of(&name, &file, &diags),
        lower_error: None,
        lowered: Vec::new(),
        rules: Vec::new(),
    };
    if objects.len() != 1 && read.error.is_none() {
        read.error = Some(format!("{name}: not one object"));
    }
    if read.error.is_none() {
        read.object = objects.pop();
        if matches!(role(kind), Role::Pod | Role::Inventory) {
            read.seen = read.object.as_ref().map_or(0, seen);
        }
        if role(kind) == Role::Pod {
            read.pod = read.object.take().as_ref().and_then(Pod::of);
        }
    }
    read
}

impl Read {
    /// Whether the object is used: read, validated and (a policy) lowered.
    fn valid(&self) -> bool {
        self.error.is_none() && self.lower_error.is_none()
    }

    /// The object, if it is used.
    fn used(&self) -> Option<&Object> {
        self.object.as_ref().filter(|_| self.valid())
    }
}

/// Lowers a policy's object again (with `groups`); a lowering error leaves it out.
fn lower(r: &mut Read, groups: &[CidrGroup], version: CiliumVersion) {
    r.lowered.clear();
    r.rules.clear();
    r.lower_error = None;
    let Some(obj) = r.object.as_ref().filter(|_| r.error.is_none()) else {
        return;
    };
    let (set, diags) =
        polc_compiler::lower::lower_with_groups(std::slice::from_ref(obj), groups, version);
    if let Some(d) = diags.iter().find(|d| d.severity == Severity::Error) {
        r.lower_error = Some(format!(
            "cluster: {}: error[{}]: {}",
            object_name(obj.kind.name(), obj.namespace(), obj.name()),
            d.code.as_str(),
            d.message
        ));
        return;
    }
    r.lowered = set.rules;
}

/// Binds a policy's rules to the services of `inventory`.
fn bind(r: &mut Read, inventory: &Inventory) {
    let mut set = PolicySet {
        rules: r.lowered.clone(),
        cidr_groups: Vec::new(),
    };
    inventory.bind_services(&mut set);
    r.rules = set.rules;
}

/// A hash of what the inventory takes from an object (where in its text aside).
fn seen(obj: &Object) -> u64 {
    let (mut inv, _) = Inventory::from_objects(std::iter::once(obj), "");
    let nowhere = polc_compiler::source::Loc::default();
    inv.pods.iter_mut().for_each(|p| p.loc = nowhere);
    inv.nodes.iter_mut().for_each(|n| n.loc = nowhere);
    inv.services.iter_mut().for_each(|s| s.loc = nowhere);
    hash_of(&format!(
        "{:?}{:?}{:?}{:?}",
        inv.namespaces, inv.nodes, inv.pods, inv.services
    ))
}

fn group_of(obj: Option<&Object>) -> Option<CidrGroup> {
    polc_compiler::lower::cidr_groups(std::slice::from_ref(obj?))
        .into_iter()
        .next()
}

fn hash_of(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The first error among `diags`, said with its line.
fn error_of(name: &str, file: &SourceFile, diags: &[Diagnostic]) -> Option<String> {
    let d = diags.iter().find(|d| d.severity == Severity::Error)?;
    let at = file.line_col(d.loc.start as usize);
    Some(format!(
        "{name}:{}:{}: error[{}]: {}",
        at.line,
        at.col,
        d.code.as_str(),
        d.message
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::SourceMap;
    use serde_json::{Value, json};

    /// The objects of the small generated cluster as the API server serves them: (kind
    /// index, key, JSON text).
    fn cluster() -> BTreeMap<(usize, (String, String)), Value> {
        let scale = polc_compiler::r#gen::Scale::small();
        let mut out = BTreeMap::new();
        for item in crate::commands::r#gen::api_objects(&scale) {
            let Some(k) = KINDS.iter().position(|k| item["kind"] == k.kind) else {
                continue;
            };
            let ns = item["metadata"]["namespace"].as_str().unwrap_or("");
            let name = item["metadata"]["name"].as_str().unwrap_or("");
            out.insert((k, (ns.to_string(), name.to_string())), item);
        }
        out
    }

    fn kind(name: &str) -> usize {
        KINDS.iter().position(|k| k.kind == name).unwrap()
    }

    /// The node's state compiled afresh from `objects` (those with an error left out),
    /// with the identities numbered as `engine` numbers them: each endpoint by name (its
    /// ID aside), and the ipcache.
    type Compared = (BTreeMap<String, (u32, bool, bool, usize)>, usize);

    fn compared(state: &NodeState) -> (Compared, NodeState) {
        let eps = state
            .endpoints
            .values()
            .map(|e| {
                let digest = hash_of(&format!("{:?}", e.policy));
                (
                    e.name.clone(),
                    (
                        e.identity,
                        e.ingress_enforced,
                        e.egress_enforced,
                        digest as usize,
                    ),
                )
            })
            .collect();
        ((eps, state.ipcache.len()), state.clone())
    }

    fn fresh(
        engine: &Engine,
        objects: &BTreeMap<(usize, (String, String)), Value>,
    ) -> (NodeState, Model) {
        let mut sources = SourceMap::new();
        for ((k, (ns, name)), v) in objects {
            sources.add(SourceFile::new(
                object_name(KINDS[*k].kind, ns, name),
                v.to_string(),
            ));
        }
        let opts = polc_compiler::Options::default();
        let (objects, read) = polc_compiler::read_files(&sources, &opts);
        let mut diags = read;
        diags.extend(polc_compiler::check(&objects, &opts).diags);
        let bad: BTreeSet<u32> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.loc.file.0)
            .collect();
        let kept: Vec<Object> = objects
            .into_iter()
            .filter(|o| !bad.contains(&o.loc.file.0))
            .collect();
        let mut policies = polc_compiler::check(&kept, &opts).policies;
        let (inventory, _) = Inventory::from_objects(&kept, "default");
        inventory.bind_services(&mut policies);
        let mut model = Model::from_parts(policies, inventory, Config::default());
        model
            .identities
            .keep_numbers(&engine.model().unwrap().identities);
        let (state, _) =
            crate::commands::load::node_state_with(&model, &engine.node, |_, _| {}).unwrap();
        (state, model)
    }

    /// Asserts that the engine's state is the one compiled afresh; returns whether its
    /// proxy configuration could be compared too (only while its endpoint IDs are those a
    /// compile afresh gives).
    fn assert_same(
        engine: &Engine,
        objects: &BTreeMap<(usize, (String, String)), Value>,
        step: &str,
    ) -> bool {
        let (fresh_state, model) = fresh(engine, objects);
        let (a, sa) = compared(engine.state());
        let (b, sb) = compared(&fresh_state);
        assert_eq!(
            a.0.keys().collect::<Vec<_>>(),
            b.0.keys().collect::<Vec<_>>(),
            "{step}"
        );
        for (name, x) in &a.0 {
            assert_eq!(x, &b.0[name], "endpoint {name} after {step}");
        }
        assert_eq!(sa.ipcache, sb.ipcache, "ipcache after {step}");
        let ids = |s: &NodeState| -> Vec<(u16, String)> {
            s.endpoints
                .iter()
                .map(|(id, e)| (*id, e.name.clone()))
                .collect()
        };
        if ids(&sa) != ids(&sb) {
            return false;
        }
        let json = |c: &crate::proxy::config::Config| serde_json::to_string(c).unwrap();
        let proxy = engine.proxy_config().expect("a proxy configuration");
        let afresh = crate::proxy::config::Config::of_node(&model, &engine.node);
        assert_eq!(
            json(&proxy),
            json(&afresh),
            "the proxy's configuration after {step}"
        );
        true
    }

    #[test]
    fn the_engine_equals_a_compile_afresh_after_every_change() {
        let mut objects = cluster();
        let pods = kind("Pod");
        let node = {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for ((k, _), v) in &objects {
                if *k == pods {
                    *count
                        .entry(v["spec"]["nodeName"].as_str().unwrap_or("").into())
                        .or_default() += 1;
                }
            }
            count.into_iter().max_by_key(|(_, n)| *n).unwrap().0
        };
        let mut engine = Engine::new(
            &node,
            CiliumVersion::default(),
            "default",
            NodeState::default(),
            65536,
        )
        .with_proxy();
        let all: Vec<Change> = objects
            .iter()
            .map(|((k, key), v)| (*k, key.clone(), Some(v.to_string())))
            .collect();
        assert!(engine.apply(all).unwrap().rebuilt);
        assert!(assert_same(&engine, &objects, "the first batch"));
        let mut proxies_compared = 1;

        let first = |objects: &BTreeMap<(usize, (String, String)), Value>, k: usize| {
            objects.keys().find(|(i, _)| *i == k).unwrap().clone()
        };
        let cnp = first(&objects, kind("CiliumNetworkPolicy"));
        let group = first(&objects, kind("CiliumCIDRGroup"));
        let service = first(&objects, kind("Service"));
        let namespace = first(&objects, kind("Namespace"));
        let local_pod = objects
            .iter()
            .find(|((k, _), v)| *k == pods && v["spec"]["nodeName"] == json!(node))
            .map(|(k, _)| k.clone())
            .unwrap();
        type Edit = Box<
            dyn Fn(&mut BTreeMap<(usize, (String, String)), Value>) -> (usize, (String, String)),
        >;
        let edits: Vec<(&str, bool, Edit)> = vec![
            (
                "a CNP changes",
                false,
                Box::new({
                    let cnp = cnp.clone();
                    move |o| {
                        let v = o.get_mut(&cnp).unwrap();
                        v["metadata"]["labels"] = json!({"edited": "yes"});
                        v["spec"]["ingress"] = json!([{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "4444", "protocol": "TCP"}]}]}]);
                        cnp.clone()
                    }
                }),
            ),
            (
                "a CNP that uses a group comes",
                false,
                Box::new({
                    let (ns, name) = (cnp.1.0.clone(), group.1.1.clone());
                    move |o| {
                        let key = (
                            kind("CiliumNetworkPolicy"),
                            (ns.clone(), "uses-group".to_string()),
                        );
                        o.insert(key.clone(), json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                        "metadata": {"name": "uses-group", "namespace": ns},
                        "spec": {"endpointSelector": {}, "ingress": [{"fromCIDRSet": [{"cidrGroupRef": name}]}]}}));
                        key
                    }
                }),
            ),
            (
                "the group grows",
                false,
                Box::new({
                    let group = group.clone();
                    move |o| {
                        let v = o.get_mut(&group).unwrap();
                        let cidrs = v["spec"]["externalCIDRs"].as_array_mut().unwrap();
                        cidrs.push(json!("192.0.2.0/24"));
                        group.clone()
                    }
                }),
            ),
            (
                "an invalid CNP comes",
                false,
                Box::new({
                    let ns = cnp.1.0.clone();
                    move |o| {
                        let key = (
                            kind("CiliumNetworkPolicy"),
                            (ns.clone(), "invalid".to_string()),
                        );
                        o.insert(
                            key.clone(),
                            json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                        "metadata": {"name": "invalid", "namespace": ns},
                        "spec": {"endpointSelector": {}, "ingress": [{"fromCIDR": ["10.0.0.1"]}]}}),
                        );
                        key
                    }
                }),
            ),
            (
                "a pod on the node changes its labels",
                false,
                Box::new({
                    let p = local_pod.clone();
                    move |o| {
                        o.get_mut(&p).unwrap()["metadata"]["labels"]["tier"] = json!("moved");
                        p.clone()
                    }
                }),
            ),
            (
                "a pod on the node goes",
                false,
                Box::new({
                    let p = local_pod.clone();
                    move |o| {
                        o.remove(&p);
                        p.clone()
                    }
                }),
            ),
            (
                "a service changes its selector",
                true,
                Box::new({
                    let s = service.clone();
                    move |o| {
                        o.get_mut(&s).unwrap()["spec"]["selector"] =
                            json!({"app": "something-else"});
                        s.clone()
                    }
                }),
            ),
            (
                "a namespace is relabelled",
                true,
                Box::new({
                    let n = namespace.clone();
                    move |o| {
                        o.get_mut(&n).unwrap()["metadata"]["labels"]["team"] = json!("new-team");
                        n.clone()
                    }
                }),
            ),
            (
                "the CNP goes",
                false,
                Box::new({
                    let cnp = cnp.clone();
                    move |o| {
                        o.remove(&cnp);
                        cnp.clone()
                    }
                }),
            ),
        ];
        for (what, rebuilds, edit) in edits {
            let key = edit(&mut objects);
            let text = objects.get(&key).map(Value::to_string);
            let out = engine.apply(vec![(key.0, key.1, text)]).unwrap();
            assert_eq!(out.rebuilt, rebuilds, "{what}");
            proxies_compared += usize::from(assert_same(&engine, &objects, what));
        }
        assert!(proxies_compared >= 4, "{proxies_compared}");
        // What polc does not take from an object changes nothing: a node's heartbeat, a
        // pod's container statuses.
        let a_node = first(&objects, kind("Node"));
        let a_pod = first(&objects, pods);
        for (key, field) in [(a_node, "conditions"), (a_pod, "containerStatuses")] {
            objects.get_mut(&key).unwrap()["status"][field] = json!([{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-27T12:00:00Z"}]);
            let text = objects.get(&key).map(Value::to_string);
            let out = engine.apply(vec![(key.0, key.1, text)]).unwrap();
            assert!(!out.rebuilt && out.endpoints == 0, "{field}: {out:?}");
            assert_same(&engine, &objects, field);
        }
        assert_eq!(
            engine.invalid(),
            1,
            "the invalid CNP is left out and counted"
        );
    }
}
