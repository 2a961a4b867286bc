//! The chart's Grafana dashboard (`dashboards.*`) and Prometheus alerts (`alerts.*`): what Helm
//! renders with them off and on, that the dashboard is a well-formed Grafana dashboard, and
//! that every PromQL expression in either names only metrics and labels that the real
//! operator and gateway serve on /metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use moltmates::dev::telegram::TelegramStandIn;
use moltmates::gateway::commands::Incoming;
use moltmates::gateway::metrics::GatewayMetrics;
use moltmates::gateway::telegram::{self, Handler, Ticket, Tracker};
use serde_json::{Value, json};
use teloxide::prelude::*;

const NS: &str = "moltmate-system";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates/dashboards/moltmates.json");
/// The values a minimal install needs.
const REQUIRED: &[&str] = &[
    "image.repository=localhost/moltmates/moltmate",
    "llm.baseUrl=https://llm.example.org/v1",
    "llm.defaultModel=m",
    "telegram.botToken=123:abc",
    "llm.apiKey=sk-test",
];
const ON: &[&str] = &["dashboards.enabled=true", "alerts.enabled=true"];
const RUNBOOKS: &str = include_str!("../docs/alerts.md");
const ALERTS: [&str; 5] = [
    "MoltmateOperatorDown",
    "MoltmateUsersFailed",
    "MoltmateReconcileErrors",
    "MoltmateGatewayNotPolling",
    "MoltmateBrokerDenialsSpiking",
];
/// Labels a Prometheus scrape adds to every series (a ServiceMonitor's target labels).
const TARGET_LABELS: &[&str] = &["namespace", "job", "instance", "pod", "service", "endpoint", "container"];

// ---------------------------------------------------------------------------------------------
// Helm
// ---------------------------------------------------------------------------------------------

