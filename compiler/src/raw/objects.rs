//! Kubernetes objects: the envelope, CiliumCIDRGroup, Kubernetes NetworkPolicy, and the
//! inventory kinds (Namespace, Pod, Node, Service).
//!
//! Inventory objects are decoded leniently: `kubectl get -o yaml` dumps carry hundreds of
//! fields polc does not need, and none of them is an error.

use super::decode::{Elsewhere, Ignored, IntOrString, Labels, Spanned, raw_struct};
use super::policy::LabelSelector;

raw_struct! {
    /// `metadata` of a policy object (strict: unknown fields are reported).
    ObjectMeta("metadata", Strict) {
        /// Name.
        name: "name" => String,
        /// Name prefix for generated names.
        generate_name: "generateName" => String,
        /// Namespace.
        namespace: "namespace" => String,
        /// Object labels.
        labels: "labels" => Labels,
        /// Annotations.
        annotations: "annotations" => Labels,
        /// UID.
        uid: "uid" => String,
        /// Server-set fields polc ignores.
        self_link: "selfLink" => Ignored,
        /// Server-set.
        resource_version: "resourceVersion" => Ignored,
        /// Server-set.
        generation: "generation" => Ignored,
        /// Server-set.
        creation_timestamp: "creationTimestamp" => Ignored,
        /// Server-set.
        deletion_timestamp: "deletionTimestamp" => Ignored,
        /// Server-set.
        deletion_grace_period_seconds: "deletionGracePeriodSeconds" => Ignored,
        /// Owners.
        owner_references: "ownerReferences" => Ignored,
        /// Finalizers.
        finalizers: "finalizers" => Ignored,
        /// Server-set.
        managed_fields: "managedFields" => Ignored,
    }
}

