//! Cilium labels: `source:key=value` labels, label sets, and the identity-relevant label
//! filter (`pkg/labels`, `pkg/labelsfilter`).
//!
//! A label set keys labels by key (as Cilium's `Labels` map does): one key has one source.
//! Selectors name keys with an optional source; a key without source means `any`, which
//! matches the key from every source ([`LabelSet::lookup`]).

use crate::version::CiliumVersion;
use std::collections::BTreeMap;
use std::fmt;

/// Label source of Kubernetes-derived labels.
pub const SOURCE_K8S: &str = "k8s";
/// Label source of reserved labels (`reserved:host`, ...).
pub const SOURCE_RESERVED: &str = "reserved";
/// Selector-only source that matches every source.
pub const SOURCE_ANY: &str = "any";

/// The namespace of a pod.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Prefix of a pod's namespace labels.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// A pod's service account.
pub const SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
/// The cluster a pod belongs to.
pub const CLUSTER: &str = "io.cilium.k8s.policy.cluster";

/// One label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The source (`k8s`, `reserved`, `cidr`, ...).
    pub source: String,
    /// The key.
    pub key: String,
    /// The value (empty for reserved labels).
    pub value: String,
}

impl Label {
    /// A label of any source.
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Label {
            source: source.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// A Kubernetes-derived label.
    pub fn k8s(key: &str, value: &str) -> Self {
        Label::new(SOURCE_K8S, key, value)
    }

    /// A reserved label (`reserved:host`).
    pub fn reserved(name: &str) -> Self {
        Label::new(SOURCE_RESERVED, name, "")
    }
}

impl fmt::Display for Label {
    /// `source:key=value`, or `source:key` for an empty value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

/// Splits a selector key into its source and key: `k8s:app` → (`k8s`, `app`), `$host` →
/// (`reserved`, `host`), `app` → (`any`, `app`).
pub fn split_selector_key(raw: &str) -> (&str, &str) {
    if let Some(rest) = raw.strip_prefix('$') {
        return (SOURCE_RESERVED, rest);
    }
    match raw.split_once(':') {
        Some((source, key)) if !source.is_empty() => (source, key),
        _ => (SOURCE_ANY, raw),
    }
}

/// A set of labels, keyed by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet {
    labels: BTreeMap<String, Label>,
}

impl LabelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a label, replacing one with the same key.
    pub fn insert(&mut self, label: Label) {
        self.labels.insert(label.key.clone(), label);
    }

    /// The labels, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.labels.values()
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The value of the label a selector key names, if the set has it from a matching source:
    /// `app` (source `any`) finds `k8s:app`; `k8s:app` does not find `container:app`.
    pub fn lookup(&self, selector_key: &str) -> Option<&str> {
        let (source, key) = split_selector_key(selector_key);
        let label = self.labels.get(key)?;
        (source == SOURCE_ANY || source == label.source).then_some(label.value.as_str())
    }

    /// The allocation key Cilium derives identities from: labels sorted by key, each as
    /// `source:key=value;` (`pkg/identity/key`).
    pub fn allocation_key(&self) -> String {
        self.iter()
            .map(|l| format!("{}:{}={};", l.source, l.key, l.value))
            .collect()
    }
}

impl FromIterator<Label> for LabelSet {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        let mut s = LabelSet::new();
        for l in iter {
            s.insert(l);
        }
        s
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

/// One pattern of the label filter: an optional source and a regex anchored at the start of
/// the key. Only `.` (any character) and `.*` occur in Cilium's default patterns, and
/// [`Pattern::matches`] implements exactly those.
#[derive(Clone, Debug)]
struct Pattern {
    source: Option<&'static str>,
    expr: &'static str,
    /// The length Cilium compares between includes and excludes (the pattern as written).
    len: usize,
}

impl Pattern {
    fn new(written: &'static str) -> Self {
        let (source, expr) = match written.split_once(':') {
            Some((s, e)) => (Some(s), e),
            None => (None, written),
        };
        Pattern {
            source,
            expr,
            len: written.len(),
        }
    }

