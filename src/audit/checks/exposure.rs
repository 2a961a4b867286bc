//! Nothing is exposed: no NodePort or LoadBalancer Services, an Ingress only to the webhook in
//! webhook mode with a secret token, and the broker reachable only from agent namespaces.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::install::Install;
use super::secrets::{webhook_mode, webhook_token};
use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::{Snapshot, find, in_namespace};
use crate::audit::workload::Component;
use crate::names;

pub const SERVICES: &str = "service-exposure";
pub const INGRESS: &str = "ingress";
pub const BROKER: &str = "broker-access";

const DEFAULT_BROKER_PORT: u16 = 8081;
const DEFAULT_WEBHOOK_PORT: u16 = 8443;

pub fn check(snap: &Snapshot, install: &Install, out: &mut Vec<Finding>) {
    let mut namespaces = vec![install.namespace.to_string()];
    namespaces.extend(snap.sandbox_namespaces());
    services(snap, &namespaces, out);
    ingresses(snap, install, &namespaces, out);
    if let Some(gateway) = &install.gateway {
        out.extend(broker_access(snap, gateway));
    }
}

fn services(snap: &Snapshot, namespaces: &[String], out: &mut Vec<Finding>) {
    for ns in namespaces {
        for service in in_namespace(&snap.services, ns) {
            let what = object("Service", Some(ns), &service.name_any());
            let spec = service.spec.clone().unwrap_or_default();
            let type_ = spec.type_.unwrap_or_else(|| "ClusterIP".into());
            let mut problems = Vec::new();
            if type_ == "NodePort" || type_ == "LoadBalancer" {
                problems.push(format!("type {type_}: reachable from outside the cluster"));
            }
            if let Some(ips) = spec.external_ips.filter(|ips| !ips.is_empty()) {
                problems.push(format!("externalIPs {}: reachable at those addresses", ips.join(",")));
            }
            if problems.is_empty() {
                out.push(Finding::pass(SERVICES, what, format!("{type_}, inside the cluster only")));
            } else {
                out.push(Finding::fail(
                    SERVICES,
                    what,
                    problems.join("; "),
                    format!(
                        "make it ClusterIP again (kubectl patch service -n {ns} {} --type merge -p '{{\"spec\":{{\"type\":\"ClusterIP\",\"externalIPs\":null}}}}', \
                         or helm upgrade: the chart's Services are all ClusterIP); reach the gateway through kubectl port-forward, a VPN (Tailscale) or SSH",
                        service.name_any()
                    ),
                ));
            }
        }
    }
}

/// `(service, port)` of every backend of an Ingress; `None` for a non-Service backend.
fn backends(ingress: &Ingress) -> Vec<Option<(String, String)>> {
    let spec = ingress.spec.clone().unwrap_or_default();
    let rules =
        spec.rules.into_iter().flatten().flat_map(|r| r.http.map(|h| h.paths).unwrap_or_default()).map(|p| p.backend);
    spec.default_backend
        .into_iter()
        .chain(rules)
        .map(|b| {
            b.service.map(|s| {
                let port =
                    s.port.map(|p| p.name.unwrap_or_else(|| p.number.unwrap_or(0).to_string())).unwrap_or_default();
                (s.name, port)
            })
        })
        .collect()
}

fn port_of_addr(addr: Option<String>, default: u16) -> u16 {
    addr.and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok())).unwrap_or(default)
}

/// Whether Service `name` port `port` leads to the gateway's webhook port.
fn is_webhook_backend(snap: &Snapshot, gateway: &Component, name: &str, port: &str) -> bool {
    let webhook_port = port_of_addr(gateway.value("webhook-addr", "MOLTMATE_WEBHOOK_ADDR"), DEFAULT_WEBHOOK_PORT);
    let Some(service) = find(&snap.services, &gateway.namespace(), name) else { return false };
    let ports = service.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let Some(sp) = ports.iter().find(|p| p.name.as_deref() == Some(port) || p.port.to_string() == port) else {
        return false;
    };
    match &sp.target_port {
        None => sp.port == i32::from(webhook_port),
        Some(IntOrString::Int(n)) => *n == i32::from(webhook_port),
        Some(IntOrString::String(named)) => gateway
            .container
            .ports
            .iter()
            .flatten()
            .any(|cp| cp.name.as_deref() == Some(named.as_str()) && cp.container_port == i32::from(webhook_port)),
    }
}

