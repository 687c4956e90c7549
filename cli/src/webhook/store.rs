//! The policy set the webhook judges objects against: the policies and CIDR groups of a
//! directory (`--policies DIR`), read again whenever a file in it changes. Each load makes a
//! new [`Snapshot`]; reviews take the snapshot current when they start, so a reload never
//! changes the answer to a review under way.
//!
//! Directories are walked as `polc lint` walks them, following symbolic links, so a
//! ConfigMap mounted as a volume (whose files are links into a `..data` directory that the
//! kubelet swaps on update) is read, and seen to change.

use super::server::Log;
use crate::input;
use polc_compiler::diag::Severity;
use polc_compiler::ir::PolicySet;
use polc_compiler::raw::{Kind, Object};
use polc_compiler::source::SourceMap;
use polc_compiler::version::CiliumVersion;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Where the policy set comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The files of a directory, read again when they change.
    Dir(PathBuf),
    /// The API server, through watches (kubeconfig, context, or the usual inference).
    Cluster(crate::live::LiveArgs),
}

/// One object of the set, by kind, namespace (`""` for clusterwide kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The kind.
    pub kind: Kind,
    /// The namespace, `""` for clusterwide kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Key {
    /// The key of a stored object.
    pub fn of(o: &Object) -> Key {
        Key {
            kind: o.kind,
            namespace: o.namespace().to_string(),
            name: o.name().to_string(),
        }
    }

    /// Whether `self` names the object of kind `kind`, in `namespace`, called `name`.
    fn is(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.kind == kind && self.namespace == namespace && self.name == name
    }

    /// Whether the rules of another object (of `kind`, in `namespace`) matter to a review of
    /// `self`: they may select the same pods (a namespaced policy's rules select pods of its
    /// namespace only), or they are the cluster DNS's (`kube-system`), which every lookup
    /// meets.
    fn may_meet(&self, kind: Kind, namespace: &str) -> bool {
        !self.kind.is_namespaced()
            || !kind.is_namespaced()
            || self.namespace == namespace
            || namespace == "kube-system"
    }
}

/// The policy set at one moment.
pub struct Snapshot {
    /// Every object read (policies and CIDR groups), in file order.
    pub objects: Vec<Object>,
    /// The objects lowered.
    pub set: PolicySet,
    /// What the verifier's index reads of the set's rules, worked out once for every review.
    pub facts: polc_verifier::shadow::Facts,
    /// The objects (by index) that name or select a CIDR group: the only ones a change to
    /// a group can touch.
    pub group_users: Vec<usize>,
    /// Objects with errors (the agent rejects them; lowered as far as they go).
    pub invalid: usize,
    /// Which load this is (1 for the first [`Policies::set`]; 0 when never put in use):
    /// answers remembered for one snapshot are not reused for another.
    pub generation: u64,
}

/// What a review sees of the set: the object under review (or, for a DELETE, the object
/// removed) with the set's rules it may meet, its own first.
pub struct View {
    /// Its rules first (`own` of them), then the set's rules they may meet.
    pub set: PolicySet,
    /// How many rules are the object's.
    pub own: usize,
}

impl Snapshot {
    /// Reads every policy file under `dir`. A directory without any is an empty set (a
    /// cluster without policies yet).
    pub fn read(dir: &Path, version: CiliumVersion) -> Result<Snapshot, String> {
        if dir.is_dir()
            && signature(dir)
                .iter()
                .all(|(p, _, _)| !input::is_policy_file(p))
        {
            return Ok(Snapshot {
                objects: Vec::new(),
                set: PolicySet::default(),
                facts: polc_verifier::shadow::Facts::new(&PolicySet::default()),
                group_users: Vec::new(),
                invalid: 0,
                generation: 0,
            });
        }
        let inputs = input::gather(
            &[dir.to_path_buf()],
            &mut std::io::empty(),
            input::DEFAULT_MAX_FILE_SIZE,
        );
        if inputs.unreadable {
            let why = inputs
                .diagnostics
                .first()
                .map_or("it cannot be read".to_string(), |d| d.message.clone());
            return Err(format!("{}: {why}", dir.display()));
        }
        Ok(Snapshot::from_sources(&inputs.sources, version))
    }

