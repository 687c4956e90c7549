/* SPDX-License-Identifier: Apache-2.0 */
/*
 * polc's datapath: two TC classifiers that enforce Cilium policy-map entries on the interfaces
 * of endpoints. Built by ebpf-backend/build.rs with `clang -O2 -g -target bpf`.
 *
 * Which endpoint: one object serves every endpoint of a node. `polc_ifaces` maps the ifindex
 * of the packet's device (skb->ifindex: on both hooks, the device the program is attached to)
 * to an endpoint ID and a side; `polc_policy`, a hash of maps keyed by endpoint ID, holds each
 * endpoint's policy map (Cilium's 1.19 LPM layout). One load, one verification, for any number
 * of endpoints; the loader adds and removes endpoints by editing these two maps.
 *
 * Which direction: on the node-side end of a pod's veth (Cilium's lxc device), TC ingress sees
 * what the pod sends, the pod's egress, and TC egress what the node delivers to it, the pod's
 * ingress. On the endpoint's own device (IFACE_F_ENDPOINT_SIDE: a host endpoint's uplink, or
 * the pod's end of the veth) it is the other way round. Egress looks up the destination's
 * identity, ingress the source's; the port is always the destination port.
 *
 * Per packet:
 *   1. not IPv4/IPv6: pass. ICMPv6 neighbour discovery, ICMPv6 multicast listener discovery
 *      to a multicast address (link-scope control traffic the kernel sends by itself on every
 *      interface with IPv6), and ICMP fragmentation-needed: pass.
 *   2. conntrack (`polc_ct`): the tuple in this direction (established), or the reversed tuple
 *      in the other direction (reply), or for an ICMP error the embedded tuple in the other
 *      direction (related): pass without a policy lookup.
 *   3. identity of the peer from the ipcache (LPM; miss = world).
 *   4. policy lookup, Cilium 1.19 (datapath spec §3.4): the peer's identity with the full
 *      64-bit prefix; a hit with MAX precedence (deny) decides alone; then identity 0 (any);
 *      of two hits the higher precedence wins, then the longer prefix, then the peer's.
 *      No hit: DROP_POLICY. A deny: DROP_POLICY_DENY. Non-first fragments only match entries
 *      without port bits (DROP_FRAG_NOSUPPORT otherwise).
 *   5. allowed: a conntrack entry is created. Auth requirements are not enforced (counted).
 *
 * The L7 proxy (datapath spec §2.7; `polc proxy`): an allowed TCP or UDP flow whose entry
 * carries a proxy port goes to the proxy's transparent listener on that port, with the
 * client's view of the destination unchanged. On a TC ingress hook the packet is given to the
 * listener with bpf_sk_assign and marked TO_PROXY, which the node routes locally; on an egress
 * hook (a pod's ingress) it is first turned around to the same device's ingress
 * (bpf_redirect with BPF_F_INGRESS), the proxy port in the mark. No listener: dropped, so an
 * L7 rule never silently becomes an L4 allow. The flow's conntrack entry keeps the port, and
 * its next packets follow. Packets of connections the proxy holds (a proxied connection, or
 * a reply to one of the proxy's upstream connections, which keep the client's address) are
 * recognised on every TC ingress hook, uplinks included, by a socket bound to exactly their
 * destination, and handed to it. What the ingress proxy sends to its endpoint (SO_MARK
 * PROXY_INGRESS) was judged by the proxy and passes the ingress policy.
 * Counters: `polc_stats` per policy entry (packets and bytes of the flows it decided),
 * `polc_counters` per pass/drop reason.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- maps ---------------------------------------------------------------------------------- */

/* Sizes, not types: clang emits the types of an inner definition as forward declarations. */
struct policy_map_template {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_entry));
	__uint(max_entries, POLC_POLICY_MAP_DEFAULT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, POLC_MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__array(values, struct policy_map_template);
} polc_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
	__uint(max_entries, POLC_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} polc_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct iface_info);
	__uint(max_entries, POLC_MAX_IFACES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} polc_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, POLC_MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} polc_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct polc_meta);
	__uint(max_entries, 1);
} polc_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, POLC_CT_MAX);
} polc_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct stats_key);
	__type(value, struct counter);
	__uint(max_entries, POLC_STATS_MAX);
} polc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, REASON_MAX);
} polc_counters SEC(".maps");

