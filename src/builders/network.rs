//! The NetworkPolicy: agents talk to the gateway and (for `full`) the public internet only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Ctx;
use crate::crd::NetworkMode;
use crate::names;

/// Never reachable from an agent, even with `network: full`: private (RFC 1918), carrier-grade
/// NAT, loopback, link-local (cloud metadata at 169.254.169.254), "this network", and
/// multicast and reserved space, which no public service uses.
pub const BLOCKED_EGRESS_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// IPv6 counterparts: loopback, unique-local, link-local, multicast; and the prefixes that carry
/// an IPv4 address inside, which a NAT64 gateway or a relay would take to any private IPv4
/// address (`64:ff9b::10.0.0.1` is 10.0.0.1): NAT64 (well-known and local-use), 6to4 and
/// Teredo. (IPv4-mapped addresses never leave a host, and the API server refuses
/// `::ffff:0:0/96` as an exception of `::/0`.)
pub const BLOCKED_EGRESS_V6: &[&str] =
    &["::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32"];

/// The label every namespace carries with its own name (Kubernetes 1.21 and later).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn gateway_peer(ctx: &Ctx) -> NetworkPolicyPeer {
    let config = ctx.input.config;
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.into(), config.gateway_namespace.clone())])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(config.gateway_pod_labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(port.into())),
        ..NetworkPolicyPort::default()
    }
}

fn public_internet(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.into(), except: Some(except) }),
        ..NetworkPolicyPeer::default()
    }
}

/// A node's own addresses (InternalIP and ExternalIP; host names are not addresses).
pub fn node_addresses(node: &Node) -> impl Iterator<Item = IpAddr> + '_ {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    addresses
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.trim().parse().ok())
}

/// The exceptions of `0.0.0.0/0` and `::/0` for `network: full`: the blocked ranges, then each
/// node address they do not cover. A node with a public address (a rented server, a port
/// forward) serves its kubelet, NodePorts and, on k3s, the API server there.
pub fn full_egress_excepts(node_addresses: &[IpAddr]) -> (Vec<String>, Vec<String>) {
    let blocked = |list: &[&str]| list.iter().filter_map(|c| c.parse::<IpNet>().ok()).collect::<Vec<_>>();
    let (blocked_v4, blocked_v6) = (blocked(BLOCKED_EGRESS_V4), blocked(BLOCKED_EGRESS_V6));
    let mut v4: Vec<String> = BLOCKED_EGRESS_V4.iter().map(|c| c.to_string()).collect();
    let mut v6: Vec<String> = BLOCKED_EGRESS_V6.iter().map(|c| c.to_string()).collect();
    let mut nodes: Vec<IpAddr> = node_addresses.iter().map(|ip| ip.to_canonical()).collect();
    nodes.sort();
    nodes.dedup();
    for ip in nodes {
        match ip {
            IpAddr::V4(_) if !blocked_v4.iter().any(|net| net.contains(&ip)) => v4.push(format!("{ip}/32")),
            IpAddr::V6(_) if !blocked_v6.iter().any(|net| net.contains(&ip)) => v6.push(format!("{ip}/128")),
            _ => {}
        }
    }
    (v4, v6)
}

/// Cluster DNS (kube-system pods labelled k8s-app=kube-dns), for `network: full` only.
fn cluster_dns() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.into(), "kube-system".into())])),
                ..LabelSelector::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".into(), "kube-dns".into())])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                protocol: Some("UDP".into()),
                port: Some(IntOrString::Int(53)),
                ..NetworkPolicyPort::default()
            },
            tcp(53),
        ]),
    }
}

