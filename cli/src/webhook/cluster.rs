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
use crate::live::{self, Kind, Mirror, Update};
use polc_compiler::version::CiliumVersion;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps `policies` equal to the cluster's policy objects, until the server stops.
pub async fn watch(
    client: kube::Client,
    policies: Arc<Policies>,
    version: CiliumVersion,
    log: Log,
) {
    let kinds: Vec<&'static Kind> = live::KINDS.iter().filter(|k| k.policy).collect();
    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    let (watch_log, lines) = std::sync::mpsc::channel::<String>();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in lines {
                let _ = log.send(format!("polc webhook: {line}"));
            }
        });
    }
    tokio::spawn(live::watch(client, kinds.clone(), tx, watch_log));
    let mut mirror = Mirror::new(kinds.len());
    while let Some(first) = rx.recv().await {
        // Changes that come together are taken together.
        mirror.apply(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(more) = rx.try_recv() {
            mirror.apply(more);
        }
        // Not before every kind is listed: a partial set would make wrong findings.
        if !mirror.complete() {
            continue;
        }
        let sources = mirror.sources(&kinds, "");
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