/* ---- packet parsing ------------------------------------------------------------------------ */

#define PASS TC_ACT_UNSPEC /* TCX_NEXT: let the next program (or the stack) have it */
#define DROP TC_ACT_SHOT

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_REDIRECT 5
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_NDISC_FIRST 133 /* router solicitation .. redirect (137) */
#define ICMPV6_NDISC_LAST 137
#define ICMPV6_MLD_QUERY 130 /* .. MLDv1 report (131), MLDv1 done (132) */
#define ICMPV6_MLD_DONE 132
#define ICMPV6_MLD2_REPORT 143

#define NSEC_PER_SEC 1000000000ULL

struct tuple {
	__u8 family;
	__u8 protocol;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct pkt {
	struct tuple t;
	__u8 nonfirst_frag; /* no L4 header */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u32 l4_off;       /* relative to the network header */
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP = 1,
	PARSE_INVALID = 2,
};

static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes_relative(skb, off, to, len, BPF_HDR_START_NET);
}

/*
 * The L3 header at `off` (relative to the network header) into `t`; `*l4_off` is set to the
 * L4 header and `*frag` when the packet is a non-first fragment.
 */
static __always_inline int parse_l3(struct __sk_buff *skb, __u32 off, __u8 family,
				    struct tuple *t, __u32 *l4_off, __u8 *frag)
{
	if (family == IPCACHE_FAMILY_IPV4) {
		struct iphdr ip;

		if (load(skb, off, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
			return PARSE_INVALID;
		t->family = IPCACHE_FAMILY_IPV4;
		t->protocol = ip.protocol;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		*l4_off = off + ip.ihl * 4;
		*frag = (bpf_ntohs(ip.frag_off) & 0x1fff) != 0;
		return PARSE_OK;
	} else {
		struct ipv6hdr ip6;
		__u8 nexthdr;
		__u32 l4 = off + sizeof(struct ipv6hdr);

		if (load(skb, off, &ip6, sizeof(ip6)) < 0)
			return PARSE_INVALID;
		t->family = IPCACHE_FAMILY_IPV6;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		nexthdr = ip6.nexthdr;
		*frag = 0;
#pragma unroll
		for (int i = 0; i < 6; i++) {
			__u8 h[4];

			if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
			    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT &&
			    nexthdr != NEXTHDR_AUTH)
				break;
			if (load(skb, l4, h, sizeof(h)) < 0)
				return PARSE_INVALID;
			if (nexthdr == NEXTHDR_FRAGMENT) {
				/* offset in the upper 13 bits of bytes 2-3 */
				if (((h[2] << 8 | h[3]) & 0xfff8) != 0)
					*frag = 1;
				l4 += 8;
			} else if (nexthdr == NEXTHDR_AUTH) {
				l4 += (h[1] + 2) * 4;
			} else {
				l4 += (h[1] + 1) * 8;
			}
			nexthdr = h[0];
		}
		t->protocol = nexthdr;
		*l4_off = l4;
		return PARSE_OK;
	}
}

static __always_inline int is_icmp(__u8 family, __u8 protocol)
{
	return (family == IPCACHE_FAMILY_IPV4 && protocol == IPPROTO_ICMP) ||
	       (family == IPCACHE_FAMILY_IPV6 && protocol == IPPROTO_ICMPV6);
}

/* Conntrack ports of an ICMP message: echo request (id, 0), echo reply (0, id), else (0, 0). */
static __always_inline void icmp_ports(struct tuple *t, __u8 type, __be16 id)
{
	__u8 request = t->family == IPCACHE_FAMILY_IPV4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST;
	__u8 reply = t->family == IPCACHE_FAMILY_IPV4 ? ICMP_ECHOREPLY : ICMPV6_ECHO_REPLY;

	t->sport = type == request ? id : 0;
	t->dport = type == reply ? id : 0;
}

/* Ports (and TCP flags, ICMP type) of the L4 header at `off`. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct tuple *t,
				    __u8 *tcp_flags, __u8 *icmp_type, __u8 *icmp_code)
{
	switch (t->protocol) {
	case IPPROTO_TCP: {
		__u8 h[14];

		if (load(skb, off, h, sizeof(h)) < 0)
			return PARSE_INVALID;
		__builtin_memcpy(&t->sport, &h[0], 2);
		__builtin_memcpy(&t->dport, &h[2], 2);
		*tcp_flags = h[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
	case IPPROTO_UDPLITE: {
		__be16 ports[2];

		if (load(skb, off, ports, sizeof(ports)) < 0)
			return PARSE_INVALID;
		t->sport = ports[0];
		t->dport = ports[1];
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 h[8];

		if (!is_icmp(t->family, t->protocol))
			return PARSE_OK;
		if (load(skb, off, h, sizeof(h)) < 0)
			return PARSE_INVALID;
		__be16 id;

		*icmp_type = h[0];
		*icmp_code = h[1];
		__builtin_memcpy(&id, &h[4], 2);
		icmp_ports(t, h[0], id);
		return PARSE_OK;
	}
	default:
		return PARSE_OK;
	}
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u8 family;
	int ret;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		family = IPCACHE_FAMILY_IPV4;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		family = IPCACHE_FAMILY_IPV6;
	else
		return PARSE_NOT_IP;
	ret = parse_l3(skb, 0, family, &p->t, &p->l4_off, &p->nonfirst_frag);
	if (ret != PARSE_OK || p->nonfirst_frag)
		return ret;
	return parse_l4(skb, p->l4_off, &p->t, &p->tcp_flags, &p->icmp_type, &p->icmp_code);
}

/* ---- counters ------------------------------------------------------------------------------ */

static __always_inline void count(__u32 reason, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(&polc_counters, &reason);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

static __always_inline void account(const struct stats_key *k, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(&polc_stats, k);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	} else {
		struct counter n = { .packets = 1, .bytes = len };

		bpf_map_update_elem(&polc_stats, k, &n, BPF_NOEXIST);
	}
}

/* ---- conntrack ----------------------------------------------------------------------------- */

static __always_inline void ct_key_of(struct ct_key *k, const struct tuple *t, __u16 ep, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->endpoint_id = ep;
	k->family = t->family;
	k->protocol = t->protocol;
	k->dir = dir;
	k->sport = t->sport;
	k->dport = t->dport;
	__builtin_memcpy(k->saddr, t->saddr, 16);
	__builtin_memcpy(k->daddr, t->daddr, 16);
}

static __always_inline void ct_key_reversed(struct ct_key *k, const struct tuple *t, __u16 ep,
					    __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->endpoint_id = ep;
	k->family = t->family;
	k->protocol = t->protocol;
	k->dir = dir ^ 1;
	k->sport = t->dport;
	k->dport = t->sport;
	__builtin_memcpy(k->saddr, t->daddr, 16);
	__builtin_memcpy(k->daddr, t->saddr, 16);
}

static __always_inline __u64 ct_lifetime(__u8 protocol, __u32 flags)
{
	if (protocol != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP_S * NSEC_PER_SEC;
	if ((flags & CT_F_RST) || ((flags & CT_F_FIN_FWD) && (flags & CT_F_FIN_REV)))
		return CT_LIFETIME_CLOSE_S * NSEC_PER_SEC;
	if (flags & CT_F_SEEN_REPLY)
		return CT_LIFETIME_TCP_S * NSEC_PER_SEC;
	return CT_LIFETIME_TCP_SYN_S * NSEC_PER_SEC;
}

/* A live entry for `k`, or NULL (expired entries are removed). */
static __always_inline struct ct_entry *ct_get(struct ct_key *k, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&polc_ct, k);

	if (e && e->expires < now) {
		bpf_map_delete_elem(&polc_ct, k);
		return NULL;
	}
	return e;
}

static __always_inline void ct_touch(struct ct_entry *e, const struct pkt *p, int reply, __u64 now,
				     __u32 len)
{
	__u32 flags = e->flags;

	if (reply)
		flags |= CT_F_SEEN_REPLY;
	if (p->tcp_flags & TCP_FLAG_RST)
		flags |= CT_F_RST;
	if (p->tcp_flags & TCP_FLAG_FIN)
		flags |= reply ? CT_F_FIN_REV : CT_F_FIN_FWD;
	if (flags != e->flags)
		e->flags = flags;
	e->expires = now + ct_lifetime(p->t.protocol, flags);
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, len);
	account(&e->entry, len);
}