fn ingresses(snap: &Snapshot, install: &Install, namespaces: &[String], out: &mut Vec<Finding>) {
    for ns in namespaces {
        for ingress in in_namespace(&snap.ingresses, ns) {
            let name = ingress.name_any();
            let what = object("Ingress", Some(ns), &name);
            let delete = format!("kubectl delete ingress -n {ns} {name}");
            if ns != install.namespace {
                out.push(Finding::fail(INGRESS, what, "exposes a sandbox namespace outside the cluster", delete));
                continue;
            }
            let Some(gateway) = install.gateway.as_ref().filter(|g| webhook_mode(g)) else {
                out.push(Finding::fail(
                    INGRESS,
                    what,
                    "the gateway polls Telegram (not --telegram-mode=webhook): nothing has to come in, and this Ingress only exposes the release",
                    delete,
                ));
                continue;
            };
            let stray: Vec<String> = backends(ingress)
                .into_iter()
                .filter_map(|b| match b {
                    Some((svc, port)) if is_webhook_backend(snap, gateway, &svc, &port) => None,
                    Some((svc, port)) => Some(format!("Service {svc} port {port}")),
                    None => Some("a non-Service backend".into()),
                })
                .collect();
            if !stray.is_empty() {
                out.push(Finding::fail(
                    INGRESS,
                    what,
                    format!("routes to {}, not the gateway's webhook port", stray.join(", ")),
                    "route only the webhook path to Service moltmate-webhook port webhook (the chart's `ingress` values do)",
                ));
                continue;
            }
            out.push(match webhook_token(snap, gateway) {
                Err(why) => Finding::fail(
                    INGRESS,
                    what,
                    format!("exposes the webhook, but {why}: anyone can post forged updates"),
                    "set telegram.webhook.secretToken (empty: generated) and upgrade",
                ),
                Ok(_) => Finding::pass(INGRESS, what, "routes only to the webhook; webhook mode with a secret token"),
            });
        }
    }
}

/// Every peer allowed by `selector` carries the label the operator puts on agent namespaces.
fn only_agent_namespaces(selector: &LabelSelector) -> bool {
    let managed = selector.match_labels.as_ref().and_then(|l| l.get(names::LABEL_MANAGED_BY)).map(String::as_str)
        == Some(names::MANAGED_BY);
    let per_user = selector.match_labels.as_ref().is_some_and(|l| l.contains_key(names::LABEL_USER));
    let expressed = selector.match_expressions.iter().flatten().any(|e| match e.operator.as_str() {
        "In" => {
            let values = e.values.clone().unwrap_or_default();
            e.key == names::LABEL_MANAGED_BY && !values.is_empty() && values.iter().all(|v| v == names::MANAGED_BY)
        }
        "Exists" => e.key == names::LABEL_USER,
        _ => false,
    });
    managed || per_user || expressed
}

/// Whether `selector` selects an object with `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let plain = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    plain && expressions
}

fn restricts_ingress(policy: &NetworkPolicy) -> bool {
    let spec = policy.spec.clone().unwrap_or_default();
    match spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == "Ingress"),
        // Unset: Ingress always, Egress only with egress rules.
        _ => true,
    }
}

fn covers(ports: &Option<Vec<NetworkPolicyPort>>, number: u16, name: Option<&str>) -> bool {
    let Some(ports) = ports.as_ref().filter(|p| !p.is_empty()) else { return true };
    ports.iter().any(|p| {
        let tcp = p.protocol.as_deref().is_none_or(|proto| proto == "TCP");
        let port = match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => {
                let end = p.end_port.unwrap_or(*n);
                (*n..=end).contains(&i32::from(number))
            }
            Some(IntOrString::String(s)) => Some(s.as_str()) == name,
        };
        tcp && port
    })
}