    /// Lints and lowers the objects of `sources`: those with errors are counted (the agent
    /// rejects them) and lowered as far as they go.
    pub fn from_sources(sources: &SourceMap, version: CiliumVersion) -> Snapshot {
        let opts = polc_compiler::Options {
            version,
            ..polc_compiler::Options::default()
        };
        let (objects, diags) = polc_compiler::lint(sources, &opts);
        let bad: Vec<polc_compiler::source::Loc> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.loc)
            .collect();
        let within = |o: &Object, l: &polc_compiler::source::Loc| {
            l.file == o.loc.file && o.loc.start <= l.start && l.end <= o.loc.end
        };
        let invalid = objects
            .iter()
            .filter(|o| bad.iter().any(|l| within(o, l)))
            .count();
        let objects: Vec<Object> = objects.into_iter().filter(|o| o.kind.is_policy()).collect();
        let (set, _) = polc_compiler::lower::lower(&objects, version);
        let group_users = (objects.iter().enumerate())
            .filter(|(_, o)| polc_compiler::lower::may_use_cidr_groups(o))
            .map(|(i, _)| i)
            .collect();
        Snapshot {
            objects,
            group_users,
            facts: polc_verifier::shadow::Facts::new(&set),
            set,
            invalid,
            generation: 0,
        }
    }

    /// The view of the set for the object `key` whose own rules are `own`: the set's rules
    /// it may meet, without the set's version of the object itself.
    pub fn view(&self, key: &Key, own: PolicySet) -> View {
        let mut rules = own.rules;
        let n = rules.len();
        rules.extend(
            self.set
                .rules
                .iter()
                .filter(|r| {
                    let o = &r.origin;
                    !key.is(o.kind, &o.namespace, &o.name) && key.may_meet(o.kind, &o.namespace)
                })
                .cloned(),
        );
        View {
            // The checks read the rules; CIDR groups are already resolved in them.
            set: PolicySet {
                rules,
                cidr_groups: Vec::new(),
            },
            own: n,
        }
    }
}

/// The current snapshot, shared by the reviews and the thread that reloads it.
#[derive(Default)]
pub struct Policies {
    current: RwLock<Option<Arc<Snapshot>>>,
    loads: std::sync::atomic::AtomicU64,
}

impl Policies {
    /// The snapshot in use, once one is loaded.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many snapshots were loaded.
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Puts `s` in use.
    pub fn set(&self, mut s: Snapshot) {
        s.generation = self.loads() + 1;
        let s = Arc::new(s);
        match self.current.write() {
            Ok(mut c) => *c = Some(s),
            Err(poisoned) => *poisoned.into_inner() = Some(s),
        }
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the files under a directory look like: each file's path, size and modification time.
/// A change to any of them (or a file added or removed) changes it.
fn signature(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().ok();
            (
                e.path().to_path_buf(),
                m.as_ref().map_or(0, std::fs::Metadata::len),
                m.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

/// Loads `dir` into `policies`, and again whenever its files change (looked at every
/// `every`); a load that fails keeps the previous snapshot and is logged.
pub async fn watch_dir(
    policies: Arc<Policies>,
    dir: PathBuf,
    version: CiliumVersion,
    every: Duration,
    log: Log,
) {
    let mut seen = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let d = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || signature(&d)).await else {
            continue;
        };
        if seen.as_ref() == Some(&now) {
            continue;
        }
        let d = dir.clone();
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || Snapshot::read(&d, version)).await;
        match read {
            Ok(Ok(snapshot)) => {
                let invalid = match snapshot.invalid {
                    0 => String::new(),
                    n => format!(
                        "; {n} with errors the agent rejects (`polc lint {}` shows them)",
                        dir.display()
                    ),
                };
                let _ = log.send(format!(
                    "polc webhook: policy set loaded from {}: {} objects, {} rules, in {} \
                     ms{invalid}",
                    dir.display(),
                    snapshot.objects.len(),
                    snapshot.set.rules.len(),
                    started.elapsed().as_millis()
                ));
                policies.set(snapshot);
                seen = Some(now);
            }
            Ok(Err(e)) => {
                let _ = log.send(format!(
                    "polc webhook: the policy set cannot be read, keeping the one in use: {e}"
                ));
                seen = Some(now);
            }
            Err(_) => {
                let _ = log.send("polc webhook: reading the policy set failed".to_string());
            }
        }
    }
}