fn helm_args(command: &str, namespace: &str, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![command.to_string()];
    if command == "template" {
        args.push("moltmates".to_string());
    }
    args.extend([CHART, "--namespace", namespace].map(String::from));
    for s in REQUIRED.iter().chain(sets) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

/// The chart rendered into `namespace` with REQUIRED plus `sets`, as parsed documents.
fn render_in(namespace: &str, sets: &[&str]) -> Vec<Value> {
    let out = helm(&helm_args("template", namespace, sets));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm template {sets:?} failed:\n{stdout}{stderr}");
    serde_saphyr::from_multiple::<Value>(&stdout)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{stdout}"))
}

fn render(sets: &[&str]) -> Vec<Value> {
    render_in(NS, sets)
}

/// Helm's error for `sets` (which must fail).
fn render_error(sets: &[&str]) -> String {
    let out = helm(&helm_args("template", NS, sets));
    assert!(
        !out.status.success(),
        "expected a failure for {sets:?}; rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn get<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(docs, kind, name).unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// The alert rules of the rendered PrometheusRule, by alert name.
fn rules(docs: &[Value]) -> BTreeMap<String, Value> {
    let rule = get(docs, "PrometheusRule", "moltmates");
    rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| (r["alert"].as_str().expect("alert name").to_string(), r.clone()))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("the dashboard file is JSON")
}

// ---------------------------------------------------------------------------------------------
// PromQL: just enough of it to list the metrics and labels an expression names
// ---------------------------------------------------------------------------------------------

/// One label matcher of a selector: (label, operator, value).
type Matcher = (String, String, String);

/// The metric selectors and grouping labels of one PromQL expression.
#[derive(Debug, Default)]
struct Query {
    /// (metric name, matchers) of every selector.
    selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` clauses.
    grouping: Vec<String>,
}

const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const WORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

struct Lexer<'a> {
    expr: &'a str,
    chars: Vec<char>,
    at: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }
    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }
    fn error(&self, what: &str) -> String {
        format!("{what} at {} in {:?}", self.at, self.expr)
    }
    fn ident(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_ident) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }
    /// A quoted string (the lexer is on its quote); its value.
    fn string(&mut self) -> Result<String, String> {
        let quote =
            self.peek().filter(|&q| q == '"' || q == '\'').ok_or_else(|| self.error("a quoted string expected"))?;
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("an unterminated string")),
                Some('\\') => {
                    value.extend(self.chars.get(self.at + 1));
                    self.at += 2;
                }
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(value);
                }
                Some(c) => {
                    value.push(c);
                    self.at += 1;
                }
            }
        }
    }
    /// `{label op "value", ...}` (the lexer is on the brace).
    fn matchers(&mut self) -> Result<Vec<(String, String, String)>, String> {
        self.at += 1;
        let mut matchers = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(matchers);
            }
            let label = self.ident();
            if label.is_empty() {
                return Err(self.error("a label name expected"));
            }
            self.skip_space();
            let op: String = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| self.chars[self.at..].iter().take(op.len()).copied().eq(op.chars()))
                .ok_or_else(|| self.error("a matcher operator expected"))?
                .to_string();
            self.at += op.len();
            self.skip_space();
            let value = self.string()?;
            matchers.push((label, op, value));
            self.skip_space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {}
                _ => return Err(self.error("`,` or `}` expected")),
            }
        }
    }
    /// Whether the next word is `by` or `without`: the word before is an aggregation.
    fn next_word_is_grouping(&mut self) -> bool {
        let at = self.at;
        let word = self.ident();
        self.at = at;
        word == "by" || word == "without"
    }
    /// `(label, ...)` after a grouping keyword.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.skip_space();
        if self.peek() != Some('(') {
            return Err(self.error("`(` expected after a grouping keyword"));
        }
        let close =
            self.chars[self.at..].iter().position(|&c| c == ')').ok_or_else(|| self.error("unclosed label list"))?;
        let list: String = self.chars[self.at + 1..self.at + close].iter().collect();
        self.at += close + 1;
        Ok(list.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
    }
}

fn parse_promql(expr: &str) -> Result<Query, String> {
    let mut lx = Lexer { expr, chars: expr.chars().collect(), at: 0 };
    let mut query = Query::default();
    let mut depth = 0i32;
    while let Some(c) = lx.peek() {
        match c {
            c if c.is_whitespace() => lx.at += 1,
            '"' | '\'' => {
                lx.string()?;
            }
            // Ranges and subqueries: `[5m]`, `[$__rate_interval]`, `[1h:5m]`.
            '[' => {
                let close = lx.chars[lx.at..].iter().position(|&c| c == ']').ok_or_else(|| lx.error("unclosed `[`"))?;
                lx.at += close + 1;
            }
            '{' => return Err(lx.error("a selector without a metric name")),
            '(' => {
                depth += 1;
                lx.at += 1;
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(lx.error("unbalanced `)`"));
                }
                lx.at += 1;
            }
            // A Grafana variable outside a string or range.
            '$' => {
                lx.at += 1;
                lx.ident();
            }
            c if c.is_ascii_digit() || c == '.' => {
                while let Some(c) = lx.peek() {
                    let exponent_sign = (c == '+' || c == '-') && matches!(lx.chars[lx.at - 1], 'e' | 'E');
                    if !(c.is_ascii_alphanumeric() || c == '.' || exponent_sign) {
                        break;
                    }
                    lx.at += 1;
                }
            }
            c if is_ident_start(c) => {
                let word = lx.ident();
                lx.skip_space();
                if word.starts_with("group_") && lx.peek() != Some('(') {
                    // `group_left` without labels.
                } else if GROUPING.contains(&word.as_str()) {
                    query.grouping.extend(lx.label_list()?);
                } else if WORDS.contains(&word.as_str()) || lx.peek() == Some('(') || lx.next_word_is_grouping() {
                    // An operator, or a function or aggregation (its `(` is counted above).
                } else {
                    let matchers = if lx.peek() == Some('{') { lx.matchers()? } else { Vec::new() };
                    query.selectors.push((word, matchers));
                }
            }
            _ => lx.at += 1,
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {expr:?}"));
    }
    if query.selectors.is_empty() {
        return Err(format!("no metric in {expr:?}"));
    }
    Ok(query)
}

#[test]
fn the_promql_reader_finds_metrics_matchers_and_grouping_labels() {
    let q = parse_promql(
        r#"histogram_quantile(0.99, sum by (endpoint, le) (rate(a_bucket{namespace=~"$ns", x="a\"b"}[$__rate_interval]))) > 1e+06 or absent(b{c='d'})"#,
    )
    .unwrap();
    let names: Vec<&str> = q.selectors.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b"]);
    assert_eq!(
        q.selectors[0].1,
        [("namespace".into(), "=~".into(), "$ns".into()), ("x".into(), "=".into(), "a\"b".into())]
    );
    assert_eq!(q.selectors[1].1, [("c".into(), "=".into(), "d".into())]);
    assert_eq!(q.grouping, ["endpoint", "le"]);
    let q = parse_promql("sum(rate(x_total[5m])) by (result) / on (pod) group_left y").unwrap();
    assert_eq!(q.grouping, ["result", "pod"]);
    assert_eq!(q.selectors.len(), 2);
    for bad in ["sum(rate(x[5m])", "{a=\"b\"}", "x{a=b}", "time()", "x{a=\"b}"] {
        assert!(parse_promql(bad).is_err(), "{bad} parsed");
    }
}

// ---------------------------------------------------------------------------------------------
// The exposition format: which series names and labels a /metrics page serves
// ---------------------------------------------------------------------------------------------

/// Sample names a scrape yields, each with the label names seen on it.
#[derive(Debug, Default)]
struct Exported(BTreeMap<String, BTreeSet<String>>);

impl Exported {
    /// Add one /metrics page. `# TYPE` lines name a family; its samples follow the format's
    /// rules (a counter `x` is sampled as `x_total`, a histogram as `x_bucket`, `x_sum`,
    /// `x_count`). Sample lines give the labels.
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let names: Vec<String> = match kind {
                    "counter" => vec![format!("{name}_total")],
                    "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{name}{s}")).collect(),
                    _ => vec![name.to_string()],
                };
                for n in names {
                    self.0.entry(n).or_default();
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let labels = self.0.entry(line[..end].to_string()).or_default();
                if line[end..].starts_with('{') {
                    let mut lx = Lexer { expr: line, chars: line.chars().collect(), at: end };
                    let matchers = lx.matchers().unwrap_or_else(|e| panic!("a sample line that does not parse: {e}"));
                    labels.extend(matchers.into_iter().map(|(label, _, _)| label));
                }
            }
        }
    }

    /// Why `expr` names something not served, if it does.
    fn check(&self, expr: &str) -> Result<(), String> {
        let query = parse_promql(expr)?;
        let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for (metric, matchers) in &query.selectors {
            let labels = self.0.get(metric).ok_or_else(|| format!("{metric} is not served (in {expr:?})"))?;
            known.extend(labels.iter().map(String::as_str));
            for (label, _, _) in matchers {
                if !TARGET_LABELS.contains(&label.as_str()) && !labels.contains(label) {
                    return Err(format!("{metric} has no label {label} (it has {labels:?}; in {expr:?})"));
                }
            }
        }
        match query.grouping.iter().find(|l| !known.contains(l.as_str())) {
            Some(label) => Err(format!("no metric of {expr:?} has the label {label} it groups by")),
            None => Ok(()),
        }
    }
}

