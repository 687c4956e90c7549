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

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use polc_compiler::source::SourceFile;
use std::path::PathBuf;

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
                    let shown = if ns.is_empty() {
                        format!("cluster: {} {name}", k.kind)
                    } else {
                        format!("cluster: {} {ns}/{name}", k.kind)
                    };
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
