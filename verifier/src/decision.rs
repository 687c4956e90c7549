//! The whole verdict of a flow as one z3 formula: the source's egress and the destination's
//! ingress, each as `compiler::eval` decides it (policy-language §4):
//!
//! ```text
//! side(x, dir) = ¬deny(x, dir) ∧ (localhost ∨ ¬enforced(x, dir) ∨ allow(x, dir))
//! ```
//!
//! where `deny` and `allow` are the disjunctions, over the rules, of "the rule selects `x`
//! and one of its items in `dir` matches the remote end, protocol and port", `enforced` says
//! some rule selecting `x` puts `dir` into default-deny, and `localhost` is the local host
//! reaching a pod on ingress. With a request, an allow item matches only when, on the
//! flow's port, it has no redirect or its L7 rules allow the request (the union of §4.3).
//!
//! What the flow encoding cannot express (named ports, FQDN peers, IPv6 prefixes, most
//! entities, reserved-label selectors, `fromRequires`, host policies) becomes a fresh,
//! unconstrained boolean, noted in [`Encoder::approximations`]: an answer that holds for
//! every value of those holds, and an example that depends on them is only believed after
//! `eval` has replayed it.

use crate::flow::{self, Encoded, FlowVars, KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD};
use polc_compiler::eval::{self, Request};
use polc_compiler::ir::{
    Direction, DnsRule, Entity, HttpRule, Item, L7, PeerKind, Peers, PerDir, PolicySet, PortRule,
    Ports, Redirect, Rule, Selector, Subject,
};
use std::collections::BTreeMap;
use z3::ast::{Bool, Regexp, String as Str};

/// Which ends of a flow are pods (with the endpoint `x` being the pod, or the source when
/// both are), and the kind of the other end otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Pod `x` to pod `p`.
    PodToPod,
    /// Pod `x` to an end of the given kind (world, host, remote node).
    PodToOutside(u64),
    /// An end of the given kind to pod `x`.
    OutsideToPod(u64),
}

/// A symbolic HTTP request: method, path, host, and per header name whether it is present
/// and its value.
pub struct HttpVars {
    /// Method.
    pub method: Str,
    /// Path.
    pub path: Str,
    /// Host.
    pub host: Str,
    /// Headers by lower-case name.
    pub headers: BTreeMap<String, (Bool, Str)>,
}

impl Default for HttpVars {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpVars {
    /// Fresh variables.
    pub fn new() -> Self {
        HttpVars {
            method: Str::new_const("http:method"),
            path: Str::new_const("http:path"),
            host: Str::new_const("http:host"),
            headers: BTreeMap::new(),
        }
    }

    fn header(&mut self, name: &str) -> (Bool, Str) {
        let name = name.to_ascii_lowercase();
        self.headers
            .entry(name.clone())
            .or_insert_with(|| {
                (
                    Bool::new_const(format!("http:has:{name}")),
                    Str::new_const(format!("http:hdr:{name}")),
                )
            })
            .clone()
    }

    /// The fields are text a request can carry (call after encoding).
    pub fn well_formed(&self) -> Bool {
        let text = crate::regex::alphabet().star();
        let nonempty = crate::regex::alphabet().plus();
        let mut parts = vec![
            self.method.regex_matches(&nonempty),
            self.path.regex_matches(&text),
            self.host.regex_matches(&text),
        ];
        parts.extend(self.headers.values().map(|(_, v)| v.regex_matches(&text)));
        Bool::and(&parts)
    }

