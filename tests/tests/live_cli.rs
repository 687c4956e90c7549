//! `--cluster`: policies and inventory read from a live API server, here the fake one of
//! `common::fake_api` (recorded objects, paged lists, a CRD missing, RBAC 403s, a server
//! that is not there).

mod common;

use common::fake_api::{self, Fake, pod};
use common::polc;
use serde_json::{Value, json};
use std::sync::Arc;

/// Pods in the cluster besides `client` and `api`: more than one page of a list.
const FILLER: usize = 700;

fn cnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": "app", "resourceVersion": "1",
                        "managedFields": [{"manager": "kubectl"}]},
           "spec": spec})
}

/// A cluster without Cilium's clusterwide policies and CIDR groups (their CRDs are not
/// served): a namespace, two nodes, `client` and `api` and the filler pods, and a policy
/// that lets `client` GET from `api` on 8080.
fn cluster() -> (Arc<Fake>, tempfile::TempDir, String) {
    let fake = Fake::serving(&[
        ("cilium.io", "v2", "ciliumnetworkpolicies"),
        ("networking.k8s.io", "v1", "networkpolicies"),
        ("", "v1", "namespaces"),
        ("", "v1", "nodes"),
        ("", "v1", "pods"),
        ("", "v1", "services"),
    ]);
    fake.add("namespaces", fake_api::namespace("app"));
    fake.add("nodes", fake_api::node("node-1", "10.0.0.11"));
    fake.add("nodes", fake_api::node("node-2", "10.0.0.12"));
    fake.add("pods", pod("client", "client", "node-1", "10.244.1.10"));
    fake.add("pods", pod("api", "api", "node-2", "10.244.2.10"));
    for i in 0..FILLER {
        let ip = format!("10.250.{}.{}", i / 250, i % 250 + 1);
        fake.add("pods", pod(&format!("filler-{i}"), "filler", "node-1", &ip));
    }
    fake.add(
        "ciliumnetworkpolicies",
        cnp(
            "api",
            json!({"endpointSelector": {"matchLabels": {"app": "api"}},
                   "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                             "rules": {"http": [{"method": "GET"}]}}]}]}),
        ),
    );
    let port = fake_api::start(fake.clone());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_api::kubeconfig(dir.path(), port)
        .to_string_lossy()
        .into_owned();
    (fake, dir, kubeconfig)
}

fn explain(kubeconfig: &str, from: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "explain",
        "--cluster",
        "--kubeconfig",
        kubeconfig,
        "--from",
        from,
        "--to",
        "app/api",
        "--proto",
        "tcp",
        "--port",
        "8080",
    ];
    args.extend_from_slice(extra);
    polc(&args, b"")
}

/// Every kind is listed page by page and judged as files would be; the CRDs the server does
/// not serve are read as none, with a note.
#[test]
fn explain_reads_a_live_cluster() {
    let (fake, _dir, kubeconfig) = cluster();
    let (code, out, err) = explain(&kubeconfig, "app/client", &["--http-method", "GET"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: ALLOW"), "{out}");
    assert!(
        out.contains("cluster: CiliumNetworkPolicy app/api"),
        "{out}"
    );
    let (code, out, err) = explain(&kubeconfig, "app/filler-699", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("verdict: DENY"),
        "the last pod of the second page: {out}"
    );
    assert!(
        err.contains("serves no CiliumClusterwideNetworkPolicy")
            && err.contains("serves no CiliumCIDRGroup")
            && err.contains("is Cilium installed?"),
        "{err}"
    );
    let asked = fake.requests.lock().unwrap().join("\n");
    assert!(
        asked.contains("/api/v1/pods?") && asked.contains("continue=500"),
        "the pods come in pages: {asked}"
    );
}

/// Diagnostics name the object in the cluster.
#[test]
fn lint_points_at_the_cluster_object() {
    let (fake, _dir, kubeconfig) = cluster();
    fake.add(
        "ciliumnetworkpolicies",
        cnp(
            "bad",
            json!({"endpointSelector": {},
                   "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCPP"}]}]}]}),
        ),
    );
    let (code, out, err) = polc(
        &[
            "lint",
            "--cluster",
            "--kubeconfig",
            &kubeconfig,
            "--color",
            "never",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("cluster: CiliumNetworkPolicy app/bad"),
        "{out}"
    );
    assert!(out.contains("TCPP"), "{out}");
}