    fn matches(&self, label: &Label) -> bool {
        if self.source.is_some_and(|s| s != label.source) {
            return false;
        }
        prefix_match(self.expr.as_bytes(), label.key.as_bytes())
    }
}

/// Whether `re` (with `.` and `.*` as its only operators) matches a prefix of `s`.
fn prefix_match(re: &[u8], s: &[u8]) -> bool {
    match re {
        [] => true,
        [b'.', b'*', rest @ ..] => (0..=s.len()).any(|i| prefix_match(rest, &s[i..])),
        [b'.', rest @ ..] => !s.is_empty() && prefix_match(rest, &s[1..]),
        [c, rest @ ..] => s.first() == Some(c) && prefix_match(rest, &s[1..]),
    }
}

/// The identity-relevant label filter with Cilium's default patterns.
#[derive(Clone, Debug)]
pub struct LabelFilter {
    includes: Vec<Pattern>,
    excludes: Vec<Pattern>,
}

impl LabelFilter {
    /// Cilium's default filter for a target version (1.18 added excludes for per-pod
    /// StatefulSet, indexed-Job and Job-controller labels).
    pub fn default_for(version: CiliumVersion) -> Self {
        let includes = [
            "reserved:.*",
            POD_NAMESPACE,
            "io.cilium.k8s.namespace.labels",
            "app.kubernetes.io",
        ];
        let mut excludes = vec![
            "io.kubernetes",
            "kubernetes.io",
            ".*beta.kubernetes.io",
            "k8s.io",
            "pod-template-generation",
            "pod-template-hash",
            "controller-revision-hash",
            "annotation.*",
            "etcd_node",
        ];
        if version >= CiliumVersion::V1_18 {
            excludes.extend([
                "statefulset.kubernetes.io/pod-name",
                "apps.kubernetes.io/pod-index",
                "batch.kubernetes.io/job-completion-index",
                "batch.kubernetes.io/controller-uid",
                "controller-uid",
            ]);
        }
        LabelFilter {
            includes: includes.into_iter().map(Pattern::new).collect(),
            excludes: excludes.into_iter().map(Pattern::new).collect(),
        }
    }

    /// Whether a label is identity-relevant: no exclude matches it, or its longest matching
    /// include is longer than its shortest matching exclude (`labelsfilter.filterLabels`
    /// without user-supplied includes).
    pub fn keeps(&self, label: &Label) -> bool {
        let excluded = self
            .excludes
            .iter()
            .filter(|p| p.matches(label))
            .map(|p| p.len)
            .min();
        let included = self
            .includes
            .iter()
            .filter(|p| p.matches(label))
            .map(|p| p.len)
            .max()
            .unwrap_or(0);
        match excluded {
            None => true,
            Some(e) => included > e,
        }
    }

    /// The identity-relevant subset of `labels`.
    pub fn filter(&self, labels: &LabelSet) -> LabelSet {
        labels.iter().filter(|l| self.keeps(l)).cloned().collect()
    }
}

/// What Cilium knows about a pod when it derives the pod's security labels.
#[derive(Clone, Debug, Default)]
pub struct PodFacts<'a> {
    /// The pod's labels.
    pub labels: Vec<(&'a str, &'a str)>,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The namespace's labels.
    pub namespace_labels: Vec<(&'a str, &'a str)>,
    /// The pod's service account (`default` when unset).
    pub service_account: &'a str,
    /// The cluster name (`default` unless the agent is configured otherwise).
    pub cluster: &'a str,
}

