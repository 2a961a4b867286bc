//! The committed CRD is exactly what `moltmate crd` prints.

use std::process::Command;

#[test]
fn committed_crd_matches_moltmate_crd() {
    let output = Command::new(env!("CARGO_BIN_EXE_moltmate")).arg("crd").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/moltmateuser.yaml")).unwrap();
    assert!(
        printed == committed,
        "crds/moltmateuser.yaml is out of date; regenerate it with `cargo run -- crd > crds/moltmateuser.yaml`"
    );
}

#[test]
fn every_spec_field_is_described() {
    let printed =
        String::from_utf8(Command::new(env!("CARGO_BIN_EXE_moltmate")).arg("crd").output().unwrap().stdout).unwrap();
    let crd: serde_json::Value = serde_saphyr::from_str(&printed).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if schema.get("description").is_none() {
            missing.push(path.to_string());
        }
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                walk(&format!("{path}.{name}"), child, missing);
            }
        }
    }
    let mut missing = vec![];
    walk("spec", spec, &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

#[test]
fn moltmate_help_lists_the_subcommands() {
    let output = Command::new(env!("CARGO_BIN_EXE_moltmate")).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for sub in ["operator", "crd", "dev"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

/// Every reason the operator writes is explained where users look them up.
#[test]
fn every_status_reason_is_in_the_users_guide() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/users.md")).unwrap();
    for reason in moltmates::operator::status::Reason::ALL {
        let row = format!("| `{reason}` |");
        assert!(guide.contains(&row), "docs/users.md has no row for {reason}");
    }
}
