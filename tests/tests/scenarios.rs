//! Scenario tests: small clusters with policies and flows whose verdicts are traced to the
//! spec (`tests/scenarios/*/flows.yaml`, each flow with a `why`, and the lab's own under
//! `tests/lab`, among them at least 15 of L7: HTTP, DNS and `toFQDNs`). Every flow must get
//! its expected verdict from `polc explain --flows`.

mod common;

use common::{polc, root};

#[test]
fn every_scenario_flow_gets_its_expected_verdict() {
    let mut scenarios: Vec<_> = ["tests/scenarios", "tests/lab"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("flows.yaml").is_file())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 50, "only {} scenarios", scenarios.len());
    let l7 = scenarios
        .iter()
        .filter(|s| s.file_name().unwrap().to_string_lossy().starts_with("l7-"))
        .count();
    assert!(l7 >= 15, "only {l7} L7 lab scenarios");
    let mut failures = Vec::new();
    let mut flows = 0;
    for s in &scenarios {
        let p = |f: &str| s.join(f).to_string_lossy().to_string();
        let extra = std::fs::read_to_string(s.join("args")).unwrap_or_default();
        let mut args = vec![
            "explain".to_string(),
            "--policies".into(),
            p("policies.yaml"),
            "--inventory".into(),
            p("inventory.yaml"),
            "--flows".into(),
            p("flows.yaml"),
        ];
        args.extend(extra.split_whitespace().map(String::from));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = polc(&argv, b"");
        flows += out
            .lines()
            .filter(|l| l.starts_with("ok") || l.starts_with("FAIL"))
            .count();
        if code != 0 {
            failures.push(format!(
                "{}: exit {code}\n{}{}",
                s.file_name().unwrap().to_string_lossy(),
                out.lines()
                    .filter(|l| l.starts_with("FAIL"))
                    .map(|l| format!("  {l}\n"))
                    .collect::<String>(),
                err
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed ({flows} flows):\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}
