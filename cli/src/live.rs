//! `--cluster`: the policies and the inventory read from a live API server instead of files
//! (or besides them). Every kind polc reads is listed page by page (`limit` and `continue`):
//! CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and CiliumCIDRGroup through the
//! dynamic API, NetworkPolicy, Namespaces, Pods, Nodes and Services. Each policy object
//! becomes a source file of its own (diagnostics name it: `cluster: CiliumNetworkPolicy
//! shop/api`); the inventory objects of a kind become one `List` (`cluster: pods`).
//!
//! What stops a read is said plainly, naming what to fix: the API server unreachable, the
//! kubeconfig or context missing, a kind the account may not list (RBAC). A Cilium kind the
//! server does not serve (its CRD is not installed) is read as none, and said.
//!
//! [`watch`] keeps kinds in step with the cluster instead (the webhook's `--cluster`, and the
//! agent): each is listed, then watched with kube's watcher, which lists again after a watch
//! breaks or its resource version is gone (`410`), with backoff.

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use polc_compiler::source::{SourceFile, SourceMap};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// The flags that choose a live cluster.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LiveArgs {
    /// Read the policies and the inventory from the cluster (the kubeconfig's current
    /// context, `--context`, or the in-cluster service account), besides any files given.
    #[arg(long)]
    pub cluster: bool,
    /// The kubeconfig to use (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub context: Option<String>,
}

/// A kind polc reads: its group (empty for the core group), the versions tried (newest
/// first), kind and plural, and whether it is a policy (one file per object).
pub struct Kind {
    /// API group.
    pub group: &'static str,
    /// Versions, newest first.
    pub versions: &'static [&'static str],
    /// Kind.
    pub kind: &'static str,
    /// Plural (the resource).
    pub plural: &'static str,
    /// A policy kind (else inventory).
    pub policy: bool,
    /// Whether the kind may be missing (a CRD).
    pub optional: bool,
}

/// Every kind `--cluster` reads.
pub const KINDS: [Kind; 8] = [
    Kind {
        group: "cilium.io",
        versions: &["v2"],
        kind: "CiliumNetworkPolicy",
        plural: "ciliumnetworkpolicies",
        policy: true,
        optional: true,
    },
    Kind {
        group: "cilium.io",
        versions: &["v2"],
        kind: "CiliumClusterwideNetworkPolicy",
        plural: "ciliumclusterwidenetworkpolicies",
        policy: true,
        optional: true,
    },
    Kind {
        group: "cilium.io",
        versions: &["v2", "v2alpha1"],
        kind: "CiliumCIDRGroup",
        plural: "ciliumcidrgroups",
        policy: true,
        optional: true,
    },
    Kind {
        group: "networking.k8s.io",
        versions: &["v1"],
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        policy: true,
        optional: false,
    },
    Kind {
        group: "",
        versions: &["v1"],
        kind: "Namespace",
        plural: "namespaces",
        policy: false,
        optional: false,
    },
    Kind {
        group: "",
        versions: &["v1"],
        kind: "Node",
        plural: "nodes",
        policy: false,
        optional: false,
    },
    Kind {
        group: "",
        versions: &["v1"],
        kind: "Pod",
        plural: "pods",
        policy: false,
        optional: false,
    },
    Kind {
        group: "",
        versions: &["v1"],
        kind: "Service",
        plural: "services",
        policy: false,
        optional: false,
    },
];

/// Objects per list request.
const PAGE: u32 = 500;

/// The API client of `live`: its kubeconfig and context, or (with neither) the usual
/// inference: `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
pub async fn client(live: &LiveArgs) -> Result<kube::Client, String> {
    let options = kube::config::KubeConfigOptions {
        context: live.context.clone(),
        ..Default::default()
    };
    let config = match (&live.kubeconfig, &live.context) {
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("the kubeconfig {}: {e}", path.display()))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("the kubeconfig: {e}"))?,
        (None, None) => kube::Config::infer().await.map_err(|e| {
            format!(
                "no cluster to read: {e}; give --kubeconfig, set KUBECONFIG, or run in a pod \
                 with a service account"
            )
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot make an API client: {e}"))
}

/// What reading the cluster gave: source files, and notes for people (kinds not served).
#[derive(Default)]
pub struct Read {
    /// One per policy object.
    pub policies: Vec<SourceFile>,
    /// One `List` per inventory kind.
    pub inventory: Vec<SourceFile>,
    /// Things to tell (a CRD not installed).
    pub notes: Vec<String>,
}

impl Read {
    /// Writes the files into `policies` and `inventory` (directories, created), one file
    /// each, named after the object or the kind, for the commands that take paths.
    pub fn write(
        &self,
        policies: &std::path::Path,
        inventory: &std::path::Path,
    ) -> std::io::Result<()> {
        for (dir, files) in [(policies, &self.policies), (inventory, &self.inventory)] {
            std::fs::create_dir_all(dir)?;
            for (i, f) in files.iter().enumerate() {
                let name: String = f
                    .name
                    .trim_start_matches("cluster: ")
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                std::fs::write(dir.join(format!("{i:05}-{name}.json")), &f.text)?;
            }
        }
        Ok(())
    }
}

/// Reads every kind of [`KINDS`] from the cluster (blocking: runs its own runtime).
pub fn read(live: &LiveArgs) -> Result<Read, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let client = client(live).await?;
        read_with(&client).await
    })
}

