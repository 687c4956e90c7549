/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ABI between polc's loader and its datapath: every struct a map holds, the map names,
 * the counter indices and the constants both sides agree on. This is the only header with
 * layouts; `ebpf-backend/src/abi.rs` mirrors it in Rust and the `abi` tests compile this file
 * with assertions generated from the Rust types, for the BPF target and for the host.
 *
 * Byte order: fields named `*_be` (and the policy key's `dport`, the entry's `proxy_port`,
 * addresses) are in network order; everything else is in host order.
 */
#ifndef POLC_ABI_H
#define POLC_ABI_H

#include <linux/types.h>

/* Bumped whenever a layout below changes: a loader refuses pins of another ABI. */
#define POLC_ABI_VERSION 1

/* ---- Cilium's per-endpoint policy map (1.19 layout, datapath spec §3.2, §3.3) -------------- */

/* struct policy_key: LPM key. prefixlen = 40 + 8 if protocol + port prefix bits. */
struct policy_key {
	__u32 prefixlen;   /* host order; the datapath always looks up with 64 */
	__u32 sec_label;   /* remote identity, 0 = any */
	__u8 egress;       /* 0 ingress, 1 egress (Cilium: egress:1, pad:7) */
	__u8 protocol;     /* IP protocol, 0 = any */
	__be16 dport;      /* network order; ICMP/ICMPv6: the type as 00 tt */
};

/* struct policy_entry, the 1.19 12-byte value. */
struct policy_entry {
	__be16 proxy_port; /* network order, 0 = no redirect */
	__u8 flags;        /* bit 0 deny; bits 3-7 lpm_prefix_length (key prefix - 40) */
	__u8 auth;         /* bits 0-6 auth type, bit 7 explicit */
	__u32 precedence;  /* higher wins; 0xFFFFFFFF = deny at rule priority 0 */
	__u32 cookie;      /* policy-log cookie */
};

#define POLICY_FULL_PREFIX 64
#define POLICY_STATIC_PREFIX 40
#define POLICY_FLAG_DENY 0x01
#define POLICY_PREFIX_SHIFT 3
#define POLICY_AUTH_TYPE_MASK 0x7f
#define POLICY_MAX_PRECEDENCE 0xffffffffU

/* ---- Cilium's ipcache (cilium_ipcache_v2 layout, datapath spec §3.5) ------------------------ */

struct ipcache_key {
	__u32 prefixlen;   /* host order; 32 + address prefix bits */
	__u16 cluster_id;  /* host order */
	__u8 pad1;
	__u8 family;       /* IPCACHE_FAMILY_* */
	__u8 addr[16];     /* network order; IPv4 in the first 4 bytes */
};

struct remote_endpoint_info {
	__u32 sec_identity;       /* host order */
	__u8 tunnel_endpoint[16]; /* network order */
	__u16 pad;
	__u8 key;                 /* IPsec key index */
	__u8 flags;               /* bit 0 skip_tunnel, 1 has_tunnel_endpoint, 2 ipv6, 3 remote cluster */
};

#define IPCACHE_FAMILY_IPV4 1
#define IPCACHE_FAMILY_IPV6 2
#define IPCACHE_STATIC_PREFIX 32

/* Identity used when the ipcache has no entry (it normally has 0.0.0.0/0 and ::/0). */
#define WORLD_ID 2

/* ---- polc's own maps ---------------------------------------------------------------------- */

/*
 * polc_ifaces: which endpoint an interface serves, keyed by ifindex (u32, host order, in the
 * network namespace the programs are attached in). The programs read skb->ifindex, which on
 * both TC hooks of a device is that device.
 */
struct iface_info {
	__u16 endpoint_id; /* key of polc_policy and polc_endpoints */
	__u8 flags;        /* IFACE_F_* */
	__u8 pad;
};

/*
 * Set when the interface is the endpoint's own device (a host endpoint's uplink, or a pod's
 * side of its veth): TC ingress is then the endpoint's ingress. Clear for the usual case, the
 * node-side peer of a pod's veth, where TC ingress carries what the pod sends (its egress).
 */
#define IFACE_F_ENDPOINT_SIDE 0x01
/*
 * Set for an interface that serves no endpoint (a node's uplink): the programs only hand the
 * packets of the proxy's connections to its sockets there, and pass everything else.
 */
#define IFACE_F_UPLINK 0x02

/*
 * skb->mark values shared with the L7 proxy and the node's routing (Cilium's, bpf/lib/common.h).
 * TO_PROXY: the packet goes to a local proxy socket; the node routes it locally
 * (`ip rule fwmark 0x200/0xf00 lookup 2004`, table 2004: `local default dev lo`). When the
 * egress hook turns a packet around for the ingress proxy, the proxy port rides in the upper
 * 16 bits. PROXY_INGRESS / PROXY_EGRESS: sent by the proxy (its sockets' SO_MARK) after it
 * judged the request; the ingress proxy's packets to its endpoint skip the ingress policy.
 */
#define MARK_MAGIC_MASK 0x0f00
#define MARK_MAGIC_TO_PROXY 0x0200
#define MARK_MAGIC_PROXY_INGRESS 0x0a00
#define MARK_MAGIC_PROXY_EGRESS 0x0b00