fn describe_peer(peer: &NetworkPolicyPeer, ns: &str) -> Option<String> {
    if let Some(block) = &peer.ip_block {
        return Some(format!("from IP block {}", block.cidr));
    }
    match &peer.namespace_selector {
        None => Some(format!("from pods of namespace {ns}")),
        Some(sel) if only_agent_namespaces(sel) => None,
        Some(sel)
            if sel.match_labels.as_ref().is_none_or(|l| l.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
        {
            Some("from every namespace".into())
        }
        Some(_) => Some("from namespaces that are not only agents'".into()),
    }
}

/// The gateway's broker port admitted only from agent namespaces.
fn broker_access(snap: &Snapshot, gateway: &Component) -> Vec<Finding> {
    let ns = gateway.namespace();
    let labels = gateway.pod_labels();
    let port = port_of_addr(gateway.value("broker-addr", "MOLTMATE_BROKER_ADDR"), DEFAULT_BROKER_PORT);
    let port_name = gateway
        .container
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == i32::from(port))
        .and_then(|p| p.name.clone());
    let policies: Vec<&NetworkPolicy> = in_namespace(&snap.network_policies, &ns)
        .filter(|p| {
            restricts_ingress(p)
                && p.spec
                    .as_ref()
                    .is_some_and(|s| selects(s.pod_selector.as_ref().unwrap_or(&LabelSelector::default()), &labels))
        })
        .collect();
    if policies.is_empty() {
        return vec![Finding::fail(
            BROKER,
            gateway.object(),
            format!(
                "no NetworkPolicy limits who reaches the gateway pods: any pod in the cluster can call the broker (port {port})"
            ),
            "enable the chart's networkPolicy (networkPolicy.enabled=true), or admit the broker port only from namespaces labelled app.kubernetes.io/managed-by=moltmate-operator",
        )];
    }
    let mut out = Vec::new();
    let mut agents_admitted = false;
    for policy in &policies {
        let rules = policy.spec.as_ref().and_then(|s| s.ingress.clone()).unwrap_or_default();
        let mut problems = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if !covers(&rule.ports, port, port_name.as_deref()) {
                continue;
            }
            let peers = rule.from.clone().unwrap_or_default();
            if peers.is_empty() {
                problems.push(format!("rule {} admits it from anywhere", i + 1));
            }
            for peer in &peers {
                match describe_peer(peer, &ns) {
                    Some(p) => problems.push(format!("rule {} admits it {p}", i + 1)),
                    None => agents_admitted = true,
                }
            }
        }
        if !problems.is_empty() {
            out.push(Finding::fail(
                BROKER,
                object("NetworkPolicy", Some(&ns), &policy.name_any()),
                format!("selects the gateway pods, and for the broker port {port}: {}", problems.join("; ")),
                "admit the broker port only from namespaceSelector app.kubernetes.io/managed-by=moltmate-operator (the chart's moltmate-gateway policy does)",
            ));
        }
    }
    if out.is_empty() {
        let names: Vec<String> = policies.iter().map(|p| p.name_any()).collect();
        out.push(if agents_admitted {
            Finding::pass(BROKER, gateway.object(), format!("broker port {port} only from agent namespaces (NetworkPolicy {})", names.join(", ")))
        } else {
            Finding::warn(
                BROKER,
                gateway.object(),
                format!("no rule admits the broker port {port} from agent namespaces (NetworkPolicy {}): agents cannot reach their LLM", names.join(", ")),
                "admit the broker port from namespaceSelector app.kubernetes.io/managed-by=moltmate-operator",
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn label_selectors() {
        let labels = BTreeMap::from([("app".to_string(), "gw".to_string()), ("tier".to_string(), "x".to_string())]);
        let table = [
            (json!({}), true),
            (json!({"matchLabels": {"app": "gw"}}), true),
            (json!({"matchLabels": {"app": "other"}}), false),
            (json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["gw", "a"]}]}), true),
            (json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["gw"]}]}), false),
            (json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}), true),
            (json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}), false),
        ];
        for (sel, want) in table {
            assert_eq!(selects(&selector(sel.clone()), &labels), want, "{sel}");
        }
    }

    #[test]
    fn peers_that_are_only_agents() {
        let agents =
            json!({"namespaceSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "moltmate-operator"}}});
        let peer = |v: serde_json::Value| -> NetworkPolicyPeer { serde_json::from_value(v).unwrap() };
        assert_eq!(describe_peer(&peer(agents), "sys"), None);
        assert_eq!(
            describe_peer(&peer(json!({"namespaceSelector": {}})), "sys").as_deref(),
            Some("from every namespace")
        );
        assert_eq!(
            describe_peer(&peer(json!({"podSelector": {}})), "sys").as_deref(),
            Some("from pods of namespace sys")
        );
        assert!(describe_peer(&peer(json!({"ipBlock": {"cidr": "0.0.0.0/0"}})), "sys").unwrap().contains("0.0.0.0/0"));
        let other = json!({"namespaceSelector": {"matchLabels": {"team": "a"}}});
        assert!(describe_peer(&peer(other), "sys").is_some());
    }

    #[test]
    fn ports_a_rule_covers() {
        let ports = |v: serde_json::Value| -> Option<Vec<NetworkPolicyPort>> { serde_json::from_value(v).unwrap() };
        assert!(covers(&None, 8081, Some("broker")));
        assert!(covers(&ports(json!([{"port": "broker"}])), 8081, Some("broker")));
        assert!(covers(&ports(json!([{"port": 8081, "protocol": "TCP"}])), 8081, None));
        assert!(covers(&ports(json!([{"port": 8000, "endPort": 9000}])), 8081, None));
        assert!(!covers(&ports(json!([{"port": "http"}])), 8081, Some("broker")));
        assert!(!covers(&ports(json!([{"port": 8081, "protocol": "UDP"}])), 8081, None));
    }
}
