//! Findings as a table for people, or JSON for machines (pure: strings out).

use serde::Serialize;

use super::finding::{Finding, Status, Summary};

/// A check with more PASS rows than this shows them as one row (unless `verbose`).
const GROUP_PASSES_OVER: usize = 3;

/// One row per check per object. FAIL and WARN rows come first within their check, each
/// followed by its fix; many PASS rows of one check are folded into one.
pub fn text(findings: &[Finding], verbose: bool) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut fixes: Vec<Option<String>> = Vec::new();
    let mut checks: Vec<&str> = Vec::new();
    for f in findings {
        if !checks.contains(&f.check) {
            checks.push(f.check);
        }
    }
    for check in checks {
        let of_check: Vec<&Finding> = findings.iter().filter(|f| f.check == check).collect();
        for status in [Status::Fail, Status::Warn] {
            for f in of_check.iter().filter(|f| f.status == status) {
                rows.push([status.as_str().into(), check.into(), f.object.clone(), f.message.clone()]);
                fixes.push(f.fix.clone());
            }
        }
        let passes: Vec<&&Finding> = of_check.iter().filter(|f| f.status == Status::Pass).collect();
        if passes.len() > GROUP_PASSES_OVER && !verbose {
            let first = passes[0];
            let message = format!("all as expected, e.g. {}: {} (-v lists each)", first.object, first.message);
            rows.push(["PASS".into(), check.into(), format!("{} objects", passes.len()), message]);
            fixes.push(None);
        } else {
            for f in passes {
                rows.push(["PASS".into(), check.into(), f.object.clone(), f.message.clone()]);
                fixes.push(None);
            }
        }
    }

    let header = ["STATUS", "CHECK", "OBJECT", "MESSAGE"].map(String::from);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2).min(60));
    let mut out = String::new();
    let line = |r: &[String; 4]| {
        format!("{:<w0$}  {:<w1$}  {:<w2$}  {}", r[0], r[1], r[2], r[3]).trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header));
    for (row, fix) in rows.iter().zip(&fixes) {
        out.push_str(&line(row));
        if let Some(fix) = fix {
            out.push_str(&format!("{:w0$}  fix: {fix}\n", ""));
        }
    }
    let s = Summary::of(findings);
    out.push_str(&format!("\n{} FAIL, {} WARN, {} PASS\n", s.fail, s.warn, s.pass));
    out
}

#[derive(Serialize)]
struct Report<'a> {
    summary: Summary,
    findings: &'a [Finding],
}

/// The same report as `json`, in YAML.
pub fn yaml(findings: &[Finding]) -> String {
    let report = Report { summary: Summary::of(findings), findings };
    serde_saphyr::to_string(&report).expect("findings serialize")
}

/// `{"summary": {"pass", "warn", "fail"}, "findings": [{check, status, object, message, fix}]}`,
/// every finding, none folded.
pub fn json(findings: &[Finding]) -> String {
    let report = Report { summary: Summary::of(findings), findings };
    serde_json::to_string_pretty(&report).expect("findings serialize") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Finding> {
        let mut f: Vec<Finding> = (0..5)
            .map(|i| Finding::pass("network-policy", format!("NetworkPolicy moltmate-u{i}/moltmate-isolation"), "fine"))
            .collect();
        f.push(Finding::fail(
            "network-policy",
            "NetworkPolicy moltmate-x/moltmate-isolation",
            "missing",
            "start the operator",
        ));
        f.push(Finding::warn(
            "retained-workspace",
            "PersistentVolumeClaim moltmate-gone/workspace",
            "old",
            "delete it",
        ));
        f
    }

    #[test]
    fn fails_first_with_their_fix_and_passes_folded() {
        let out = text(&sample(), false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("STATUS"));
        assert!(
            lines[1].starts_with("FAIL")
                && lines[1].contains("moltmate-x/moltmate-isolation")
                && lines[1].contains("missing"),
            "{out}"
        );
        assert!(lines[2].trim_start().starts_with("fix: start the operator"), "{out}");
        assert!(lines[3].starts_with("PASS") && lines[3].contains("5 objects"), "{out}");
        assert!(lines[4].starts_with("WARN"), "{out}");
        assert!(out.ends_with("1 FAIL, 1 WARN, 5 PASS\n"), "{out}");
        assert_eq!(text(&sample(), true).lines().filter(|l| l.starts_with("PASS")).count(), 5);
    }

    #[test]
    fn json_has_every_finding() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["summary"], serde_json::json!({"pass": 5, "warn": 1, "fail": 1}));
        assert_eq!(v["findings"].as_array().unwrap().len(), 7);
        assert_eq!(v["findings"][5]["status"], "FAIL");
        assert_eq!(v["findings"][5]["fix"], "start the operator");
        assert!(v["findings"][0].get("fix").is_none());
    }
}