/* The tuple of the packet an ICMP error carries, with ports as conntrack keys them. */
static __always_inline int icmp_inner_tuple(struct __sk_buff *skb, const struct pkt *p,
					    struct tuple *inner)
{
	__u32 l4_off = 0;
	__u8 frag = 0, tcp_flags = 0, type = 0, code = 0;

	if (parse_l3(skb, p->l4_off + 8, p->t.family, inner, &l4_off, &frag) != PARSE_OK || frag)
		return -1;
	/* ICMP errors quote at least 8 bytes of L4: enough for ports and the echo identifier. */
	if (inner->protocol == IPPROTO_TCP) {
		__be16 ports[2];

		if (load(skb, l4_off, ports, sizeof(ports)) < 0)
			return -1;
		inner->sport = ports[0];
		inner->dport = ports[1];
		return 0;
	}
	if (parse_l4(skb, l4_off, inner, &tcp_flags, &type, &code) != PARSE_OK)
		return -1;
	return 0;
}

static __always_inline int is_icmp_error(const struct pkt *p)
{
	if (p->t.family == IPCACHE_FAMILY_IPV4)
		return p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_TIME_EXCEEDED ||
		       p->icmp_type == ICMP_PARAMETERPROB || p->icmp_type == ICMP_REDIRECT;
	return p->icmp_type == ICMPV6_DEST_UNREACH || p->icmp_type == ICMPV6_PKT_TOOBIG ||
	       p->icmp_type == ICMPV6_TIME_EXCEED || p->icmp_type == ICMPV6_PARAMPROB;
}

