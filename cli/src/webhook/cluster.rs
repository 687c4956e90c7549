//! `--cluster`: the policy set read from the API server, through watches of the four kinds
//! (kubeconfig, or the in-cluster service account).
//!
//! Each kind is listed and then watched (kube's watcher, which lists again after a watch
//! breaks, with backoff). The objects are kept as JSON by kind, namespace and name; once every
//! kind has been listed, and again after each change (changes arriving together are taken
//! together), a new [`Snapshot`] is made from them and put in use. A kind the API server does
//! not serve (Cilium's CRDs not installed, or an older CiliumCIDRGroup version) counts as
//! having no objects, and is said once.

use super::server::Log;
use super::store::{Policies, Snapshot};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::version::CiliumVersion;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A kind polc reads: its group, the versions tried (newest first), kind and plural.
struct Watched {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
}

const WATCHED: [Watched; 4] = [
    Watched {
        group: "cilium.io",
        versions: &["v2"],
        kind: "CiliumNetworkPolicy",
        plural: "ciliumnetworkpolicies",
    },
    Watched {
        group: "cilium.io",
        versions: &["v2"],
        kind: "CiliumClusterwideNetworkPolicy",
        plural: "ciliumclusterwidenetworkpolicies",
    },
    Watched {
        group: "cilium.io",
        versions: &["v2", "v2alpha1"],
        kind: "CiliumCIDRGroup",
        plural: "ciliumcidrgroups",
    },
    Watched {
        group: "networking.k8s.io",
        versions: &["v1"],
        kind: "NetworkPolicy",
        plural: "networkpolicies",
    },
];

/// What a kind's watch reports to the task that keeps the objects.
enum Update {
    /// The kind is listed again: these are all its objects.
    Listed(usize, BTreeMap<(String, String), String>),
    /// An object was added or changed.
    Applied(usize, (String, String), String),
    /// An object was deleted.
    Deleted(usize, (String, String)),
}

/// Keeps `policies` equal to the cluster's policy objects, until the server stops.
pub async fn watch(
    client: kube::Client,
    policies: Arc<Policies>,
    version: CiliumVersion,
    log: Log,
) {
    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    for (i, w) in WATCHED.iter().enumerate() {
        let (client, tx, log) = (client.clone(), tx.clone(), log.clone());
        tokio::spawn(async move { watch_kind(client, i, w, tx, log).await });
    }
    drop(tx);
    let mut objects: Vec<Option<BTreeMap<(String, String), String>>> = vec![None; WATCHED.len()];
    while let Some(first) = rx.recv().await {
        // Changes that come together are taken together.
        let mut batch = vec![first];
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for update in batch {
            match update {
                Update::Listed(i, all) => objects[i] = Some(all),
                Update::Applied(i, key, text) => {
                    objects[i]
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, text);
                }
                Update::Deleted(i, key) => {
                    if let Some(o) = objects[i].as_mut() {
                        o.remove(&key);
                    }
                }
            }
        }
        // Not before every kind is listed: a partial set would make wrong findings.
        if objects.iter().any(Option::is_none) {
            continue;
        }
        let mut sources = SourceMap::new();
        for (w, kind) in WATCHED.iter().zip(&objects) {
            for ((ns, name), text) in kind.iter().flatten() {
                let shown = if ns.is_empty() {
                    format!("{} {name}", w.kind)
                } else {
                    format!("{} {ns}/{name}", w.kind)
                };
                sources.add(SourceFile::new(shown, text.clone()));
            }
        }
        let started = std::time::Instant::now();
        let made = tokio::task::spawn_blocking(move || Snapshot::from_sources(&sources, version));
        let Ok(snapshot) = made.await else {
            let _ = log.send("polc webhook: making the policy set failed".to_string());
            continue;
        };
        let invalid = match snapshot.invalid {
            0 => String::new(),
            n => format!("; {n} with errors the agent rejects"),
        };
        let _ = log.send(format!(
            "polc webhook: policy set read from the cluster: {} objects, {} rules, in {} ms{invalid}",
            snapshot.objects.len(),
            snapshot.set.rules.len(),
            started.elapsed().as_millis()
        ));
        policies.set(snapshot);
    }
}

/// The kind `w` at the first of its versions the API server serves, or `None` when it serves
/// none; other errors (the server unreachable, forbidden) are retried.
async fn resource(client: &kube::Client, w: &Watched, log: &Log) -> Option<ApiResource> {
    let mut wait = Duration::from_secs(1);
    loop {
        let mut retry = None;
        for v in w.versions {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(w.group, v, w.kind),
                w.plural,
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => return Some(ar),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => retry = Some(e),
            }
        }
        let Some(e) = retry else {
            let _ = log.send(format!(
                "polc webhook: the API server serves no {} ({}); taken as none",
                w.kind, w.group
            ));
            return None;
        };
        let _ = log.send(format!(
            "polc webhook: cannot list {}: {e}; trying again in {} s",
            w.kind,
            wait.as_secs()
        ));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Lists and watches one kind, and reports what it sees.
async fn watch_kind(
    client: kube::Client,
    i: usize,
    w: &'static Watched,
    tx: mpsc::Sender<Update>,
    log: Log,
) {
    let Some(ar) = resource(&client, w, &log).await else {
        let _ = tx.send(Update::Listed(i, BTreeMap::new())).await;
        return;
    };
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let types = TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    };
    let text = |mut o: DynamicObject| -> Option<((String, String), String)> {
        // List items may leave their type out; the API server's bookkeeping is not read.
        o.types = Some(types.clone());
        o.metadata.managed_fields = None;
        let key = (
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
        );
        Some((key, serde_json::to_string(&o).ok()?))
    };
    let mut listing: Option<BTreeMap<(String, String), String>> = None;
    let mut errors: u64 = 0;
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeMap::new());
                None
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let (Some(l), Some((k, t))) = (listing.as_mut(), text(o)) {
                    l.insert(k, t);
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                Some(Update::Listed(i, listing.take().unwrap_or_default()))
            }
            Ok(watcher::Event::Apply(o)) => text(o).map(|(k, t)| Update::Applied(i, k, t)),
            Ok(watcher::Event::Delete(o)) => text(o).map(|(k, _)| Update::Deleted(i, k)),
            Err(e) => {
                errors += 1;
                if errors.is_power_of_two() {
                    let _ = log.send(format!(
                        "polc webhook: watching {} failed ({errors} times so far): {e}",
                        w.kind
                    ));
                }
                None
            }
        };
        if let Some(u) = update
            && tx.send(u).await.is_err()
        {
            return;
        }
    }
}