raw_struct! {
    /// A CiliumCIDRGroup's `spec`.
    CidrGroupSpec("CiliumCIDRGroup spec", Strict) {
        /// The group's prefixes.
        external_cidrs: "externalCIDRs" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A Kubernetes NetworkPolicy's `spec`.
    NetworkPolicySpec("NetworkPolicy spec", Strict) {
        /// The pods the policy applies to.
        pod_selector: "podSelector" => LabelSelector,
        /// `Ingress`, `Egress`.
        policy_types: "policyTypes" => Vec<Spanned<String>>,
        /// Ingress rules.
        ingress: "ingress" => Vec<NetworkPolicyIngressRule>,
        /// Egress rules.
        egress: "egress" => Vec<NetworkPolicyEgressRule>,
    }
}

const PEER_FIELDS_IN_INGRESS: &[Elsewhere] = &[
    Elsewhere {
        field: "to",
        why: "is an egress field; ingress rules use `from`",
    },
    Elsewhere {
        field: "podSelector",
        why: "belongs inside a `from` peer",
    },
    Elsewhere {
        field: "namespaceSelector",
        why: "belongs inside a `from` peer",
    },
    Elsewhere {
        field: "ipBlock",
        why: "belongs inside a `from` peer",
    },
];

const PEER_FIELDS_IN_EGRESS: &[Elsewhere] = &[
    Elsewhere {
        field: "from",
        why: "is an ingress field; egress rules use `to`",
    },
    Elsewhere {
        field: "podSelector",
        why: "belongs inside a `to` peer",
    },
    Elsewhere {
        field: "namespaceSelector",
        why: "belongs inside a `to` peer",
    },
    Elsewhere {
        field: "ipBlock",
        why: "belongs inside a `to` peer",
    },
];

raw_struct! {
    /// A NetworkPolicy ingress rule.
    NetworkPolicyIngressRule("NetworkPolicy ingress rule", Strict, elsewhere = PEER_FIELDS_IN_INGRESS) {
        /// Ports.
        ports: "ports" => Vec<NetworkPolicyPort>,
        /// Peers.
        from: "from" => Vec<NetworkPolicyPeer>,
    }
}

raw_struct! {
    /// A NetworkPolicy egress rule.
    NetworkPolicyEgressRule("NetworkPolicy egress rule", Strict, elsewhere = PEER_FIELDS_IN_EGRESS) {
        /// Ports.
        ports: "ports" => Vec<NetworkPolicyPort>,
        /// Peers.
        to: "to" => Vec<NetworkPolicyPeer>,
    }
}

raw_struct! {
    /// A NetworkPolicy peer.
    NetworkPolicyPeer("NetworkPolicy peer", Strict) {
        /// Pods.
        pod_selector: "podSelector" => LabelSelector,
        /// Namespaces.
        namespace_selector: "namespaceSelector" => LabelSelector,
        /// Addresses.
        ip_block: "ipBlock" => IpBlock,
    }
}

raw_struct! {
    /// A NetworkPolicy `ipBlock`.
    IpBlock("ipBlock", Strict) {
        /// The prefix.
        cidr: "cidr" => String,
        /// Prefixes to leave out.
        except: "except" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A NetworkPolicy port.
    NetworkPolicyPort("NetworkPolicy port", Strict) {
        /// `TCP` (default), `UDP`, `SCTP`.
        protocol: "protocol" => String,
        /// Number or name.
        port: "port" => IntOrString,
        /// Range end.
        end_port: "endPort" => i64,
    }
}

raw_struct! {
    /// `metadata` of an inventory object (lenient).
    InventoryMeta("metadata", Lenient) {
        /// Name.
        name: "name" => String,
        /// Namespace.
        namespace: "namespace" => String,
        /// Labels.
        labels: "labels" => Labels,
        /// Annotations.
        annotations: "annotations" => Labels,
        /// UID.
        uid: "uid" => String,
    }
}

raw_struct! {
    /// A Pod's `spec`, the parts polc uses.
    PodSpec("Pod spec", Lenient) {
        /// The node it runs on.
        node_name: "nodeName" => String,
        /// Its service account.
        service_account_name: "serviceAccountName" => String,
        /// Deprecated alias of `serviceAccountName`.
        service_account: "serviceAccount" => String,
        /// Whether it uses the node's network namespace.
        host_network: "hostNetwork" => bool,
        /// Containers (for named ports).
        containers: "containers" => Vec<Container>,
    }
}

raw_struct! {
    /// A container, the parts polc uses.
    Container("container", Lenient) {
        /// Name.
        name: "name" => String,
        /// Declared ports.
        ports: "ports" => Vec<ContainerPort>,
    }
}

raw_struct! {
    /// A container port.
    ContainerPort("container port", Lenient) {
        /// Port name (what named ports resolve).
        name: "name" => String,
        /// Port number.
        container_port: "containerPort" => i64,
        /// Protocol (default TCP).
        protocol: "protocol" => String,
    }
}

raw_struct! {
    /// A Pod's `status`, the parts polc uses.
    PodStatus("Pod status", Lenient) {
        /// Primary IP.
        pod_ip: "podIP" => String,
        /// All IPs.
        pod_ips: "podIPs" => Vec<PodIp>,
        /// Phase.
        phase: "phase" => String,
    }
}

raw_struct! {
    /// One pod IP.
    PodIp("pod IP", Lenient) {
        /// The address.
        ip: "ip" => String,
    }
}

raw_struct! {
    /// A Node's `spec`, the parts polc uses.
    NodeSpec("Node spec", Lenient) {
        /// Pod CIDR.
        pod_cidr: "podCIDR" => String,
        /// Pod CIDRs.
        pod_cidrs: "podCIDRs" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A Node's `status`, the parts polc uses.
    NodeStatus("Node status", Lenient) {
        /// Addresses.
        addresses: "addresses" => Vec<NodeAddress>,
    }
}

raw_struct! {
    /// A node address.
    NodeAddress("node address", Lenient) {
        /// `InternalIP`, `ExternalIP`, `Hostname`, ...
        address_type: "type" => String,
        /// The address.
        address: "address" => String,
    }
}

raw_struct! {
    /// A Service's `spec`, the parts polc uses.
    ServiceSpec("Service spec", Lenient) {
        /// Pod selector.
        selector: "selector" => Labels,
        /// Ports.
        ports: "ports" => Vec<ServicePort>,
        /// Cluster IP.
        cluster_ip: "clusterIP" => String,
        /// Cluster IPs.
        cluster_ips: "clusterIPs" => Vec<Spanned<String>>,
        /// Service type.
        service_type: "type" => String,
        /// External IPs.
        external_ips: "externalIPs" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A Service port.
    ServicePort("Service port", Lenient) {
        /// Name.
        name: "name" => String,
        /// Protocol.
        protocol: "protocol" => String,
        /// Service port.
        port: "port" => i64,
        /// Backend port.
        target_port: "targetPort" => IntOrString,
        /// Node port.
        node_port: "nodePort" => i64,
    }
}