/* ---- identities and policy ----------------------------------------------------------------- */

static __always_inline __u32 identity_of(const __u8 *addr, __u8 family)
{
	struct ipcache_key k;
	struct remote_endpoint_info *info;

	__builtin_memset(&k, 0, sizeof(k));
	k.family = family;
	if (family == IPCACHE_FAMILY_IPV4) {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 32;
		__builtin_memcpy(k.addr, addr, 4);
	} else {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	info = bpf_map_lookup_elem(&polc_ipcache, &k);
	if (!info || info->sec_identity == 0)
		return WORLD_ID;
	return info->sec_identity;
}

static __always_inline __u8 entry_prefix(const struct policy_entry *e)
{
	return e->flags >> POLICY_PREFIX_SHIFT;
}

/*
 * Cilium 1.19's lookup (bpf/lib/policy.h): the peer's identity, then identity 0. Returns the
 * chosen entry and sets `*any` when it is the identity-0 one.
 */
static __always_inline struct policy_entry *policy_lookup(void *map, __u32 identity, __u8 dir,
							  __u8 protocol, __be16 dport, int *any)
{
	struct policy_key k = {
		.prefixlen = POLICY_FULL_PREFIX,
		.sec_label = identity,
		.egress = dir,
		.protocol = protocol,
		.dport = dport,
	};
	struct policy_entry *l3, *l4;

	*any = 0;
	l3 = bpf_map_lookup_elem(map, &k);
	if (l3 && l3->precedence == POLICY_MAX_PRECEDENCE)
		return l3;
	k.sec_label = 0;
	l4 = bpf_map_lookup_elem(map, &k);
	if (!l4)
		return l3;
	if (!l3 || l4->precedence > l3->precedence ||
	    (l4->precedence == l3->precedence && entry_prefix(l4) > entry_prefix(l3))) {
		*any = 1;
		return l4;
	}
	return l3;
}

/* The polc_stats key of the entry a lookup chose: the key it was stored under. */
static __always_inline void stats_key_of(struct stats_key *s, __u16 ep, __u32 identity, __u8 dir,
					 __u8 protocol, __be16 dport, __u8 prefix)
{
	__builtin_memset(s, 0, sizeof(*s));
	s->endpoint_id = ep;
	s->prefix_len = prefix;
	s->sec_label = identity;
	s->egress = dir;
	if (prefix >= 8)
		s->protocol = protocol;
	if (prefix > 8) {
		__u16 bits = prefix - 8;
		__u16 mask = bits >= 16 ? 0xffff : (__u16)(0xffff << (16 - bits));

		s->dport = dport & bpf_htons(mask);
	}
}

/* ---- the L7 proxy's sockets ---------------------------------------------------------------- */

/*
 * A 32-bit field of a socket, read with one load at its offset from the socket pointer: the
 * verifier refuses arithmetic on socket pointers, which clang otherwise emits for nearby
 * fields. `tail` ends the TCP and the UDP variant differently (a no-op move in one), so clang
 * cannot merge the two into one instruction: the verifier refuses a load used with both a
 * sock_common (TCP lookups) and a full socket (UDP lookups).
 */
#define sock_field(sk, field, tail)                                                            \
	({                                                                                     \
		__u32 __v;                                                                     \
		asm volatile("%[v] = *(u32 *)(%[s] + %[o])" tail                              \
			     : [v] "=r"(__v)                                                   \
			     : [s] "r"(sk), [o] "i"(__builtin_offsetof(struct bpf_sock, field))); \
		__v;                                                                           \
	})
#define SOCK_TCP ""
#define SOCK_UDP "\n\t%[v] = %[v]"

/* Whether `sk` is the socket of the packet's own connection: not a listener, bound to
 * exactly the packet's destination address (not a wildcard) and connected to its source (so
 * a socket the proxy binds to a server's address to answer one client never takes another
 * client's query). */
#define sock_owns(sk, t, tail)                                                                 \
	({                                                                                     \
		__u32 __d[4], __s[4];                                                          \
		int __own = 0;                                                                 \
                                                                                               \
		__builtin_memcpy(__d, (t)->daddr, 16);                                         \
		__builtin_memcpy(__s, (t)->saddr, 16);                                         \
		if (sock_field(sk, state, tail) != BPF_TCP_LISTEN &&                           \
		    (sock_field(sk, dst_port, tail) & 0xffff) == (t)->sport) {                  \
			if ((t)->family == IPCACHE_FAMILY_IPV4)                                \
				__own = sock_field(sk, src_ip4, tail) == __d[0] &&             \
					sock_field(sk, dst_ip4, tail) == __s[0];               \
			else                                                                   \
				__own = sock_field(sk, src_ip6[0], tail) == __d[0] &&          \
					sock_field(sk, src_ip6[1], tail) == __d[1] &&          \
					sock_field(sk, src_ip6[2], tail) == __d[2] &&          \
					sock_field(sk, src_ip6[3], tail) == __d[3] &&          \
					sock_field(sk, dst_ip6[0], tail) == __s[0] &&          \
					sock_field(sk, dst_ip6[1], tail) == __s[1] &&          \
					sock_field(sk, dst_ip6[2], tail) == __s[2] &&          \
					sock_field(sk, dst_ip6[3], tail) == __s[3];            \
		}                                                                              \
		__own;                                                                         \
	})

/*
 * The proxy socket for a packet: the socket of its own connection (see sock_owns), else, when
 * `proxy_port` is not 0, the listener on that port (looked up with the port in the tuple).
 * Hands the packet to it; 1 when done, 0 when there is no socket and no port, -1 otherwise.
 */
#define steer_with(skb, bt, size, t, proxy_port, lookup, tail)                                 \
	({                                                                                     \
		struct bpf_sock *__sk = lookup(skb, bt, size, BPF_F_CURRENT_NETNS, 0);         \
		int __r = -1;                                                                  \
                                                                                               \
		if (__sk && !sock_owns(__sk, t, tail)) {                                       \
			bpf_sk_release(__sk);                                                  \
			__sk = NULL;                                                           \
		}                                                                              \
		if (!__sk && proxy_port) {                                                     \
			if ((t)->family == IPCACHE_FAMILY_IPV4)                                \
				(bt)->ipv4.dport = bpf_htons(proxy_port);                      \
			else                                                                   \
				(bt)->ipv6.dport = bpf_htons(proxy_port);                      \
			__sk = lookup(skb, bt, size, BPF_F_CURRENT_NETNS, 0);                  \
		}                                                                              \
		if (__sk) {                                                                    \
			if (bpf_sk_assign(skb, __sk, 0) == 0)                                  \
				__r = 1;                                                       \
			bpf_sk_release(__sk);                                                  \
		} else if (!proxy_port) {                                                      \
			__r = 0;                                                               \
		}                                                                              \
		__r;                                                                           \
	})

/* Whether a local socket owns the packet (see sock_owns), for the egress hook. */
#define owned_with(skb, bt, size, t, lookup, tail)                                             \
	({                                                                                     \
		struct bpf_sock *__sk = lookup(skb, bt, size, BPF_F_CURRENT_NETNS, 0);         \
		int __o = 0;                                                                   \
                                                                                               \
		if (__sk) {                                                                    \
			__o = sock_owns(__sk, t, tail);                                        \
			bpf_sk_release(__sk);                                                  \
		}                                                                              \
		__o;                                                                           \
	})

/* The lookup tuple of a TCP or UDP packet; its size. */
static __always_inline __u32 sock_tuple_of(struct bpf_sock_tuple *bt, const struct tuple *t)
{
	__builtin_memset(bt, 0, sizeof(*bt));
	if (t->family == IPCACHE_FAMILY_IPV4) {
		__builtin_memcpy(&bt->ipv4.saddr, t->saddr, 4);
		__builtin_memcpy(&bt->ipv4.daddr, t->daddr, 4);
		bt->ipv4.sport = t->sport;
		bt->ipv4.dport = t->dport;
		return sizeof(bt->ipv4);
	}
	__builtin_memcpy(bt->ipv6.saddr, t->saddr, 16);
	__builtin_memcpy(bt->ipv6.daddr, t->daddr, 16);
	bt->ipv6.sport = t->sport;
	bt->ipv6.dport = t->dport;
	return sizeof(bt->ipv6);
}

/*
 * Whether a socket of this node's network namespace owns a packet the node is sending out:
 * one proxy's connection to another proxy on the same node (an egress proxy's upstream
 * connection, kept on the client's address, to an endpoint whose ingress is proxied too).
 * Routing sends such a packet towards the client's device; it belongs to the local socket.
 */
static __always_inline int owned_locally(struct __sk_buff *skb, const struct tuple *t)
{
	struct bpf_sock_tuple bt;
	__u32 size;

	if (t->protocol != IPPROTO_TCP && t->protocol != IPPROTO_UDP)
		return 0;
	size = sock_tuple_of(&bt, t);
	if (t->protocol == IPPROTO_TCP)
		return owned_with(skb, &bt, size, t, bpf_skc_lookup_tcp, SOCK_TCP);
	return owned_with(skb, &bt, size, t, bpf_sk_lookup_udp, SOCK_UDP);
}

/*
 * Hands a TCP or UDP packet on a TC ingress hook to a local socket of the proxy (steer_with).
 * Returns 1 when a socket took the packet (marked TO_PROXY), 0 when none was found and no
 * proxy port was given, -1 when none was found for a proxy port or the kernel refused.
 */
static __always_inline int steer(struct __sk_buff *skb, const struct tuple *t, __u16 proxy_port)
{
	struct bpf_sock_tuple bt;
	__u32 size;
	int ret;

	if (t->protocol != IPPROTO_TCP && t->protocol != IPPROTO_UDP)
		return proxy_port ? -1 : 0;
	size = sock_tuple_of(&bt, t);
	/* TCP: skc_lookup also finds connections still in their handshake (request sockets). */
	if (t->protocol == IPPROTO_TCP)
		ret = steer_with(skb, &bt, size, t, proxy_port, bpf_skc_lookup_tcp, SOCK_TCP);
	else
		ret = steer_with(skb, &bt, size, t, proxy_port, bpf_sk_lookup_udp, SOCK_UDP);
	if (ret > 0)
		skb->mark = MARK_MAGIC_TO_PROXY;
	return ret;
}

/* Turns a packet on an egress hook around to the device's ingress, for the proxy on `port`. */
static __always_inline int hairpin(struct __sk_buff *skb, __u16 port, __u32 len)
{
	__u8 macs[12], swapped[12];

	/* Received on this device, the frame must be addressed to it (or the stack drops it as
	 * another host's): what it sends comes from its own address, so swap the two. */
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0) {
		count(REASON_DROP_INVALID, len);
		return DROP;
	}
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);
	if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0) {
		count(REASON_DROP_INVALID, len);
		return DROP;
	}
	skb->mark = MARK_MAGIC_TO_PROXY | ((__u32)port << 16);
	count(REASON_PASS_TO_PROXY, len);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* ---- the classifier ------------------------------------------------------------------------ */