#[test]
fn the_exposition_reader_applies_the_suffix_rules() {
    let mut exported = Exported::default();
    exported.add(
        "# TYPE a counter\na_total{x=\"1\",y=\"a,b\"} 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\n# TYPE g gauge\n# TYPE e counter\n# EOF\n",
    );
    let names: Vec<&str> = exported.0.keys().map(String::as_str).collect();
    assert_eq!(names, ["a_total", "e_total", "g", "h_bucket", "h_count", "h_sum"]);
    assert_eq!(exported.0["a_total"], BTreeSet::from(["x".to_string(), "y".to_string()]));
    assert!(exported.check(r#"sum by (x) (rate(a_total{y="2", namespace="n"}[5m]))"#).is_ok());
    assert!(exported.check("histogram_quantile(0.5, sum by (le) (rate(h_bucket[5m])))").is_ok());
    assert!(exported.check("a").unwrap_err().contains("a is not served"));
    assert!(exported.check(r#"a_total{z="1"}"#).unwrap_err().contains("no label z"));
    assert!(exported.check("sum by (z) (g)").unwrap_err().contains("groups by"));
}

// ---------------------------------------------------------------------------------------------
// What the dashboard and the rules query
// ---------------------------------------------------------------------------------------------

/// (where, PromQL) of every query of the dashboard: panel targets and variable queries
/// (Grafana's `label_values(metric, label)` becomes `metric` grouped by `label`).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr in {}", panel["title"]));
            queries.push((format!("panel {:?} {}", panel["title"], target["refId"]), expr.to_string()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).expect("a variable query");
            let args = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            queries.push((
                format!("variable {}", variable["name"]),
                format!("sum by ({}) ({})", label.trim(), metric.trim()),
            ));
        }
    }
    queries
}

fn rule_queries(docs: &[Value]) -> Vec<(String, String)> {
    rules(docs)
        .into_iter()
        .map(|(name, rule)| (format!("alert {name}"), rule["expr"].as_str().expect("expr").to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

#[test]
fn nothing_is_rendered_unless_enabled() {
    let docs = render(&[]);
    assert!(find(&docs, "ConfigMap", "moltmates-dashboard").is_none());
    assert!(docs.iter().all(|d| d["kind"] != "PrometheusRule"));
    let docs = render(ON);
    get(&docs, "ConfigMap", "moltmates-dashboard");
    get(&docs, "PrometheusRule", "moltmates");
}

#[test]
fn the_dashboard_configmap_carries_the_file_under_the_sidecar_label() {
    let docs = render(&["dashboards.enabled=true"]);
    let map = get(&docs, "ConfigMap", "moltmates-dashboard");
    assert_eq!(map["metadata"]["namespace"], NS);
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["labels"]["app.kubernetes.io/part-of"], "moltmates");
    let file = std::fs::read_to_string(DASHBOARD).unwrap();
    assert_eq!(
        map["data"]["moltmates.json"].as_str().expect("data moltmates.json"),
        file.trim(),
        "the ConfigMap holds the file"
    );

    let docs = render(&[
        "dashboards.enabled=true",
        "dashboards.label=grafana.example.org/dashboard",
        "dashboards.labelValue=1",
        "dashboards.namespace=monitoring",
        "dashboards.labels.team=home",
        "dashboards.annotations.grafana_folder=Moltmates",
    ]);
    let meta = &get(&docs, "ConfigMap", "moltmates-dashboard")["metadata"];
    assert_eq!(meta["namespace"], "monitoring");
    assert_eq!(
        meta["labels"]["grafana.example.org/dashboard"], "1",
        "an integer from --set becomes the string the sidecar matches"
    );
    assert!(meta["labels"].get("grafana_dashboard").is_none());
    assert_eq!(meta["labels"]["team"], "home");
    assert_eq!(meta["annotations"]["grafana_folder"], "Moltmates");
}

#[test]
fn the_prometheus_rule_has_the_alerts_and_the_labels_from_values() {
    let docs = render_in(
        "home-bots",
        &[
            "alerts.enabled=true",
            "alerts.labels.release=prom",
            "alerts.alertLabels.team=home",
            "alerts.reconcileErrors.for=15m",
            "alerts.gatewayNotPolling.threshold=600",
            "alerts.gatewayNotPolling.severity=page",
            "alerts.brokerDenials.threshold=0.5",
            "alerts.brokerDenials.decisions={refused,limited}",
            "alerts.runbookBaseUrl=https://docs.example.org/moltmates/alerts.md",
        ],
    );
    let object = get(&docs, "PrometheusRule", "moltmates");
    assert_eq!(object["metadata"]["namespace"], "home-bots");
    assert_eq!(object["metadata"]["labels"]["release"], "prom");
    let rendered = rules(&docs);
    assert_eq!(rendered.keys().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(ALERTS));
    for (name, rule) in &rendered {
        assert_eq!(rule["labels"]["team"], "home", "{name}");
        assert!(rule["annotations"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}");
        assert!(rule["annotations"]["description"].as_str().is_some_and(|s| s.contains("home-bots")), "{name}");
        // Each runbook is a section of docs/alerts.md, under the anchor GitHub gives its title.
        let anchor = name.to_lowercase();
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("https://docs.example.org/moltmates/alerts.md#{anchor}"),
            "{name}"
        );
        assert!(RUNBOOKS.contains(&format!("\n## {name}\n")), "docs/alerts.md has no section {name}");
        // Every selector is confined to the release's namespace.
        for (metric, matchers) in parse_promql(rule["expr"].as_str().unwrap()).unwrap().selectors {
            assert!(
                matchers.contains(&("namespace".into(), "=".into(), "home-bots".into())),
                "{name}: {metric} {matchers:?}"
            );
        }
    }
    let reconcile = &rendered["MoltmateReconcileErrors"];
    assert_eq!(reconcile["for"], "15m");
    assert_eq!(reconcile["labels"]["severity"], "warning");
    assert!(reconcile["expr"].as_str().unwrap().contains(r#"result="error""#), "{reconcile}");
    assert!(reconcile["expr"].as_str().unwrap().ends_with("> 0"), "{reconcile}");
    assert!(
        reconcile["annotations"]["description"].as_str().unwrap().starts_with("{{ $value"),
        "Prometheus templates reach Prometheus"
    );
    let down = &rendered["MoltmateOperatorDown"];
    assert_eq!((down["for"].as_str(), down["labels"]["severity"].as_str()), (Some("5m"), Some("critical")));
    assert!(down["expr"].as_str().unwrap().starts_with("absent(moltmate_build_info{"), "{down}");
    let failed = &rendered["MoltmateUsersFailed"];
    assert!(failed["expr"].as_str().unwrap().contains(r#"phase="Failed""#), "{failed}");
    let polling = &rendered["MoltmateGatewayNotPolling"];
    assert_eq!(polling["for"], "1m");
    assert_eq!(polling["labels"]["severity"], "page");
    let expr = polling["expr"].as_str().unwrap();
    assert!(expr.contains("> 600") && expr.contains("absent(moltmate_gateway_last_poll_timestamp_seconds"), "{expr}");
    let denials = &rendered["MoltmateBrokerDenialsSpiking"];
    assert_eq!(denials["for"], "10m");
    let expr = denials["expr"].as_str().unwrap();
    assert!(expr.contains(r#"decision=~"refused|limited""#) && expr.ends_with("> 0.5"), "{expr}");

    // Webhook mode has no polling to watch; each alert can be switched off.
    let webhook = render(&[
        "alerts.enabled=true",
        "telegram.mode=webhook",
        "telegram.webhook.url=https://bot.example.org/telegram",
    ]);
    assert!(!rules(&webhook).contains_key("MoltmateGatewayNotPolling"));
    assert_eq!(rules(&webhook).len(), 4);
    let fewer = render(&[
        "alerts.enabled=true",
        "alerts.brokerDenials.enabled=false",
        "alerts.reconcileErrors.enabled=false",
        "alerts.operatorDown.enabled=false",
        "alerts.usersFailed.enabled=false",
    ]);
    assert_eq!(rules(&fewer).keys().collect::<Vec<_>>(), ["MoltmateGatewayNotPolling"]);
    // Without a base URL, no runbook_url.
    assert!(rules(&render(&["alerts.enabled=true"])).values().all(|r| r["annotations"].get("runbook_url").is_none()));
}

#[test]
fn lint_is_clean_with_both_on() {
    let mut args = helm_args("lint", NS, ON);
    args.push("--strict".to_string());
    let out = helm(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lint failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"), "lint reports:\n{stdout}");
}

#[test]
fn bad_dashboard_and_alert_values_are_refused_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["dashboards.enabeld=true"], "'enabeld' not allowed"),
        (&["dashboards.namespace=Not_A_Namespace"], "/dashboards/namespace"),
        (&["dashboards.label=has space"], "/dashboards/label"),
        (&["alerts.reconcileErrors.for=1.5m"], "/alerts/reconcileErrors/for"),
        (&["alerts.gatewayNotPolling.threshold=-1"], "/alerts/gatewayNotPolling/threshold"),
        (&["alerts.brokerDenials.decisions={denied}"], "/alerts/brokerDenials/decisions/0"),
        (&["alerts.brokerDenials.threshold=lots"], "/alerts/brokerDenials/threshold"),
        (&["alerts.severity=page"], "'severity' not allowed"),
    ];
    for (sets, expected) in cases {
        let error = render_error(sets);
        assert!(error.contains(expected), "{sets:?}: expected {expected:?} in:\n{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard as Grafana reads it
// ---------------------------------------------------------------------------------------------

#[test]
fn the_dashboard_is_a_well_formed_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["uid"], "moltmates-overview", "a fixed uid: links and provisioning keep working");
    assert_eq!(d["title"], "Moltmates");
    assert!(d["id"].is_null(), "no database id in a provisioned dashboard");
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let datasource = variables.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let mut defined: BTreeSet<String> = variables.iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    defined.extend(["__rate_interval", "__interval", "__range"].map(String::from));

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64().expect("numeric id")), "duplicate id in {title}");
        let g = &panel["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title} lies outside the 24 columns: {g}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            if let Some(other) = cells.insert(cell, title.to_string()) {
                panic!("{title} overlaps {other} at {cell:?}");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(["timeseries", "stat"].contains(&panel["type"].as_str().unwrap()), "{title}: {}", panel["type"]);
        assert_eq!(panel["datasource"], json!({"type": "prometheus", "uid": "${datasource}"}), "{title}");
        let targets =
            panel["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title} has no query"));
        let ref_ids: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(ref_ids.len(), targets.len(), "{title}: refIds are unique");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            for var in expr.split('$').skip(1).map(|rest| rest.split(|c: char| !is_ident(c)).next().unwrap()) {
                assert!(defined.contains(var), "{title}: ${var} is not a variable of the dashboard");
            }
        }
    }

    // The queries read, and show what the issue asks for.
    let queries = dashboard_queries(&d);
    let mut metrics = BTreeSet::new();
    for (place, expr) in &queries {
        let query = parse_promql(expr).unwrap_or_else(|e| panic!("{place}: {e}"));
        metrics.extend(query.selectors.into_iter().map(|(m, _)| m));
    }
    for wanted in [
        "moltmate_gateway_messages_total",
        "moltmate_gateway_routing_seconds_bucket",
        "moltmate_broker_requests_total",
        "moltmate_gateway_unknown_senders_total",
        "moltmate_operator_reconciles_total",
        "moltmate_operator_reconcile_duration_seconds_bucket",
        "moltmate_operator_users",
        "moltmate_gateway_replies_confirmed_total",
        "moltmate_gateway_repeats_suppressed_total",
        "moltmate_gateway_last_poll_timestamp_seconds",
    ] {
        assert!(metrics.contains(wanted), "no panel shows {wanted}");
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for title in [
        "Messages by outcome",
        "Routing latency",
        "Broker requests by decision",
        "Users by phase",
        "Reconciles by result",
    ] {
        assert!(titles.contains(&title), "no panel {title:?}; panels: {titles:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The metric behind MoltmateGatewayNotPolling
// ---------------------------------------------------------------------------------------------

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The value of an unlabelled sample on a /metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

struct PollRecorder(GatewayMetrics);

impl Handler for PollRecorder {
    fn handle(&self, _message: Incoming, _ticket: Ticket) {}
    fn polled(&self) {
        self.0.polled();
    }
}

#[tokio::test]
async fn the_poll_loop_stamps_each_successful_get_updates() {
    let mut registry = prometheus_client::registry::Registry::default();
    let recorder = Arc::new(PollRecorder(GatewayMetrics::register(&mut registry)));
    let encode = |registry: &prometheus_client::registry::Registry| {
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, registry).unwrap();
        page
    };
    assert_eq!(
        sample(&encode(&registry), "moltmate_gateway_last_poll_timestamp_seconds"),
        Some(0.0),
        "0 before any poll"
    );

    let tg = TelegramStandIn::start("127.0.0.1:0".parse().unwrap(), BOT_TOKEN).await.unwrap();
    let bot = Bot::new(BOT_TOKEN).set_api_url(reqwest::Url::parse(&tg.url()).unwrap());
    let before = unix_now();
    let (_stop, shutdown) = moltmates::shutdown::Shutdown::manual();
    let polling = tokio::spawn(telegram::poll(
        bot,
        Arc::new(Tracker::default()),
        recorder,
        Duration::from_secs(1),
        shutdown,
        Duration::from_secs(1),
    ));
    let stamped = wait_until("the last-poll gauge moves", Duration::from_secs(10), || async {
        sample(&encode(&registry), "moltmate_gateway_last_poll_timestamp_seconds").filter(|&t| t >= before)
    })
    .await;
    assert!(stamped <= unix_now(), "a time in the past: {stamped}");
    // Long polls go on; each success moves the stamp.
    wait_until("a later poll moves it again", Duration::from_secs(10), || async {
        sample(&encode(&registry), "moltmate_gateway_last_poll_timestamp_seconds").filter(|&t| t > stamped)
    })
    .await;
    polling.abort();
}

// ---------------------------------------------------------------------------------------------
// Against what the real binaries serve
// ---------------------------------------------------------------------------------------------

/// /metrics of a process, once it contains every name in `wanted`.
async fn scrape_once_it_has(what: &str, port: u16, wanted: &[&str]) -> String {
    wait_until(&format!("{what} /metrics with {wanted:?}"), Duration::from_secs(60), || async {
        let (code, body) = http_get(port, "/metrics").await?;
        (code == 200 && wanted.iter().all(|w| body.contains(w))).then_some(body)
    })
    .await
}

/// The operator and the gateway, as processes on a real control plane, serve every series
/// the dashboard and the alert rules ask for (after one reconcile, one refused message and
/// one refused broker request, so that labelled families have samples).
#[tokio::test]
async fn every_query_names_only_what_the_binaries_serve() {
    let stack = Stack::up("dashboards").await;
    let operator_port = free_port();
    let _operator = stack.env.spawn_operator("operator", operator_port);
    apply_user(&stack.client, &user_manifest("counted", 4242, json!({ "profile": "personal" }))).await.unwrap();
    let (tg, broker_port, http_port) = (&stack.tg, stack.broker_port, free_port());
    let _gateway = stack.gateway().set("--poll-timeout", "2s").spawn_on(&stack.env, http_port);
    tg.inject_text(7777, "hello?").unwrap();
    let refused = wait_until("the broker refuses a request without a token", Duration::from_secs(30), || async {
        http_get(broker_port, "/v1/models").await.filter(|(code, _)| *code == 401)
    })
    .await;
    assert!(refused.1.contains("bearer token"), "{refused:?}");

    let mut exported = Exported::default();
    exported.add(
        &scrape_once_it_has(
            "operator",
            operator_port,
            &["moltmate_operator_reconciles_total", "moltmate_operator_writes_total"],
        )
        .await,
    );
    let gateway_page = scrape_once_it_has(
        "gateway",
        http_port,
        &["moltmate_gateway_messages_total", "moltmate_broker_requests_total"],
    )
    .await;
    exported.add(&gateway_page);

    let docs = render(ON);
    let mut problems = Vec::new();
    for (place, expr) in dashboard_queries(&dashboard()).into_iter().chain(rule_queries(&docs)) {
        if let Err(e) = exported.check(&expr) {
            problems.push(format!("{place}: {e}"));
        }
    }
    assert!(
        problems.is_empty(),
        "queries naming what is not served:\n{}\nserved: {:#?}",
        problems.join("\n"),
        exported.0
    );

    // The gateway has been polling all along: its last-poll stamp is recent, so
    // MoltmateGatewayNotPolling stays quiet (and fires when the stamp ages).
    let what = "a recent last-poll stamp from the gateway (its Handler::polled calls GatewayMetrics::polled)";
    let stamp = wait_until(what, Duration::from_secs(20), || async {
        let (_, page) = http_get(http_port, "/metrics").await?;
        sample(&page, "moltmate_gateway_last_poll_timestamp_seconds").filter(|&t| unix_now() - t < 30.0)
    })
    .await;
    assert!(stamp <= unix_now());
}