/// Default deny in both directions, then: ingress from the gateway to the agent port;
/// egress to the gateway's broker; and for `full`, public addresses and cluster DNS.
pub(super) fn network_policy(ctx: &Ctx) -> NetworkPolicy {
    let config = ctx.input.config;
    let mut egress =
        vec![NetworkPolicyEgressRule { to: Some(vec![gateway_peer(ctx)]), ports: Some(vec![tcp(config.broker_port)]) }];
    if ctx.input.profile.network == NetworkMode::Full {
        let (v4, v6) = full_egress_excepts(ctx.input.node_addresses);
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![public_internet("0.0.0.0/0", v4), public_internet("::/0", v6)]),
            ports: None,
        });
        egress.push(cluster_dns());
    }
    NetworkPolicy {
        metadata: ctx.meta(names::NETWORK_POLICY),
        spec: Some(NetworkPolicySpec {
            // Every pod in the namespace, not just the agent: whatever else appears there is fenced in too.
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![gateway_peer(ctx)]),
                ports: Some(vec![tcp(config.agent_port)]),
            }]),
            egress: Some(egress),
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::builders::tests::{build_for, user};
    use crate::crd::{NetworkMode, Profile, SandboxSpec};

    fn policy(network: NetworkMode) -> k8s_openapi::api::networking::v1::NetworkPolicySpec {
        let mut u = user("alice", Profile::Public);
        u.spec.sandbox = Some(SandboxSpec { network: Some(network), ..Default::default() });
        build_for(&u).network_policy.spec.unwrap()
    }

    #[test]
    fn none_and_limited_reach_only_the_broker() {
        for mode in [NetworkMode::None, NetworkMode::Limited] {
            let spec = policy(mode);
            assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
            assert!(spec.pod_selector.as_ref().unwrap().match_labels.is_none(), "selects every pod");
            let egress = spec.egress.unwrap();
            assert_eq!(egress.len(), 1, "{mode:?}: only the broker rule");
            let rule = &egress[0];
            let peer = &rule.to.as_ref().unwrap()[0];
            assert!(peer.ip_block.is_none());
            assert_eq!(
                peer.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app.kubernetes.io/name"],
                "moltmate-gateway"
            );
            let port = &rule.ports.as_ref().unwrap()[0];
            assert_eq!(port.port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8081)));
        }
    }

    #[test]
    fn ingress_only_from_the_gateway_to_the_agent_port() {
        let spec = policy(NetworkMode::Full);
        let ingress = spec.ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        let peer = &ingress[0].from.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "moltmate-system"
        );
        assert_eq!(
            ingress[0].ports.as_ref().unwrap()[0].port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
        );
    }

    #[test]
    fn full_network_never_reaches_private_ranges_or_metadata() {
        let egress = policy(NetworkMode::Full).egress.unwrap();
        let blocks: Vec<_> =
            egress.iter().flat_map(|r| r.to.iter().flatten()).filter_map(|p| p.ip_block.as_ref()).collect();
        assert_eq!(blocks.len(), 2);
        let v4 = blocks.iter().find(|b| b.cidr == "0.0.0.0/0").unwrap();
        let except = v4.except.as_ref().unwrap();
        for private in
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"]
        {
            assert!(except.iter().any(|e| e == private), "{private} not excluded");
        }
        let v6 = blocks.iter().find(|b| b.cidr == "::/0").unwrap();
        for private in ["fc00::/7", "fe80::/10", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32"] {
            assert!(v6.except.as_ref().unwrap().iter().any(|e| e == private), "{private} not excluded");
        }
        let dns_ports: Vec<_> = egress
            .iter()
            .flat_map(|r| r.ports.iter().flatten())
            .filter(|p| p.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(53)))
            .collect();
        assert_eq!(dns_ports.len(), 2, "DNS over UDP and TCP");
    }

    #[test]
    fn full_network_never_reaches_the_nodes_own_public_addresses() {
        let nodes: Vec<std::net::IpAddr> =
            ["203.0.113.7", "10.0.0.5", "2001:0:5ef5:79fd::1", "2a01:4f8::9", "203.0.113.7", "::ffff:198.51.100.2"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
        let (v4, v6) = super::full_egress_excepts(&nodes);
        let added_v4 = &v4[super::BLOCKED_EGRESS_V4.len()..];
        let added_v6 = &v6[super::BLOCKED_EGRESS_V6.len()..];
        // A private node address is covered already, and so is a Teredo one (2001::/32).
        assert_eq!(added_v4, ["198.51.100.2/32", "203.0.113.7/32"]);
        assert_eq!(added_v6, ["2a01:4f8::9/128"]);
        // In the policy itself.
        let u = user("alice", Profile::Personal);
        let profile = crate::profile::resolve(&u.spec).unwrap();
        let config = crate::builders::ClusterConfig::default();
        let input = crate::builders::BuildInput {
            profile: &profile,
            config: &config,
            agent_token: "t",
            broker_ip: None,
            node_addresses: &nodes,
            pull_secrets: &[],
        };
        let spec = crate::builders::build(&u, &input).unwrap().network_policy.spec.unwrap();
        let except = |cidr: &str| {
            spec.egress
                .iter()
                .flatten()
                .flat_map(|r| r.to.iter().flatten())
                .filter_map(|p| p.ip_block.as_ref())
                .find(|b| b.cidr == cidr)
                .unwrap()
                .except
                .clone()
                .unwrap()
        };
        assert!(except("0.0.0.0/0").contains(&"203.0.113.7/32".to_string()));
        assert!(except("::/0").contains(&"2a01:4f8::9/128".to_string()));
    }
}