static __always_inline int handle(struct __sk_buff *skb, int tc_ingress)
{
	__u32 ifindex = skb->ifindex;
	__u32 len = skb->len;
	struct iface_info *iface;
	struct pkt p;
	struct ct_key ck;
	struct ct_entry *ce;
	struct policy_entry *entry;
	struct stats_key sk;
	void *map;
	__u64 now;
	__u32 ep_key, identity;
	__be16 dport;
	__u8 dir;
	int any, ret;

	iface = bpf_map_lookup_elem(&polc_ifaces, &ifindex);
	if (!iface) {
		count(REASON_PASS_UNMANAGED, len);
		return PASS;
	}
#ifdef POLC_REJECTED_BY_VERIFIER
	/* Only in bpf/tests/rejected.c: a read past the 4-byte value. */
	if (((volatile __u8 *)iface)[64] == 1)
		return DROP;
#endif
	/* Node-side veth: TC ingress is the endpoint's egress. */
	dir = tc_ingress ? DIR_EGRESS : DIR_INGRESS;
	if (iface->flags & IFACE_F_ENDPOINT_SIDE)
		dir ^= 1;

	__builtin_memset(&p, 0, sizeof(p));
	ret = parse(skb, &p);
	if (ret == PARSE_NOT_IP) {
		count(REASON_PASS_NOT_IP, len);
		return PASS;
	}
	if (ret != PARSE_OK) {
		count(REASON_DROP_INVALID, len);
		return DROP;
	}

	if (tc_ingress && !p.nonfirst_frag) {
		__u16 port = 0;

		/* Turned around by the egress hook for the ingress proxy: the port is in the mark. */
		if ((skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_TO_PROXY)
			port = skb->mark >> 16;
		ret = steer(skb, &p.t, port);
		if (ret > 0) {
			count(REASON_PASS_TO_PROXY, len);
			return TC_ACT_OK;
		}
		if (ret < 0) {
			count(REASON_DROP_PROXY, len);
			return DROP;
		}
	}
	if (!tc_ingress && !p.nonfirst_frag && owned_locally(skb, &p.t)) {
		/* Turned around to this device's ingress, where steer() hands it to its socket. */
		return hairpin(skb, 0, len);
	}
	if (iface->flags & IFACE_F_UPLINK) {
		count(REASON_PASS_UNMANAGED, len);
		return PASS;
	}

	if (is_icmp(p.t.family, p.t.protocol) && !p.nonfirst_frag) {
		if ((p.t.family == IPCACHE_FAMILY_IPV6 && p.icmp_type >= ICMPV6_NDISC_FIRST &&
		     p.icmp_type <= ICMPV6_NDISC_LAST) ||
		    (p.t.family == IPCACHE_FAMILY_IPV6 && p.t.daddr[0] == 0xff &&
		     ((p.icmp_type >= ICMPV6_MLD_QUERY && p.icmp_type <= ICMPV6_MLD_DONE) ||
		      p.icmp_type == ICMPV6_MLD2_REPORT)) ||
		    (p.t.family == IPCACHE_FAMILY_IPV4 && p.icmp_type == ICMP_DEST_UNREACH &&
		     p.icmp_code == ICMP_FRAG_NEEDED)) {
			count(REASON_PASS_ICMP_IMPLICIT, len);
			return PASS;
		}
	}

	now = bpf_ktime_get_ns();
	if (!p.nonfirst_frag) {
		ct_key_of(&ck, &p.t, iface->endpoint_id, dir);
		ce = ct_get(&ck, now);
		if (ce) {
			__u16 port = ce->flags >> CT_F_PROXY_PORT_SHIFT;

			ct_touch(ce, &p, 0, now, len);
			if (ce->flags & CT_F_REDIRECT && port) {
				if (!tc_ingress)
					return hairpin(skb, port, len);
				if (steer(skb, &p.t, port) > 0) {
					count(REASON_PASS_TO_PROXY, len);
					return TC_ACT_OK;
				}
				count(REASON_DROP_PROXY, len);
				return DROP;
			}
			count(REASON_PASS_CT_ESTABLISHED, len);
			return PASS;
		}
		ct_key_reversed(&ck, &p.t, iface->endpoint_id, dir);
		ce = ct_get(&ck, now);
		if (ce) {
			ct_touch(ce, &p, 1, now, len);
			count(REASON_PASS_CT_REPLY, len);
			return PASS;
		}
		if (is_icmp(p.t.family, p.t.protocol) && is_icmp_error(&p)) {
			struct tuple inner;

			__builtin_memset(&inner, 0, sizeof(inner));
			if (icmp_inner_tuple(skb, &p, &inner) == 0) {
				/* The quoted packet travelled the other way. */
				ct_key_of(&ck, &inner, iface->endpoint_id, dir ^ 1);
				ce = ct_get(&ck, now);
				if (ce) {
					count(REASON_PASS_CT_RELATED, len);
					return PASS;
				}
			}
		}
	}

	if (!tc_ingress && dir == DIR_INGRESS && !p.nonfirst_frag &&
	    (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_PROXY_INGRESS) {
		/* The ingress proxy forwarding a request it allowed: tracked, no policy. */
		struct ct_entry n;

		__builtin_memset(&n, 0, sizeof(n));
		n.expires = now + ct_lifetime(p.t.protocol, 0);
		n.packets = 1;
		n.bytes = len;
		ct_key_of(&ck, &p.t, iface->endpoint_id, dir);
		bpf_map_update_elem(&polc_ct, &ck, &n, BPF_ANY);
		count(REASON_PASS_FROM_PROXY, len);
		return PASS;
	}

	ep_key = iface->endpoint_id;
	map = bpf_map_lookup_elem(&polc_policy, &ep_key);
	if (!map) {
		count(REASON_PASS_UNMANAGED, len);
		return PASS;
	}
	identity = identity_of(dir == DIR_EGRESS ? p.t.daddr : p.t.saddr, p.t.family);
	if (p.nonfirst_frag)
		dport = 0;
	else if (is_icmp(p.t.family, p.t.protocol))
		dport = bpf_htons((__u16)p.icmp_type);
	else
		dport = p.t.dport;

	entry = policy_lookup(map, identity, dir, p.t.protocol, dport, &any);
	if (!entry) {
		count(REASON_DROP_POLICY, len);
		return DROP;
	}
	stats_key_of(&sk, iface->endpoint_id, any ? 0 : identity, dir, p.t.protocol, dport,
		     entry_prefix(entry));
	account(&sk, len);
	if (entry->flags & POLICY_FLAG_DENY) {
		count(REASON_DROP_POLICY_DENY, len);
		return DROP;
	}
	if (p.nonfirst_frag) {
		/* Without the L4 header only entries that cover every port can allow. */
		if (entry_prefix(entry) > 8) {
			count(REASON_DROP_FRAG_NOSUPPORT, len);
			return DROP;
		}
	} else if (!is_icmp(p.t.family, p.t.protocol) ||
		   p.icmp_type == (p.t.family == IPCACHE_FAMILY_IPV4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST)) {
		/* Flows are tracked; ICMP only for echo (errors are matched as related). */
		struct ct_entry n;
		__u16 proxy = bpf_ntohs(entry->proxy_port);
		int to_proxy = proxy && (p.t.protocol == IPPROTO_TCP || p.t.protocol == IPPROTO_UDP);

		if (to_proxy && tc_ingress && steer(skb, &p.t, proxy) <= 0) {
			/* No proxy listens: fail closed, and track nothing. */
			count(REASON_DROP_PROXY, len);
			return DROP;
		}
		__builtin_memset(&n, 0, sizeof(n));
		n.flags = proxy ? CT_F_REDIRECT | ((__u32)proxy << CT_F_PROXY_PORT_SHIFT) : 0;
		if (p.tcp_flags & TCP_FLAG_RST)
			n.flags |= CT_F_RST;
		n.expires = now + ct_lifetime(p.t.protocol, n.flags);
		n.packets = 1;
		n.bytes = len;
		n.entry = sk;
		ct_key_of(&ck, &p.t, iface->endpoint_id, dir);
		bpf_map_update_elem(&polc_ct, &ck, &n, BPF_ANY);
		if (to_proxy) {
			if (!tc_ingress)
				return hairpin(skb, proxy, len);
			count(REASON_PASS_TO_PROXY, len);
			return TC_ACT_OK;
		}
	}
	if (entry->proxy_port)
		count(REASON_PASS_REDIRECT, len);
	else if (entry->auth & POLICY_AUTH_TYPE_MASK)
		count(REASON_PASS_AUTH, len);
	else
		count(REASON_PASS_POLICY, len);
	return PASS;
}

SEC("classifier")
int polc_tc_ingress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("classifier")
int polc_tc_egress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}