/// Reads every kind of [`KINDS`] through `client`.
pub async fn read_with(client: &kube::Client) -> Result<Read, String> {
    let mut out = Read::default();
    for k in &KINDS {
        match list_kind(client, k).await? {
            None => out.notes.push(format!(
                "the API server serves no {} ({}): read as none{}",
                k.kind,
                k.group,
                if k.group == "cilium.io" {
                    "; is Cilium installed?"
                } else {
                    ""
                }
            )),
            Some((api_version, items)) if k.policy => {
                for mut o in items {
                    o["apiVersion"] = serde_json::json!(api_version);
                    o["kind"] = serde_json::json!(k.kind);
                    let ns = o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let shown = format!("cluster: {}", object_name(k.kind, &ns, &name));
                    out.policies.push(SourceFile::new(shown, pretty(&o)));
                }
            }
            Some((api_version, items)) => {
                let items: Vec<serde_json::Value> = items
                    .into_iter()
                    .map(|mut o| {
                        o["apiVersion"] = serde_json::json!(api_version);
                        o["kind"] = serde_json::json!(k.kind);
                        o
                    })
                    .collect();
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                out.inventory.push(SourceFile::new(
                    format!("cluster: {}", k.plural),
                    pretty(&list),
                ));
            }
        }
    }
    Ok(out)
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Every object of kind `k`, page by page, at the first version the server serves, without
/// the server's bookkeeping (`managedFields`); `None` when the server serves no version of an
/// optional kind.
async fn list_kind(
    client: &kube::Client,
    k: &Kind,
) -> Result<Option<(String, Vec<serde_json::Value>)>, String> {
    'versions: for v in k.versions {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(k.group, v, k.kind), k.plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = match api.list(&params).await {
                Ok(p) => p,
                Err(kube::Error::Api(e)) if e.code == 404 && k.optional => continue 'versions,
                Err(e) => return Err(explain_error(k, &e)),
            };
            for mut o in page.items {
                o.metadata.managed_fields = None;
                items.push(serde_json::to_value(&o).map_err(|e| e.to_string())?);
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        return Ok(Some((ar.api_version, items)));
    }
    if k.optional {
        Ok(None)
    } else {
        Err(format!(
            "the API server serves no {} ({})",
            k.kind, k.plural
        ))
    }
}

/// What went wrong listing `k`, and what to do about it.
fn explain_error(k: &Kind, e: &kube::Error) -> String {
    let resource = if k.group.is_empty() {
        k.plural.to_string()
    } else {
        format!("{}.{}", k.plural, k.group)
    };
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "the API server forbids listing {resource}: {}; grant the account `list` and \
             `watch` on `{resource}` in every namespace (a ClusterRole, as in \
             deploy/agent/rbac.yaml)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => format!(
            "the API server does not accept the credentials: {}; check the kubeconfig's user \
             or the service account token",
            s.message
        ),
        kube::Error::Api(s) if s.code == 410 => format!(
            "the list of {resource} expired while it was read page by page ({}); run again",
            s.message
        ),
        kube::Error::Api(s) => format!("listing {resource} failed: {} ({})", s.message, s.code),
        other => format!("cannot reach the API server to list {resource}: {other}"),
    }
}

/// A change [`watch`] reports, for the kind at an index of the kinds it watches. Objects are
/// JSON texts (with their `apiVersion` and `kind`, without `managedFields`) by (namespace,
/// name).
#[derive(Debug)]
pub enum Update {
    /// The kind is listed (again): these are all its objects.
    Listed(usize, BTreeMap<(String, String), String>),
    /// An object was added or changed.
    Applied(usize, (String, String), String),
    /// An object was deleted.
    Deleted(usize, (String, String)),
}

/// The objects of watched kinds, kept from [`Update`]s; complete once every kind has been
/// listed.
pub struct Mirror {
    objects: Vec<Option<BTreeMap<(String, String), String>>>,
    /// Objects added, changed or deleted since [`Mirror::changes`] was last called, when
    /// tracked.
    dirty: Option<std::collections::BTreeSet<(usize, (String, String))>>,
}

/// An object that changed: its kind (index), key, and text (`None`: deleted).
pub type Change = (usize, (String, String), Option<String>);

impl Mirror {
    /// A mirror of `kinds` kinds, none listed yet.
    pub fn new(kinds: usize) -> Mirror {
        Mirror {
            objects: vec![None; kinds],
            dirty: None,
        }
    }

    /// A mirror that also tracks what changed (see [`Mirror::changes`]).
    pub fn tracked(kinds: usize) -> Mirror {
        Mirror {
            dirty: Some(std::collections::BTreeSet::new()),
            ..Mirror::new(kinds)
        }
    }

    fn touch(&mut self, i: usize, key: (String, String)) {
        if let Some(d) = self.dirty.as_mut() {
            d.insert((i, key));
        }
    }