    /// The request a model gives.
    pub fn request(&self, m: &z3::Model) -> Option<Request> {
        let text = |s: &Str| m.eval(s, true).and_then(|v| v.as_string());
        let mut headers = Vec::new();
        for (name, (has, val)) in &self.headers {
            if m.eval(has, true)?.as_bool()? {
                headers.push((name.clone(), text(val)?));
            }
        }
        Some(Request::Http {
            method: text(&self.method)?,
            path: text(&self.path)?,
            host: text(&self.host)?,
            headers,
        })
    }
}

/// A symbolic DNS query: the name asked for, in the form the proxy compares (lower case,
/// with a trailing dot).
pub struct DnsVars {
    /// The name.
    pub query: Str,
}

impl Default for DnsVars {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsVars {
    /// A fresh variable.
    pub fn new() -> Self {
        DnsVars {
            query: Str::new_const("dns:query"),
        }
    }

    /// The query is a name as the proxy compares it: DNS characters and dots, ending with a
    /// dot (so that the evaluator, which lower-cases and adds the dot, sees the same name).
    pub fn well_formed(&self) -> Bool {
        let chars = Regexp::union(&[dns_char(), Regexp::literal(".")]);
        self.query
            .regex_matches(&Regexp::concat(&[chars.star(), Regexp::literal(".")]))
    }

    /// The query begins with a letter or digit (a preference for examples, which otherwise
    /// tend to names like `.example.com.`; names beginning with `_` are valid too).
    pub fn plain(&self) -> Bool {
        let alnum = Regexp::union(&[Regexp::range(&'a', &'z'), Regexp::range(&'0', &'9')]);
        let chars = Regexp::union(&[dns_char(), Regexp::literal(".")]);
        self.query
            .regex_matches(&Regexp::concat(&[alnum, chars.star()]))
    }