/* polc_endpoints: what `polc status` shows about an endpoint (never read by the programs). */
#define ENDPOINT_NAME_LEN 120
struct endpoint_info {
	__u32 identity;
	__u16 endpoint_id;
	__u8 flags;        /* ENDPOINT_F_* */
	__u8 name_len;
	char name[ENDPOINT_NAME_LEN]; /* `namespace/pod` or `host/node`, not NUL-terminated */
};

#define ENDPOINT_F_INGRESS_ENFORCED 0x01
#define ENDPOINT_F_EGRESS_ENFORCED 0x02

/* polc_meta: one entry describing what is pinned in this directory. */
struct polc_meta {
	__u32 abi_version;    /* POLC_ABI_VERSION of the loader that created the pins */
	__u32 policy_map_max; /* capacity of every policy map (fixed when the pins are created) */
	__u64 object_hash;    /* FNV-1a of the loaded object, to reuse pinned programs */
};

/*
 * polc_ct: connection tracking. One entry per (endpoint, direction, tuple) of a connection the
 * endpoint's policy allowed, in the direction the first packet travelled. Replies are found by
 * looking up the reversed tuple in the opposite direction.
 */
struct ct_key {
	__u16 endpoint_id;
	__u8 family;       /* IPCACHE_FAMILY_* */
	__u8 protocol;
	__u8 dir;          /* DIR_INGRESS or DIR_EGRESS of the endpoint */
	__u8 pad[3];
	__be16 sport;      /* ICMP echo: the identifier as sport (request) or dport (reply) */
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* The policy entry that admitted a flow, keyed like Cilium's cilium_policystats. */
struct stats_key {
	__u16 endpoint_id;
	__u8 pad;
	__u8 prefix_len;   /* the entry's lpm_prefix_length (0, 8, 9-24) */
	__u32 sec_label;   /* 0 for an identity-0 (any) entry */
	__u8 egress;
	__u8 protocol;
	__be16 dport;      /* masked to the entry's prefix */
};

struct ct_entry {
	__u64 expires;     /* bpf_ktime_get_ns() deadline */
	__u64 packets;     /* both directions */
	__u64 bytes;
	__u32 flags;       /* CT_F_* */
	struct stats_key entry; /* the policy entry that admitted the flow (polc_stats key) */
};

#define CT_F_SEEN_REPLY 0x01
#define CT_F_FIN_FWD 0x02
#define CT_F_FIN_REV 0x04
#define CT_F_RST 0x08
#define CT_F_REDIRECT 0x10 /* created by an entry with a proxy port */
#define CT_F_PROXY_PORT_SHIFT 16 /* a redirected flow's proxy port: flags >> 16 */

#define CT_LIFETIME_TCP_SYN_S 60
#define CT_LIFETIME_TCP_S 21600
#define CT_LIFETIME_CLOSE_S 10
#define CT_LIFETIME_NONTCP_S 60

#define DIR_INGRESS 0
#define DIR_EGRESS 1

/*
 * polc_stats (per CPU, keyed by struct stats_key): the packets and bytes of every flow a
 * policy entry decided, both directions, counted on every packet (conntrack hits included).
 */

/* Values of polc_stats (per CPU) and of polc_counters (per CPU, indexed by REASON_*). */
struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Indices of polc_counters. Passes below 16, drops from 16; drop names follow Cilium. */
#define REASON_PASS_POLICY 0          /* a policy entry allowed a new flow */
#define REASON_PASS_REDIRECT 1        /* allowed by a proxy-port entry, protocol without a proxy */
#define REASON_PASS_AUTH 2            /* allowed by an entry requiring auth (auth not enforced) */
#define REASON_PASS_CT_ESTABLISHED 3  /* conntrack: established flow */
#define REASON_PASS_CT_REPLY 4        /* conntrack: reply of an allowed flow */
#define REASON_PASS_CT_RELATED 5      /* conntrack: ICMP error about an allowed flow */
#define REASON_PASS_ICMP_IMPLICIT 6   /* ICMP fragmentation-needed, ICMPv6 neighbour discovery */
#define REASON_PASS_NOT_IP 7          /* not IPv4/IPv6 (ARP, ...) */
#define REASON_PASS_UNMANAGED 8       /* interface or endpoint unknown to polc */
#define REASON_PASS_TO_PROXY 9        /* handed to a socket of the local L7 proxy */
#define REASON_PASS_FROM_PROXY 10     /* sent by the ingress proxy after it judged the request */
#define REASON_DROP_POLICY 16         /* Cilium DROP_POLICY (-133): no entry */
#define REASON_DROP_POLICY_DENY 17    /* Cilium DROP_POLICY_DENY (-181): a deny entry */
#define REASON_DROP_FRAG_NOSUPPORT 18 /* Cilium DROP_FRAG_NOSUPPORT (-157) */
#define REASON_DROP_INVALID 19        /* Cilium DROP_INVALID (-134): truncated headers */
#define REASON_DROP_PROXY 20          /* Cilium DROP_PROXY_LOOKUP_FAILED: no proxy listens */
#define REASON_MAX 32

/* Map sizes. The policy maps' capacity is chosen by the loader (polc_meta.policy_map_max). */
#define POLC_MAX_ENDPOINTS 65536
#define POLC_MAX_IFACES 65536
#define POLC_IPCACHE_MAX 512000
#define POLC_CT_MAX 65536
#define POLC_STATS_MAX 16384
#define POLC_POLICY_MAP_DEFAULT_MAX 16384

#endif /* POLC_ABI_H */