    /// Takes one update.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Listed(i, all) => {
                // Everything listed before or now may have changed.
                let before = self.objects[i].take().unwrap_or_default();
                if self.dirty.is_some() {
                    for k in before.into_keys().chain(all.keys().cloned()) {
                        self.touch(i, k);
                    }
                }
                self.objects[i] = Some(all);
            }
            Update::Applied(i, key, text) => {
                self.touch(i, key.clone());
                self.objects[i]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, text);
            }
            Update::Deleted(i, key) => {
                if let Some(o) = self.objects[i].as_mut() {
                    o.remove(&key);
                }
                self.touch(i, key);
            }
        }
    }

    /// The objects added, changed (or listed again) and deleted since the last call, with
    /// their texts now (none unless [`Mirror::tracked`]). The texts are handed over: a
    /// tracked mirror keeps only the keys of what it handed over (its [`Mirror::objects`]
    /// and [`Mirror::sources`] are then empty texts).
    pub fn changes(&mut self) -> Vec<Change> {
        let dirty = self.dirty.as_mut().map(std::mem::take).unwrap_or_default();
        dirty
            .into_iter()
            .map(|(i, key)| {
                // Handed over: the mirror keeps the key (every change brings its text again).
                let text = (self.objects[i].as_mut())
                    .and_then(|o| o.get_mut(&key))
                    .map(std::mem::take);
                (i, key, text)
            })
            .collect()
    }

    /// Whether every kind has been listed (before that, the view is partial).
    pub fn complete(&self) -> bool {
        self.objects.iter().all(Option::is_some)
    }

    /// The objects of kind `i`.
    pub fn objects(&self, i: usize) -> impl Iterator<Item = (&(String, String), &String)> {
        self.objects[i].iter().flatten()
    }

    /// Every object as a source file of its own, named `PREFIX` and [`object_name`]
    /// (`kinds` are the kinds the mirror was made for, in its order).
    pub fn sources(&self, kinds: &[&Kind], prefix: &str) -> SourceMap {
        let mut sources = SourceMap::new();
        for (i, k) in kinds.iter().enumerate() {
            for ((ns, name), text) in self.objects(i) {
                let shown = format!("{prefix}{}", object_name(k.kind, ns, name));
                sources.add(SourceFile::new(shown, text.clone()));
            }
        }
        sources
    }
}

/// How an object is named to people: `Kind namespace/name`, or `Kind name` when it has no
/// namespace.
pub fn object_name(kind: &str, ns: &str, name: &str) -> String {
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Lists and watches each of `kinds`, and sends what changes to `tx`, until `tx` is closed.
/// A kind the server does not serve is reported listed with no objects (and said to `log`);
/// failures are retried with backoff and said to `log` (the 1st, 2nd, 4th, ... time).
pub async fn watch(
    client: kube::Client,
    kinds: Vec<&'static Kind>,
    tx: mpsc::Sender<Update>,
    log: std::sync::mpsc::Sender<String>,
) {
    let mut tasks = Vec::new();
    for (i, k) in kinds.into_iter().enumerate() {
        let (client, tx, log) = (client.clone(), tx.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            watch_kind(client, i, k, tx, log).await
        }));
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
}

/// The kind `k` at the first of its versions the API server serves, or `None` when it serves
/// none; other errors (the server unreachable, forbidden) are retried.
async fn resource(
    client: &kube::Client,
    k: &Kind,
    log: &std::sync::mpsc::Sender<String>,
) -> Option<ApiResource> {
    let mut wait = Duration::from_secs(1);
    loop {
        let mut retry = None;
        for v in k.versions {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(k.group, v, k.kind),
                k.plural,
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => return Some(ar),
                Err(kube::Error::Api(e)) if e.code == 404 && k.optional => {}
                Err(e) => retry = Some(explain_error(k, &e)),
            }
        }
        let Some(e) = retry else {
            let _ = log.send(format!(
                "the API server serves no {} ({}); taken as none",
                k.kind, k.group
            ));
            return None;
        };
        let _ = log.send(format!("{e}; trying again in {} s", wait.as_secs()));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Lists and watches one kind, and reports what it sees.
async fn watch_kind(
    client: kube::Client,
    i: usize,
    k: &'static Kind,
    tx: mpsc::Sender<Update>,
    log: std::sync::mpsc::Sender<String>,
) {
    let Some(ar) = resource(&client, k, &log).await else {
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
    let config = watcher::Config::default().page_size(PAGE);
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeMap::new());
                None
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let (Some(l), Some((key, t))) = (listing.as_mut(), text(o)) {
                    l.insert(key, t);
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                Some(Update::Listed(i, listing.take().unwrap_or_default()))
            }
            Ok(watcher::Event::Apply(o)) => text(o).map(|(key, t)| Update::Applied(i, key, t)),
            Ok(watcher::Event::Delete(o)) => text(o).map(|(key, _)| Update::Deleted(i, key)),
            Err(e) => {
                errors += 1;
                if errors.is_power_of_two() {
                    let _ = log.send(format!(
                        "watching {} failed ({errors} times so far): {e}",
                        k.kind
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