    /// The request a model gives.
    pub fn request(&self, m: &z3::Model) -> Option<Request> {
        let query = m.eval(&self.query, true).and_then(|v| v.as_string())?;
        Some(Request::Dns { query })
    }
}

/// One character of a DNS label as `matchPattern` sees it: `[-a-z0-9_]`.
fn dns_char() -> Regexp {
    Regexp::union(&[
        Regexp::range(&'a', &'z'),
        Regexp::range(&'0', &'9'),
        Regexp::literal("-"),
        Regexp::literal("_"),
    ])
}

/// What a DNS rule allows, over the symbolic name (the mirror of `eval::pattern_matches`):
/// `matchName` the name itself; in `matchPattern`, `*` alone every name, a leading `**.` one
/// or more labels, any other `*` zero or more DNS characters within one label.
fn dns_rule_matches(rule: &DnsRule, query: &Str) -> Bool {
    let pattern = match rule {
        DnsRule::Name(name, _) => return query.eq(Str::from(eval::fqdn(name).as_str())),
        DnsRule::Pattern(p, _) => eval::fqdn(p),
    };
    if pattern.trim_end_matches('.').chars().all(|c| c == '*') {
        return Bool::from_bool(true);
    }
    let mut parts = Vec::new();
    let mut rest = pattern.as_str();
    if let Some(stripped) = rest.strip_prefix("**.") {
        parts.push(Regexp::concat(&[dns_char().plus(), Regexp::literal(".")]).plus());
        rest = stripped;
    }
    let mut literal = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '*' {
            literal.push(c);
            continue;
        }
        while chars.peek() == Some(&'*') {
            chars.next();
        }
        if !literal.is_empty() {
            parts.push(Regexp::literal(&std::mem::take(&mut literal)));
        }
        parts.push(dns_char().star());
    }
    if !literal.is_empty() {
        parts.push(Regexp::literal(&literal));
    }
    query.regex_matches(&Regexp::concat(&parts))
}

/// The request a flow carries, as far as the L7 rules are concerned.
pub enum Req<'a> {
    /// None: the flow is judged at L4 (a redirected port counts as allowed).
    None,
    /// A given request.
    Concrete(&'a Request),
    /// Any HTTP request.
    Http(&'a mut HttpVars),
    /// Any DNS query.
    Dns(&'a DnsVars),
}

/// Builds the verdict formulas of one policy set.
pub struct Encoder<'a> {
    set: &'a PolicySet,
    allow_localhost: bool,
    tag: String,
    free: Vec<Bool>,
    approximations: Vec<String>,
    /// The namespaces of the flow's source and destination pods, when fixed.
    namespaces: (Option<String>, Option<String>),
    /// Per direction: whether what this encoder leaves free about host policies, and about
    /// `fromRequires`/`toRequires`, is the same fact as for another encoder's set (see
    /// [`Encoder::share`]).
    shared: PerDir<Shared>,
}

/// Which free facts of one direction two encoders share.
#[derive(Clone, Copy, Default)]
pub struct Shared {
    /// The host policies of the direction are the same in both sets.
    pub host: bool,
    /// The `fromRequires`/`toRequires` of the direction are the same in both sets.
    pub requires: bool,
}

impl<'a> Encoder<'a> {
    /// An encoder for `set`; `tag` keeps its fresh variables apart from another encoder's.
    pub fn new(set: &'a PolicySet, tag: &str) -> Self {
        Encoder {
            set,
            allow_localhost: true,
            tag: tag.to_string(),
            free: Vec::new(),
            approximations: Vec::new(),
            namespaces: (None, None),
            shared: PerDir::default(),
        }
    }

    /// Declares that in direction `dir` this encoder's set and another's have the same host
    /// policies, or the same `fromRequires`/`toRequires`: the free booleans standing for
    /// their decisions are then one variable in both encodings, so that two sets alike in
    /// them cannot seem to differ through them.
    pub fn share(&mut self, dir: Direction, shared: Shared) {
        *self.shared.get_mut(dir) = shared;
    }

    /// What the encoding had to leave free, for people (empty: the encoding is exact).
    pub fn approximations(&self) -> &[String] {
        &self.approximations
    }

    /// The free booleans false: how the reference evaluator sees what they stand for in a
    /// cluster built from an example (no DNS answers, no declared named ports, no special
    /// endpoints). Solvers prefer examples where these hold, because those replay.
    pub fn defaults(&self) -> Vec<Bool> {
        self.free.iter().map(Bool::not).collect()
    }

    /// Fixes the namespaces of the flow's source and destination pods (`None`: any), so
    /// that rules pinned to other namespaces are left out of the formulas.
    pub fn namespaces(&mut self, src: Option<&str>, dst: Option<&str>) {
        self.namespaces = (src.map(str::to_string), dst.map(str::to_string));
    }

    /// A free boolean. With a `key` (what it stands for, as a fact about the flow: "the
    /// destination's port named `http` is this port"), encoders share it, so two policy sets
    /// that both name the same thing agree on it; without one it is this encoder's own.
    fn free(&mut self, why: String, key: Option<String>) -> Bool {
        if !self.approximations.contains(&why) {
            self.approximations.push(why);
        }
        let name = match key {
            Some(k) => format!("free:{k}"),
            None => format!("{}:free:{}", self.tag, self.free.len()),
        };
        let b = Bool::new_const(name);
        if !self.free.contains(&b) {
            self.free.push(b.clone());
        }
        b
    }

    /// Whether the flow is allowed.
    pub fn allowed(&mut self, v: &mut FlowVars, shape: Shape, req: &mut Req<'_>) -> Bool {
        match shape {
            Shape::PodToPod => {
                let egress = self.side(v, Direction::Egress, req);
                v.swap_ends();
                let ingress = self.side(v, Direction::Ingress, req);
                v.swap_ends();
                Bool::and(&[egress, ingress])
            }
            Shape::PodToOutside(kind) => {
                let egress = self.side(v, Direction::Egress, req);
                let host = self.host_side(kind, Direction::Ingress);
                Bool::and(&[egress, host])
            }
            Shape::OutsideToPod(kind) => {
                let ingress = self.side(v, Direction::Ingress, req);
                let host = self.host_side(kind, Direction::Egress);
                Bool::and(&[ingress, host])
            }
        }
    }

    /// A host end's own decision: free when host policies could apply to it.
    fn host_side(&mut self, kind: u64, dir: Direction) -> Bool {
        let host_policies = self
            .set
            .rules
            .iter()
            .any(|r| matches!(r.subject, Subject::Nodes(_)) && r.has_direction(dir));
        if kind >= KIND_HOST && host_policies {
            let key = self.shared.get(dir).host.then(|| {
                format!(
                    "host:{}:{}",
                    dir.name(),
                    if kind == KIND_HOST { "local" } else { "remote" }
                )
            });
            self.free(
                "host policies (the hosts' labels are not modelled)".into(),
                key,
            )
        } else {
            Bool::from_bool(true)
        }
    }

    /// The rules that can select the pod at the `dir` end of a flow (with `dir` egress, the
    /// source): pod rules, less those pinned to another namespace than the pod's, when fixed.
    fn rules_at(&self, dir: Direction) -> impl Iterator<Item = (&'a Rule, &'a Selector)> + '_ {
        let ns = match dir {
            Direction::Egress => self.namespaces.0.as_deref(),
            Direction::Ingress => self.namespaces.1.as_deref(),
        };
        self.set.rules.iter().filter_map(move |rule| {
            let Subject::Endpoints(sel) = &rule.subject else {
                return None;
            };
            match (ns, sel.pinned("io.kubernetes.pod.namespace")) {
                (Some(want), Some(pinned)) if want != pinned => None,
                _ => Some((&**rule, sel)),
            }
        })
    }

    /// The decisions of the L7 rules `request` meets in the formulas of [`Encoder::allowed`]
    /// for `shape` (the namespaces fixed as they are now): the formulas depend on the request
    /// only through these, so two requests with the same decisions get the same answers.
    pub fn l7_decisions(&self, shape: Shape, request: &Request) -> Vec<bool> {
        let dirs: &[Direction] = match shape {
            Shape::PodToPod => &[Direction::Egress, Direction::Ingress],
            Shape::PodToOutside(_) => &[Direction::Egress],
            Shape::OutsideToPod(_) => &[Direction::Ingress],
        };
        let mut out = Vec::new();
        for &dir in dirs {
            for (rule, _) in self.rules_at(dir) {
                for item in rule.items.iter().filter(|i| i.direction == dir && !i.deny) {
                    let Ports::List(ports) = &item.ports else {
                        continue;
                    };
                    for p in ports {
                        if let Some(Redirect::L7(l7)) = &p.redirect {
                            out.push(eval::l7_allows(l7, request));
                        }
                    }
                }
            }
        }
        out
    }

    /// The decision at the endpoint `x` of `v` in one direction.
    fn side(&mut self, v: &mut FlowVars, dir: Direction, req: &mut Req<'_>) -> Bool {
        let requires = self
            .set
            .rules
            .iter()
            .any(|r| !r.requires.get(dir).is_empty());
        let with_request = !matches!(req, Req::None);
        let (mut deny, mut allow, mut allow_l4, mut enforced) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let rules: Vec<_> = self.rules_at(dir).collect();
        for (rule, sel) in rules {
            // The endpoint is a pod, which carries no reserved labels: exact.
            let selected = flow::requirements(&mut v.x, &sel.reqs);
            if rule.default_deny(dir) {
                enforced.push(selected.clone());
            }
            for item in rule.items.iter().filter(|i| i.direction == dir) {
                if item.selects_nothing() {
                    continue;
                }
                if requires {
                    let key = self
                        .shared
                        .get(dir)
                        .requires
                        .then(|| format!("requires:{}", dir.name()));
                    let m = self.free(
                        format!("{} items under `fromRequires`/`toRequires`", dir.name()),
                        key,
                    );
                    let both = Bool::and(&[selected.clone(), m]);
                    if item.deny {
                        deny.push(both);
                    } else {
                        allow.push(both.clone());
                        allow_l4.push(both);
                    }
                } else if item.deny {
                    let m = self.deny_item(v, rule, item);
                    deny.push(Bool::and(&[selected.clone(), m]));
                } else {
                    let m = self.allow_item(v, rule, item, req);
                    allow.push(Bool::and(&[selected.clone(), m]));
                    if with_request {
                        let m = self.allow_item(v, rule, item, &mut Req::None);
                        allow_l4.push(Bool::and(&[selected.clone(), m]));
                    }
                }
            }
        }
        let localhost = if dir == Direction::Ingress && self.allow_localhost {
            v.kind_is(KIND_HOST)
        } else {
            Bool::from_bool(false)
        };
        // As `eval` decides: an item that matches at L4 makes its L7 rules count even where
        // the direction is not default-deny; only when none matches does enforcement decide.
        let matched = if with_request {
            Bool::or(&allow_l4)
        } else {
            Bool::or(&allow)
        };
        let unmatched_open = Bool::and(&[matched.not(), Bool::or(&enforced).not()]);
        Bool::and(&[
            Bool::or(&deny).not(),
            Bool::or(&[localhost, Bool::or(&allow), unmatched_open]),
        ])
    }

    /// An allow item with the request: it matches at L3, and on the flow's port either has
    /// no redirect or its first redirect there allows the request (as `eval` picks it).
    fn allow_item(
        &mut self,
        v: &mut FlowVars,
        rule: &Rule,
        item: &Item,
        req: &mut Req<'_>,
    ) -> Bool {
        let l3 = self.l3(v, rule, item);
        let Ports::List(ports) = &item.ports else {
            return l3;
        };
        let mut plain = Vec::new();
        let mut earlier: Vec<Bool> = Vec::new();
        let mut proxied = Vec::new();
        for p in ports {
            let l4 = self.port_rule(v, rule, p);
            match &p.redirect {
                None => plain.push(l4),
                Some(redirect) => {
                    let ok = self.redirect_allows(redirect, req);
                    // The first redirected port rule that matches decides.
                    let first = Bool::and(&[l4.clone(), Bool::or(&earlier).not(), ok]);
                    proxied.push(first);
                    earlier.push(l4);
                }
            }
        }
        let any_redirect = Bool::or(&earlier);
        let open = Bool::and(&[any_redirect.not(), Bool::or(&plain)]);
        Bool::and(&[l3, Bool::or(&[open, Bool::or(&proxied)])])
    }

    /// Whether an item matches the flow at L3 and L4 at the endpoint `x` (the rule's subject
    /// is not included).
    pub fn item_matches(&mut self, v: &mut FlowVars, rule: &Rule, item: &Item) -> Bool {
        if item.deny {
            self.deny_item(v, rule, item)
        } else {
            self.allow_item(v, rule, item, &mut Req::None)
        }
    }

    /// Whether some rule puts the endpoint `x`'s direction into default-deny.
    pub fn enforced(&mut self, v: &mut FlowVars, dir: Direction) -> Bool {
        let any: Vec<Bool> = self
            .rules_at(dir)
            .filter(|(r, _)| r.default_deny(dir))
            .map(|(_, sel)| flow::requirements(&mut v.x, &sel.reqs))
            .collect();
        Bool::or(&any)
    }

    /// A deny item: L3 and any of its port rules.
    fn deny_item(&mut self, v: &mut FlowVars, rule: &Rule, item: &Item) -> Bool {
        let l3 = self.l3(v, rule, item);
        let Ports::List(ports) = &item.ports else {
            return l3;
        };
        let l4: Vec<Bool> = ports.iter().map(|p| self.port_rule(v, rule, p)).collect();
        Bool::and(&[l3, Bool::or(&l4)])
    }

    /// An item's peers. Each peer the flow encoding cannot express is narrowed to the kinds
    /// of remote end it can match and left free within them.
    fn l3(&mut self, v: &mut FlowVars, rule: &Rule, item: &Item) -> Bool {
        let Peers::List(peers) = &item.peers else {
            return Bool::from_bool(true);
        };
        let mut any = Vec::new();
        for p in peers {
            let b = match flow::peer(v, &p.kind) {
                Encoded::Exact(b) => b,
                Encoded::Unknown => {
                    let why = || format!("{} {} `{}`", rule.origin.describe(), item.path, p.kind);
                    // A fact about the flow's non-pod end, the same for every policy set.
                    let key = || Some(format!("peer:{}", p.kind));
                    let not_pod = v.kind_is(KIND_POD).not();
                    match &p.kind {
                        // Pods carry no reserved labels: on a pod the selector is exact;
                        // on other ends, reserved identities are left free.
                        PeerKind::Endpoints(sel) => {
                            let on_pod = Bool::and(&[
                                v.kind_is(KIND_POD),
                                flow::requirements(&mut v.p, &sel.reqs),
                            ]);
                            let other = Bool::and(&[not_pod, self.free(why(), key())]);
                            Bool::or(&[on_pod, other])
                        }
                        // Names resolve to outside addresses only through DNS answers.
                        PeerKind::Fqdn(_) => {
                            Bool::and(&[v.kind_is(KIND_WORLD), self.free(why(), key())])
                        }
                        PeerKind::Nodes(_) => Bool::and(&[
                            Bool::or(&[v.kind_is(KIND_HOST), v.kind_is(KIND_REMOTE_NODE)]),
                            self.free(why(), key()),
                        ]),
                        PeerKind::Entity(Entity::KubeApiserver) => {
                            Bool::and(&[not_pod, self.free(why(), key())])
                        }
                        PeerKind::Entity(Entity::WorldIpv4) => v.kind_is(KIND_WORLD),
                        PeerKind::Entity(Entity::ClusterMesh) => v.kind_is(KIND_WORLD).not(),
                        // Special endpoints (health, init, ingress, unmanaged), IPv6 ends
                        // and unresolvable peers are none of the flow's ends.
                        PeerKind::Entity(_) | PeerKind::Unresolved(_) => Bool::from_bool(false),
                        PeerKind::Cidr(c) if c.net.addr().is_ipv6() => Bool::from_bool(false),
                        _ => self.free(why(), key()),
                    }
                }
            };
            any.push(b);
        }
        Bool::or(&any)
    }

    /// A port rule; a named port is left free within its protocol.
    fn port_rule(&mut self, v: &FlowVars, rule: &Rule, p: &PortRule) -> Bool {
        match flow::port_rule(v, p) {
            Encoded::Exact(b) => b,
            Encoded::Unknown => {
                let proto = v
                    .proto
                    .eq(z3::ast::BV::from_u64(u64::from(p.proto.number()), 8));
                let key = format!("port:{}:{}", p.proto.name(), p.port);
                let free = self.free(describe_port(rule, p), Some(key));
                Bool::and(&[proto, free])
            }
        }
    }

    fn redirect_allows(&mut self, redirect: &Redirect, req: &mut Req<'_>) -> Bool {
        match req {
            Req::None => Bool::from_bool(true),
            Req::Concrete(r) => Bool::from_bool(match redirect {
                Redirect::Tls | Redirect::Listener { .. } => true,
                Redirect::L7(l7) => eval::l7_allows(l7, r),
            }),
            Req::Dns(d) => match redirect {
                Redirect::Tls | Redirect::Listener { .. } => Bool::from_bool(true),
                Redirect::L7(L7::Dns(rules)) if rules.is_empty() => Bool::from_bool(true),
                Redirect::L7(L7::Dns(rules)) => {
                    let any: Vec<Bool> = rules
                        .iter()
                        .map(|r| dns_rule_matches(r, &d.query))
                        .collect();
                    Bool::or(&any)
                }
                Redirect::L7(L7::Generic(_, rules)) => Bool::from_bool(rules.is_empty()),
                Redirect::L7(_) => Bool::from_bool(false),
            },
            Req::Http(h) => match redirect {
                Redirect::Tls | Redirect::Listener { .. } => Bool::from_bool(true),
                Redirect::L7(L7::Http(rules)) if rules.is_empty() => Bool::from_bool(true),
                Redirect::L7(L7::Http(rules)) => {
                    let any: Vec<Bool> = rules.iter().map(|r| self.http_rule(h, r)).collect();
                    Bool::or(&any)
                }
                Redirect::L7(L7::Generic(_, rules)) => Bool::from_bool(rules.is_empty()),
                Redirect::L7(_) => Bool::from_bool(false),
            },
        }
    }

    fn http_rule(&mut self, h: &mut HttpVars, r: &HttpRule) -> Bool {
        let mut parts = Vec::new();
        for (field_name, re, field) in [
            ("method", &r.method, &h.method),
            ("path", &r.path, &h.path),
            ("host", &r.host, &h.host),
        ] {
            let Some(re) = re else { continue };
            match crate::regex::to_z3(re) {
                Some(z) => parts.push(field.regex_matches(&z)),
                None => parts.push(self.free(
                    format!("the HTTP regex `{re}`"),
                    Some(format!("re:{field_name}:{re}")),
                )),
            }
        }
        for (name, want) in &r.headers {
            let (has, val) = h.header(name);
            parts.push(has);
            if let Some(w) = want {
                parts.push(val.eq(Str::from(w.as_str())));
            }
        }
        Bool::and(&parts)
    }
}

fn describe_port(rule: &Rule, p: &PortRule) -> String {
    format!("{} port `{}` (named)", rule.origin.describe(), p.port)
}

/// The kind of the remote end a shape fixes, if any (`p` is a pod for [`Shape::PodToPod`]).
pub fn remote_kind(shape: Shape) -> u64 {
    match shape {
        Shape::PodToPod => KIND_POD,
        Shape::PodToOutside(k) | Shape::OutsideToPod(k) => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::Loc;

    /// The symbolic DNS rules agree with the evaluator's on names of every shape.
    #[test]
    fn dns_rules_match_like_the_evaluator() {
        let patterns = [
            "*",
            "*.example.com",
            "**.example.com",
            "api.*.example.com",
            "a*b.example.com",
            "*example.com.",
        ];
        let names = [
            "example.com.",
            "api.example.com.",
            ".example.com.",
            "a.b.example.com.",
            "api.v1.example.com.",
            "ab.example.com.",
            "axxb.example.com.",
            "a.b.example.com.",
            "myexample.com.",
            "example.org.",
        ];
        let d = DnsVars::new();
        let mut rules: Vec<DnsRule> = patterns
            .iter()
            .map(|p| DnsRule::Pattern(eval::fqdn(p), Loc::default()))
            .collect();
        rules.push(DnsRule::Name("api.example.com.".into(), Loc::default()));
        for rule in &rules {
            let encoded = dns_rule_matches(rule, &d.query);
            for name in names {
                let want = eval::l7_allows(
                    &L7::Dns(vec![rule.clone()]),
                    &Request::Dns { query: name.into() },
                );
                let z = z3::Solver::new();
                z.assert(d.query.eq(Str::from(name)));
                z.assert(&encoded);
                let got = z.check() == z3::SatResult::Sat;
                assert_eq!(got, want, "{rule:?} on {name}");
            }
        }
        // Names the evaluator would rewrite are not well formed.
        for (name, ok) in [("api.example.com.", true), ("API.example.com.", false)] {
            let z = z3::Solver::new();
            z.assert(d.query.eq(Str::from(name)));
            z.assert(d.well_formed());
            assert_eq!(z.check() == z3::SatResult::Sat, ok, "{name}");
        }
    }
}
