//! Property test: random mutations of valid policy YAML never panic, and every diagnostic
//! points inside its file on character boundaries.

mod common;

use common::*;
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../cli-fixtures/mixed.yaml"),
    "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: host
specs:
- nodeSelector:
    matchLabels: {role: worker}
  ingress:
  - fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16]
    toPorts:
    - ports: [{port: \"22\", protocol: TCP}]
  - fromEntities: [remote-node, health]
  egressDeny:
  - toEntities: [world]
    icmps:
    - fields: [{family: IPv6, type: EchoRequest}, {type: 8}]
- endpointSelector:
    matchExpressions: [{key: app, operator: In, values: [web, api]}]
  egress:
  - toEndpoints: [{matchLabels: {k8s:k8s-app: kube-dns, k8s:io.kubernetes.pod.namespace: kube-system}}]
    toPorts:
    - ports: [{port: \"53\", protocol: ANY}]
      rules:
        dns: [{matchPattern: \"*.example.com\"}]
  - toFQDNs: [{matchName: api.example.com}]
    toPorts:
    - ports: [{port: \"443\", protocol: TCP}]
      serverNames: [api.example.com]
",
    "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {}
    - ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24]}
    ports: [{protocol: TCP, port: 5432, endPort: 5440}, {port: postgres}]
  egress: []
",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteByte(usize),
    InsertByte(usize, u8),
    DuplicateLine(usize),
    DeleteLine(usize),
    Indent(usize, bool),
    ReplaceScalar(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteByte),
        (
            any::<usize>(),
            prop::sample::select(b": -[]{}&*!|>'\"#\t\n0a,".to_vec())
        )
            .prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Mutation::Indent(i, d)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "80",
                "yes",
                "null",
                "[]",
                "{}",
                "~",
                "\"x\"",
                "-1",
                "99999999999",
                "*a",
                "&a x",
                "!!binary",
                "0x10",
                "1.5"
            ])
            .prop_map(str::to_string)
        )
            .prop_map(|(i, s)| Mutation::ReplaceScalar(i, s)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteByte(i) => {
            let mut b = text.as_bytes().to_vec();
            if !b.is_empty() {
                b.remove(i % b.len());
            }
            return String::from_utf8_lossy(&b).to_string();
        }
        Mutation::InsertByte(i, c) => {
            let mut b = text.as_bytes().to_vec();
            b.insert(i % (b.len() + 1), *c);
            return String::from_utf8_lossy(&b).to_string();
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::Indent(i, deeper) => {
            let l = &mut lines[i % n];
            if *deeper {
                l.insert_str(0, "  ");
            } else if l.starts_with("  ") {
                l.replace_range(0..2, "");
            }
        }
        Mutation::ReplaceScalar(i, s) => {
            let l = &mut lines[i % n];
            if let Some(p) = l.find(": ") {
                l.replace_range(p + 2.., s);
            }
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn mutated_policies_never_panic(seed in 0..SEEDS.len(), muts in prop::collection::vec(mutation(), 1..6)) {
        let mut text = SEEDS[seed].to_string();
        for m in &muts {
            text = apply(&text, m);
        }
        let (sources, diags) = lint_text("m.yaml", text.clone().into_bytes(), FixtureArgs::default());
        let file = sources.files().next().unwrap().1;
        for d in &diags {
            let (s, e) = (d.loc.start as usize, d.loc.end as usize);
            prop_assert!(s <= e && e <= file.text.len(), "{:?} outside the file", d);
            prop_assert!(file.text.is_char_boundary(s) && file.text.is_char_boundary(e), "{:?} splits a character", d);
            prop_assert!(!d.message.is_empty());
        }
        // Linting is deterministic: the same input gives the same diagnostics.
        let (_, again) = lint_text("m.yaml", text.into_bytes(), FixtureArgs::default());
        prop_assert_eq!(diags, again);
    }
}

#[test]
fn seeds_are_free_of_errors_except_the_mixed_fixture() {
    for (i, s) in SEEDS.iter().enumerate().skip(1) {
        let (_, diags) = lint_text("seed.yaml", s.as_bytes().to_vec(), FixtureArgs::default());
        let errors: Vec<_> = diags
            .iter()
            .filter(|d| d.severity == polc_compiler::diag::Severity::Error)
            .map(|d| (d.code, d.message.clone()))
            .collect();
        assert!(errors.is_empty(), "seed {i}: {errors:?}");
    }
}

/// Every scalar field of a policy rejects a list or a mapping in its place, with an error on
/// that field's line (the API server's structural schema does).
#[test]
fn every_scalar_field_rejects_a_wrong_type() {
    let mut checked = 0;
    for path in files_under(&root().join("policies/demo/policies")) {
        let seed = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = seed.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(p) = line.find(": ") else { continue };
            let value = line[p + 2..].trim();
            if value.is_empty()
                || value.starts_with('[')
                || value.starts_with('{')
                || line.trim_start().starts_with('#')
            {
                continue;
            }
            for replacement in ["{x: 1}", "[1, 2]"] {
                let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                mutated[i] = format!("{}{}", &line[..p + 2], replacement);
                let text = mutated.join("\n") + "\n";
                let (sources, diags) =
                    lint_text("w.yaml", text.into_bytes(), FixtureArgs::default());
                let hit = diags.iter().any(|d| {
                    d.severity == polc_compiler::diag::Severity::Error
                        && sources.line_col(d.loc).line == i + 1
                });
                assert!(
                    hit,
                    "{}:{}: `{}` replaced by `{replacement}` gave {:?}",
                    path.display(),
                    i + 1,
                    line.trim(),
                    diags
                        .iter()
                        .map(|d| (d.code, sources.line_col(d.loc).line))
                        .collect::<Vec<_>>()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} fields checked");
}
