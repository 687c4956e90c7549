//! What the DNS proxy learns (datapath spec §4.3): every address a forwarded answer gives for
//! a name a `toFQDNs` selector matches is an FQDN identity's, in the node's ipcache and in the
//! policy maps of the endpoints whose policy names the selector. The node's cluster is
//! compiled again with the learnt answers ([`Model::learn_dns`]) and the node's pinned
//! datapath synced before the answer is released to the client, so the first connection to
//! a resolved name is not dropped. Entries live for the answer's TTL, at least
//! [`MIN_TTL`] (Cilium's `tofqdns-min-ttl`), and go when it has passed.

use super::config::{Config, Datapath};
use crate::commands::cluster::{self, ClusterArgs};
use polc_compiler::model::Model;
use polc_ebpf::loader::{Loader, Options};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time an answer is kept (Cilium's `tofqdns-min-ttl` default, one hour).
pub const MIN_TTL: Duration = Duration::from_secs(3600);

/// The answers of one node's DNS proxy and the cluster they are compiled into.
pub struct Learner {
    datapath: Datapath,
    node: String,
    state: Mutex<LearnState>,
}

struct LearnState {
    /// The cluster without answers (read again when the configuration changes).
    model: Option<Model>,
    /// (name, address) and when it expires.
    learnt: BTreeMap<(String, IpAddr), Instant>,
    /// The node's datapath, opened at the first sync and kept.
    loader: Option<Loader>,
    /// Syncs done, how long the last took (compile and sync), and the last failure.
    syncs: u64,
    last_sync: Duration,
    error: Option<String>,
}

/// What a node's tables become after a sync, for the HTTP and DNS proxies.
pub type Tables = Config;

impl Learner {
    /// A learner for the node and datapath of `config` (`None` when the configuration names
    /// no datapath: then nothing is learnt).
    pub fn new(config: &Config) -> Option<Learner> {
        let datapath = config.datapath.clone()?;
        let learner = Learner {
            datapath,
            node: config.node.clone(),
            state: Mutex::new(LearnState {
                model: None,
                learnt: BTreeMap::new(),
                loader: None,
                syncs: 0,
                last_sync: Duration::ZERO,
                error: None,
            }),
        };
        learner.reload(config);
        Some(learner)
    }

    /// Reads the cluster again (the configuration changed: new policies). Returns the
    /// tables with what was learnt, when anything was.
    pub fn reload(&self, config: &Config) -> Option<Tables> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Whoever wrote the new configuration changed the maps too: read them again.
        st.loader = None;
        if let Some(d) = &config.datapath {
            let args = ClusterArgs {
                policies: d.policies.clone(),
                inventory: d.inventory.clone(),
                cilium_version: d.cilium_version.parse().unwrap_or_default(),
                cluster_name: d.cluster_name.clone(),
                max_file_size: 1024 * 1024 * 1024,
                dns_answers: Vec::new(),
                live: Default::default(),
            };
            let mut errors = Vec::new();
            st.model =
                cluster::load(&args, &[], &mut std::io::empty(), &mut errors).map(|l| l.model);
            if st.model.is_none() {
                st.error = Some(String::from_utf8_lossy(&errors).trim().to_string());
            }
        }
        if st.learnt.is_empty() {
            return None;
        }
        self.apply(&mut st)
    }

    /// Takes a forwarded answer's addresses (name, address, TTL); when that adds an address
    /// the datapath does not have yet, compiles and syncs the node before returning, and
    /// gives the new tables.
    pub fn learn(&self, answers: &[(String, IpAddr, u32)]) -> Option<Tables> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut new = false;
        for (name, ip, ttl) in answers {
            let until = now + Duration::from_secs(u64::from(*ttl)).max(MIN_TTL);
            let key = (polc_compiler::eval::fqdn(name), *ip);
            match st.learnt.get_mut(&key) {
                Some(t) => *t = (*t).max(until),
                None => {
                    st.learnt.insert(key, until);
                    new = true;
                }
            }
        }
        if !new {
            return None;
        }
        self.apply(&mut st)
    }

    /// Forgets the answers whose time has passed; syncs when any went.
    pub fn expire(&self) -> Option<Tables> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let before = st.learnt.len();
        st.learnt.retain(|_, until| *until > now);
        if st.learnt.len() == before {
            return None;
        }
        self.apply(&mut st)
    }

    /// Compiles the node with the learnt answers and syncs its datapath.
    fn apply(&self, st: &mut LearnState) -> Option<Tables> {
        let start = Instant::now();
        let answers: Vec<(String, IpAddr)> = st.learnt.keys().cloned().collect();
        let st = &mut *st;
        let model = st.model.as_mut()?;
        model.learn_dns(answers);
        let cache = model.identities.ipcache(&model.inventory, &self.node);
        let mut tables = Config::new(
            model,
            &self.node,
            &polc_compiler::mapstate::ProxyPorts::default(),
            &cache,
        );
        tables.datapath = Some(self.datapath.clone());
        let desired = crate::commands::load::node_state_with(model, &self.node, |e, policy| {
            let rules = polc_ebpf::npds::network_policy(model, e.endpoint, e.endpoint_id, policy);
            tables.add_endpoint(model, e.endpoint, e.endpoint_id, rules, policy);
        });
        if st.loader.is_none() {
            let options = Options {
                policy_map_max: self.datapath.policy_map_max,
                ..Options::default()
            };
            st.loader = Loader::open(&self.datapath.pins, &options).ok();
        }
        let result = match (desired, st.loader.as_mut()) {
            (Ok((desired, _)), Some(loader)) => loader.sync(&desired).map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.to_string()),
            (_, None) => Err(format!(
                "cannot open the datapath pinned at {}",
                self.datapath.pins.display()
            )),
        };
        if result.is_err() {
            // Opened again next time: the pins may have been replaced (`lab up`).
            st.loader = None;
        }
        match result {
            Ok(_) => {
                st.syncs += 1;
                st.last_sync = start.elapsed();
                st.error = None;
            }
            Err(e) => st.error = Some(e),
        }
        Some(tables)
    }

    /// What was learnt, for the status file.
    pub fn status(&self) -> Value {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let learnt: Vec<Value> = st
            .learnt
            .iter()
            .map(|((name, ip), until)| {
                json!({
                    "name": name,
                    "address": ip.to_string(),
                    "expiresInS": until.saturating_duration_since(now).as_secs(),
                })
            })
            .collect();
        json!({
            "learnt": learnt,
            "syncs": st.syncs,
            "lastSyncMs": st.last_sync.as_secs_f64() * 1e3,
            "error": st.error,
        })
    }
}