/// A pod's identity labels as the agent derives them (spec §1.3): its labels, its namespace,
/// its namespace's labels, its service account and its cluster, all `k8s:`, then filtered.
pub fn pod_security_labels(pod: &PodFacts<'_>, filter: &LabelFilter) -> LabelSet {
    let mut all = LabelSet::new();
    for (k, v) in &pod.labels {
        all.insert(Label::k8s(k, v));
    }
    for (k, v) in &pod.namespace_labels {
        all.insert(Label::k8s(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    }
    all.insert(Label::k8s(POD_NAMESPACE, pod.namespace));
    if !pod.service_account.is_empty() {
        all.insert(Label::k8s(SERVICE_ACCOUNT, pod.service_account));
    }
    all.insert(Label::k8s(CLUSTER, pod.cluster));
    filter.filter(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_keys_and_sources() {
        assert_eq!(split_selector_key("app"), ("any", "app"));
        assert_eq!(split_selector_key("k8s:app"), ("k8s", "app"));
        assert_eq!(split_selector_key("$host"), ("reserved", "host"));
        let set: LabelSet = [
            Label::k8s("app", "web"),
            Label::new("container", "tier", "a"),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.lookup("app"), Some("web"));
        assert_eq!(set.lookup("k8s:app"), Some("web"));
        assert_eq!(set.lookup("any:tier"), Some("a"));
        assert_eq!(set.lookup("k8s:tier"), None);
        assert_eq!(set.to_string(), "k8s:app=web,container:tier=a");
        assert_eq!(Label::reserved("host").to_string(), "reserved:host");
        assert_eq!(set.allocation_key(), "k8s:app=web;container:tier=a;");
    }

    #[test]
    fn default_filter_keeps_what_the_agent_keeps() {
        let f = LabelFilter::default_for(CiliumVersion::V1_19);
        let keep = |k: &str| f.keeps(&Label::k8s(k, "x"));
        assert!(keep("app"));
        assert!(keep(POD_NAMESPACE));
        assert!(keep(
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
        ));
        assert!(keep(SERVICE_ACCOUNT));
        assert!(keep(CLUSTER));
        assert!(keep("app.kubernetes.io/name"));
        assert!(!keep("io.kubernetes.pod.name"));
        assert!(!keep("pod-template-hash"));
        assert!(!keep("controller-revision-hash"));
        assert!(!keep("kubernetes.io/hostname"));
        assert!(!keep("failure-domain.beta.kubernetes.io/zone"));
        assert!(!keep("statefulset.kubernetes.io/pod-name"));
        assert!(f.keeps(&Label::reserved("host")));
        let old = LabelFilter::default_for(CiliumVersion::V1_17);
        assert!(old.keeps(&Label::k8s("controller-uid", "x")));
        assert!(!f.keeps(&Label::k8s("controller-uid", "x")));
    }

    #[test]
    fn pod_labels_as_the_agent_derives_them() {
        let pod = PodFacts {
            labels: vec![("app", "web"), ("pod-template-hash", "abc123")],
            namespace: "shop",
            namespace_labels: vec![("kubernetes.io/metadata.name", "shop"), ("team", "a")],
            service_account: "web",
            cluster: "default",
        };
        let set = pod_security_labels(&pod, &LabelFilter::default_for(CiliumVersion::V1_19));
        assert_eq!(
            set.to_string(),
            "k8s:app=web,\
             k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop,\
             k8s:io.cilium.k8s.namespace.labels.team=a,\
             k8s:io.cilium.k8s.policy.cluster=default,\
             k8s:io.cilium.k8s.policy.serviceaccount=web,\
             k8s:io.kubernetes.pod.namespace=shop"
        );
    }

    #[test]
    fn prefix_patterns() {
        assert!(prefix_match(
            b".*beta.kubernetes.io",
            b"failure-domain.beta.kubernetes.io/zone"
        ));
        assert!(prefix_match(b"annotation.*", b"annotation.foo"));
        assert!(!prefix_match(b"k8s.io", b"app.k8s.io"));
        assert!(prefix_match(b"k8s.io", b"k8s.io/x"));
    }
}