/// What stops a read is said, with its code, and nothing is judged.
#[test]
fn rbac_and_unreachable_servers_are_clear_errors() {
    let (fake, dir, kubeconfig) = cluster();
    fake.forbidden.lock().unwrap().push("pods".into());
    let (code, out, err) = explain(&kubeconfig, "app/client", &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("P0113") && err.contains("forbids listing pods") && err.contains("list"),
        "{err}"
    );
    // A server that is not there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let kubeconfig = fake_api::kubeconfig(&gone, port);
    let (code, _, err) = explain(kubeconfig.to_str().unwrap(), "app/client", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the API server"), "{err}");
    // No kubeconfig at all.
    let (code, _, err) = explain("/nonexistent/kubeconfig", "app/client", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

/// `diff --cluster NEW`: what applying NEW would change, against the cluster's policies and
/// inventory; `test --cluster`: policy tests against the live cluster.
#[test]
fn diff_and_test_against_the_live_cluster() {
    let (_fake, dir, kubeconfig) = cluster();
    let new = dir.path().join("new.yaml");
    std::fs::write(
        &new,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: api, namespace: \
         app}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - \
         fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"8080\", \
         protocol: TCP}]}]\n  - fromEndpoints: [{matchLabels: {app: filler}}]\n    toPorts: \
         [{ports: [{port: \"9090\", protocol: TCP}]}]\n",
    )
    .unwrap();
    let (code, out, err) = polc(
        &[
            "diff",
            "--cluster",
            "--kubeconfig",
            &kubeconfig,
            new.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("app/filler") && out.contains("9090"),
        "the new flows: {out}"
    );
    let polt = dir.path().join("live.polt");
    std::fs::write(
        &polt,
        "expect allow app/{app=client} -> app/{app=api} tcp/8080 http GET \"/\"\n\
         expect deny  app/{app=client} -> app/{app=api} tcp/8080 http POST \"/\"\n\
         expect deny  app/{app=filler} -> app/{app=api} tcp/8080\n",
    )
    .unwrap();
    let (code, out, err) = polc(
        &[
            "test",
            "--cluster",
            "--kubeconfig",
            &kubeconfig,
            polt.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 passed") || out.matches("ok").count() >= 3,
        "{out}"
    );
}

/// Takes updates into `mirror` until `ok` holds (at most 20 s).
async fn until(
    what: &str,
    mirror: &mut polc_cli::live::Mirror,
    rx: &mut tokio::sync::mpsc::Receiver<polc_cli::live::Update>,
    ok: impl Fn(&polc_cli::live::Mirror) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ok(mirror) {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        if let Ok(Some(u)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await
        {
            mirror.apply(u);
        }
    }
}

/// `live::watch` keeps every kind in step: the initial lists, then added, changed and deleted
/// objects; after a dropped watch whose resource version is gone (`410`), a new list brings
/// what changed meanwhile.
#[test]
fn watch_follows_every_kind_through_drops_and_410s() {
    use polc_cli::live::{self, Kind, Mirror, Update};
    let (fake, _dir, kubeconfig) = cluster();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Update>(64);
    let (log, _lines) = std::sync::mpsc::channel();
    let args = live::LiveArgs {
        cluster: true,
        kubeconfig: Some(kubeconfig.into()),
        context: None,
    };
    let kinds: Vec<&'static Kind> = live::KINDS.iter().collect();
    let index = |plural: &str| kinds.iter().position(|k| k.plural == plural).unwrap();
    let pods = index("pods");
    let mut mirror = Mirror::new(kinds.len());
    runtime.block_on(async {
        let client = live::client(&args).await.unwrap();
        tokio::spawn(live::watch(client, kinds.clone(), tx, log));
        // Until every kind is listed.
        until("step 1", &mut mirror, &mut rx, |m| m.complete()).await;
        assert_eq!(mirror.objects(pods).count(), FILLER + 2);
        assert_eq!(
            mirror
                .objects(index("ciliumclusterwidenetworkpolicies"))
                .count(),
            0
        );
        // Watch events.
        let newcomer = pod("newcomer", "client", "node-1", "10.244.1.99");
        while !fake.watching("pods") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        fake.event("pods", "ADDED", &newcomer);
        let has =
            |name: &'static str| move |m: &Mirror| m.objects(pods).any(|((_, n), _)| n == name);
        until("step 2", &mut mirror, &mut rx, has("newcomer")).await;
        let mut moved = newcomer.clone();
        moved["metadata"]["labels"]["app"] = json!("api");
        fake.event("pods", "MODIFIED", &moved);
        until("step 3", &mut mirror, &mut rx, |m: &Mirror| {
            m.objects(pods)
                .any(|((_, n), t)| n == "newcomer" && t.contains("\"app\":\"api\""))
        })
        .await;
        fake.event("pods", "DELETED", &moved);
        until("step 4", &mut mirror, &mut rx, |m: &Mirror| {
            !has("newcomer")(m)
        })
        .await;
        // The connection drops, the version is gone, and a pod came meanwhile: a new list.
        *fake.gone.lock().unwrap() = true;
        fake.add("pods", pod("latecomer", "client", "node-1", "10.244.1.98"));
        fake.close_watches();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        *fake.gone.lock().unwrap() = false;
        until("step 5", &mut mirror, &mut rx, has("latecomer")).await;
    });
    assert_eq!(mirror.objects(pods).count(), FILLER + 3);
}
