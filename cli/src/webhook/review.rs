//! One `admission.k8s.io/v1` AdmissionReview in, one out: what `polc webhook` answers on
//! `POST /validate`.
//!
//! CREATE and UPDATE of the four kinds polc reads (CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy, CiliumCIDRGroup, NetworkPolicy) are checked the way
//! `polc lint` checks a file: an error (what the API server or the Cilium agent rejects)
//! denies the request, with a message that lists each error with its field path and fix;
//! warnings and notes come back as the response's `warnings`, or deny when their code is in
//! the operator's `--deny` list. DELETE and CONNECT are allowed. A request for another kind is
//! allowed with a warning that polc did not look at it. A body that is not an AdmissionReview
//! gets HTTP 400 and a review whose response says why; the API server never sends one.

use super::store::{Key, Snapshot, View};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use polc_compiler::diag::{Diagnostic, Diagnostics, Severity};
use polc_compiler::ir::PolicySet;
use polc_compiler::raw::{Kind, Object};
use polc_compiler::source::{FileId, SourceFile};
use polc_compiler::version::CiliumVersion;
use polc_compiler::yaml;
use polc_verifier::replay::Lowered;

/// The largest body judged. The API server's request limit is 3 MiB per object, and a
/// review of an UPDATE carries the object twice.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// How the webhook judges.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The Cilium release whose rules apply.
    pub version: CiliumVersion,
    /// Codes of warnings and notes that deny instead of warning (`--deny CODE,...`).
    pub deny: Vec<String>,
    /// The longest one verifier question may take.
    pub limits: polc_verifier::Limits,
}

/// An HTTP answer: the status and the JSON body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body: an AdmissionReview holding the response.
    pub body: Vec<u8>,
    /// Whether the response allows the request.
    pub allowed: bool,
}

/// The kinds polc judges, by API group and kind.
const KINDS: [(&str, &str); 4] = [
    ("cilium.io", "CiliumNetworkPolicy"),
    ("cilium.io", "CiliumClusterwideNetworkPolicy"),
    ("cilium.io", "CiliumCIDRGroup"),
    ("networking.k8s.io", "NetworkPolicy"),
];

/// The answer to a body longer than [`MAX_BODY`] (of `len` bytes, when known).
pub fn oversized(len: Option<usize>) -> Reply {
    let has = len.map_or("more bytes".to_string(), |n| format!("{n} bytes"));
    invalid(
        413,
        &format!(
            "the request body has {has}, more than the {MAX_BODY} an AdmissionReview can have"
        ),
    )
}

/// Judges one request body, against the policy set `policies` when there is one.
pub fn review(body: &[u8], settings: &Settings, policies: Option<&Snapshot>) -> Reply {
    remembering(body, settings, policies, None)
}

/// Answers given before, by what they were about. The API server asks the same question
/// more than once: a dry run and then the write, retries, each API server of a replicated
/// control plane, GitOps controllers applying manifests that did not change. An answer is
/// reused only for the same request (operation, kind, namespace and name) about the same
/// objects, apart from the fields the API server fills in itself, against the same snapshot
/// of the policy set; at most `capacity` answers are kept, the oldest forgotten first.
/// Answers that depended on time (a question the solver left undecided) are not kept.
pub struct Memo {
    kept: std::sync::Mutex<Kept>,
    capacity: usize,
    hits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Kept {
    answers: std::collections::HashMap<[u8; 32], std::sync::Arc<Written>>,
    order: std::collections::VecDeque<[u8; 32]>,
}

/// An answer as written, around its uid: `head`, the request's uid as a JSON string, `tail`.
struct Written {
    head: Vec<u8>,
    tail: Vec<u8>,
    allowed: bool,
}

impl Memo {
    /// A memo of at most `capacity` answers.
    pub fn new(capacity: usize) -> Memo {
        Memo {
            kept: std::sync::Mutex::new(Kept::default()),
            capacity,
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many requests were answered from the memo.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer kept for the request `key` identifies, if any.
    pub fn answer(&self, key: &MemoKey) -> Option<Reply> {
        let found = self.kept().answers.get(&key.key).cloned()?;
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(found.reply(&key.uid))
    }

    fn put(&self, key: [u8; 32], written: std::sync::Arc<Written>) {
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.kept();
        if kept.answers.insert(key, written).is_none() {
            kept.order.push_back(key);
        }
        while kept.order.len() > self.capacity {
            if let Some(old) = kept.order.pop_front() {
                kept.answers.remove(&old);
            }
        }
    }
}

impl Written {
    /// `answer` written once with an empty uid, which is then cut out: `"uid":""` appears
    /// once as written (inside strings its quotes are escaped).
    fn of(answer: &AdmissionResponse) -> Option<Written> {
        let mut blank = answer.clone();
        blank.uid = String::new();
        let r = reply(200, blank);
        const UID: &[u8] = b"\"uid\":\"\"";
        let at = r.body.windows(UID.len()).position(|w| w == UID)?;
        Some(Written {
            head: r.body[..at + UID.len() - 2].to_vec(),
            tail: r.body[at + UID.len()..].to_vec(),
            allowed: r.allowed,
        })
    }

    /// The answer for the request `uid`.
    fn reply(&self, uid: &str) -> Reply {
        let uid = serde_json::to_vec(uid).unwrap_or_else(|_| b"\"\"".to_vec());
        let mut body = Vec::with_capacity(self.head.len() + uid.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(&uid);
        body.extend_from_slice(&self.tail);
        Reply {
            status: 200,
            body,
            allowed: self.allowed,
        }
    }
}

/// What a request's answer depends on, read without building the objects: the review's
/// fields as they were written, apart from the request's uid, who asks, whether it is a dry
/// run, and the fields of the objects' metadata the API server fills in itself (uid,
/// resourceVersion, generation, creationTimestamp, managedFields), which no check reads. A
/// request that differs in any other byte is judged anew.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Light<'a> {
    #[serde(borrow)]
    api_version: Option<&'a RawValue>,
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    request: LightRequest<'a>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LightRequest<'a> {
    uid: String,
    #[serde(borrow)]
    kind: &'a RawValue,
    #[serde(borrow)]
    resource: &'a RawValue,
    #[serde(default, borrow)]
    sub_resource: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_resource: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_sub_resource: Option<&'a RawValue>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    namespace: Option<&'a RawValue>,
    operation: Operation,
    // Read (so that a malformed one is judged anew, and refused), not part of the key.
    #[serde(rename = "userInfo")]
    _user_info: k8s_openapi::api::authentication::v1::UserInfo,
    #[serde(default, rename = "dryRun")]
    _dry_run: bool,
    #[serde(default, borrow, rename = "options")]
    _options: Option<Fields<'a>>,
    #[serde(default, borrow)]
    object: Option<Fields<'a>>,
    #[serde(default, borrow)]
    old_object: Option<Fields<'a>>,
}

/// A JSON object's fields, as written.
type Fields<'a> = std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a RawValue>;

use serde_json::value::RawValue;

/// The metadata fields the API server fills in, left out of the key.
const SERVER_FILLED: [&str; 5] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// What the memo keeps a request's answer under, and the request's uid.
pub struct MemoKey {
    key: [u8; 32],
    uid: String,
}

/// The key of the answer to the request in `body` against `policies` (see [`Light`]);
/// `None` when the body is not an AdmissionReview this can read.
pub fn memo_key(body: &[u8], policies: Option<&Snapshot>) -> Option<MemoKey> {
    let generation = policies.map_or(0, |p| p.generation);
    let light: Light<'_> = serde_json::from_slice(body).ok()?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let raw = |v: Option<&RawValue>| v.map_or("", RawValue::get).to_string();
    let r = &light.request;
    field(&generation.to_le_bytes());
    for v in [
        light.api_version,
        light.kind,
        Some(r.kind),
        Some(r.resource),
        r.sub_resource,
        r.request_kind,
        r.request_resource,
        r.request_sub_resource,
        r.name,
        r.namespace,
    ] {
        field(raw(v).as_bytes());
    }
    field(operation_name(&r.operation).as_bytes());
    for object in [&r.object, &r.old_object] {
        let Some(fields) = object else {
            field(b"-");
            continue;
        };
        field(b"+");
        for (name, value) in fields {
            field(name.as_bytes());
            if name != "metadata" {
                field(value.get().as_bytes());
                continue;
            }
            let meta: Fields<'_> = serde_json::from_str(value.get()).ok()?;
            for (k, v) in meta
                .iter()
                .filter(|(k, _)| !SERVER_FILLED.contains(&k.as_ref()))
            {
                field(k.as_bytes());
                field(v.get().as_bytes());
            }
        }
    }
    let mut key = [0; 32];
    key.copy_from_slice(h.finish().as_ref());
    Some(MemoKey {
        key,
        uid: light.request.uid,
    })
}

/// [`review`] of a request the memo has no answer for, its answer kept there under `key`.
pub fn remembering(
    body: &[u8],
    settings: &Settings,
    policies: Option<&Snapshot>,
    memo: Option<(&Memo, MemoKey)>,
) -> Reply {
    if body.len() > MAX_BODY {
        return oversized(Some(body.len()));
    }
    let parsed: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                400,
                &format!("the request body is not an admission.k8s.io/v1 AdmissionReview: {e}"),
            );
        }
    };
    let req: AdmissionRequest<DynamicObject> = match parsed.try_into() {
        Ok(r) => r,
        Err(_) => return invalid(400, "the AdmissionReview has no `request`"),
    };
    let response = judge(&req, settings, policies);
    let undecided = polc_compiler::diag::Code::Undecided.as_str();
    let timely = !response
        .warnings
        .iter()
        .flatten()
        .chain(std::iter::once(&response.result.message))
        .any(|w| w.contains(undecided));
    if let (true, Some((memo, key))) = (timely, memo)
        && let Some(written) = Written::of(&response)
    {
        let written = std::sync::Arc::new(written);
        memo.put(key.key, written.clone());
        return written.reply(&response.uid);
    }
    reply(200, response)
}

/// The answer to a request that could not be judged in time: allowed (the object was not
/// checked, as when the webhook is unreachable and `failurePolicy` is `Ignore`), with a
/// warning that says so, for the request's uid.
pub fn unjudged(body: &[u8], reason: &str) -> Reply {
    let parsed: Option<AdmissionReview<DynamicObject>> = serde_json::from_slice(body).ok();
    let Some(req) = parsed.and_then(|r| {
        let req: Result<AdmissionRequest<DynamicObject>, _> = r.try_into();
        req.ok()
    }) else {
        return invalid(400, reason);
    };
    reply(
        200,
        warn(
            AdmissionResponse::from(&req),
            vec![format!("polc: {reason}")],
        ),
    )
}

/// The response to a well-formed request.
fn judge(
    req: &AdmissionRequest<DynamicObject>,
    settings: &Settings,
    policies: Option<&Snapshot>,
) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(req);
    let (group, kind) = (req.kind.group.as_str(), req.kind.kind.as_str());
    if !KINDS.contains(&(group, kind)) {
        let shown = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        return warn(
            allowed,
            vec![format!(
                "polc: {shown} is not a policy kind polc checks (CiliumNetworkPolicy, \
                 CiliumClusterwideNetworkPolicy, CiliumCIDRGroup, NetworkPolicy); it was not \
                 checked"
            )],
        );
    }
    let object = match req.operation {
        Operation::Create | Operation::Update => &req.object,
        // Always allowed; what the deletion changes is told as warnings.
        Operation::Delete => {
            let Some(old) = &req.old_object else {
                return allowed;
            };
            let name = display_name(kind, req.namespace.as_deref(), old);
            let Ok(text) = object_text(old) else {
                return allowed;
            };
            let found = deleted(&name, text, settings, policies);
            return warn(allowed, found.iter().map(Found::line).collect());
        }
        Operation::Connect => return allowed,
    };
    let Some(object) = object else {
        return allowed.deny(format!(
            "polc: the {} request for {kind} `{}` carries no object",
            operation_name(&req.operation),
            req.name
        ));
    };
    let text = match object_text(object) {
        Ok(t) => t,
        Err(e) => return allowed.deny(format!("polc: the object cannot be read: {e}")),
    };
    let name = display_name(kind, req.namespace.as_deref(), object);
    let found = check(&name, text, settings, policies);
    let (denying, warning): (Vec<&Found>, Vec<&Found>) = found
        .iter()
        .partition(|f| f.severity == Severity::Error || settings.deny.contains(&f.code));
    let warnings: Vec<String> = warning.iter().map(|f| f.line()).collect();
    if denying.is_empty() {
        return warn(allowed, warnings);
    }
    let mut message = format!(
        "polc: {name} is not valid Cilium policy ({} problem{}):",
        denying.len(),
        if denying.len() == 1 { "" } else { "s" }
    );
    for f in &denying {
        message.push_str("\n- ");
        message.push_str(&f.line());
    }
    warn(allowed.deny(message), warnings)
}

/// What the checks read of an object: its JSON, without the API server's bookkeeping
/// (managedFields can be most of an object's text).
fn object_text(object: &DynamicObject) -> Result<String, serde_json::Error> {
    let mut object = object.clone();
    object.metadata.managed_fields = None;
    serde_json::to_string(&object)
}

/// One diagnostic, as the API server's caller reads it.
struct Found {
    code: String,
    severity: Severity,
    path: String,
    message: String,
    help: Option<String>,
}

impl Found {
    /// A diagnostic, placed by its field path in the object under review (`doc`), or by
    /// the rule and item of the set it is about.
    fn of(d: &Diagnostic, doc: Option<&yaml::Document>, view: Option<&View>) -> Found {
        let path = if d.loc.file == REVIEWED {
            doc.map(|doc| doc.root.path_to(d.loc.start))
                .unwrap_or_default()
        } else {
            view.and_then(|v| {
                v.set.rules.iter().find_map(|r| {
                    let at = if r.subject_loc == d.loc {
                        Some(format!("{}.endpointSelector", r.origin.path))
                    } else {
                        r.items
                            .iter()
                            .find(|i| i.loc == d.loc)
                            .map(|i| i.path.clone())
                    };
                    at.map(|at| format!("{} {at}", r.origin.describe()))
                })
            })
            .unwrap_or_default()
        };
        Found {
            code: d.code.as_str().to_string(),
            severity: d.severity,
            path,
            message: d.message.clone(),
            help: d.help.clone(),
        }
    }

    /// `spec.ingress[0].toPorts: S0215 the message (fix: the help)`.
    fn line(&self) -> String {
        let mut s = String::new();
        if !self.path.is_empty() {
            s.push_str(&self.path);
            s.push_str(": ");
        }
        s.push_str(&self.code);
        s.push(' ');
        s.push_str(&self.message);
        if let Some(h) = &self.help {
            s.push_str(" (fix: ");
            s.push_str(h);
            s.push(')');
        }
        s
    }
}

/// The file id of the object under review: one no file of a policy set has, so locations
/// in it and in the set never meet.
const REVIEWED: FileId = FileId(u32::MAX - 1);

/// The object under review, read.
struct Reviewed {
    objects: Vec<Object>,
    /// Its rules (lowered with the set's CIDR groups).
    set: PolicySet,
    diags: Vec<Diagnostic>,
    doc: Option<yaml::Document>,
}

/// Reads and validates the object's text (JSON, which is YAML) as `polc lint` would, with
/// the CIDR groups of the policy set (when there is one) resolving its references.
fn read(name: &str, text: String, settings: &Settings, policies: Option<&Snapshot>) -> Reviewed {
    let file = SourceFile::new(name, text);
    let opts = polc_compiler::Options {
        version: settings.version,
        ..polc_compiler::Options::default()
    };
    let (objects, mut diags) = polc_compiler::read_file(REVIEWED, &file, &opts);
    diags.extend(polc_compiler::validate::check(&objects, &opts).into_vec());
    let more = policies.map_or(&[][..], |p| &p.set.cidr_groups[..]);
    let (set, lowered) = polc_compiler::lower::lower_with_groups(&objects, more, settings.version);
    diags.extend(lowered);
    let mut sorted = Diagnostics::new();
    for d in diags {
        sorted.push(d);
    }
    sorted.sort();
    let mut ignored = Vec::new();
    let doc = yaml::parse_stream(REVIEWED, &file, opts.limits, &mut ignored)
        .into_iter()
        .next();
    Reviewed {
        objects,
        set,
        diags: sorted.into_vec(),
        doc,
    }
}

/// Lints the object and, when it is valid and there is a policy set, runs the verifier's
/// checks of the object against the set; says where each finding is.
fn check(name: &str, text: String, settings: &Settings, policies: Option<&Snapshot>) -> Vec<Found> {
    let r = read(name, text, settings, policies);
    let mut diags = r.diags;
    let valid = !diags.iter().any(|d| d.severity == Severity::Error);
    let view = match (policies, r.objects.first()) {
        (Some(p), Some(o)) if valid && o.kind != Kind::CiliumCidrGroup => {
            let view = p.view(&Key::of(o), r.set);
            let after = Lowered(&view.set.rules);
            let before = Lowered(&view.set.rules[view.own..]);
            let change = polc_verifier::checks::Change {
                set: &view.set,
                own: view.own,
                after: &after,
                before: &before,
                changed: None,
                moved: None,
                facts: Some(&p.facts),
            };
            diags.extend(polc_verifier::checks::review(
                &change,
                settings.version,
                settings.limits,
            ));
            Some(view)
        }
        (Some(p), Some(o)) if valid && o.kind == Kind::CiliumCidrGroup => {
            let (found, view) = group_changes(p, o, settings);
            diags.extend(found);
            Some(view)
        }
        _ => None,
    };
    diags
        .iter()
        .map(|d| Found::of(d, r.doc.as_ref(), view.as_ref()))
        .collect()
}

/// What a CiliumCIDRGroup (new or changed) changes in the policies that use it: the
/// verifier's findings about their rules with this version of the group that they did not
/// have with the set's (none, for a new group). The questions are about the items whose
/// addresses change.
fn group_changes(p: &Snapshot, group: &Object, settings: &Settings) -> (Vec<Diagnostic>, View) {
    use polc_compiler::lower::{cidr_groups, lower_with_groups, uses_cidr_groups};
    use polc_verifier::addresses::Addresses;
    let version = settings.version;
    let name = group.name();
    let mut groups = cidr_groups(std::slice::from_ref(group));
    // The policies the change can touch: those that name or select the group, as it was or
    // as it will be.
    let changed: Vec<&polc_compiler::ir::CidrGroup> = groups
        .iter()
        .chain(p.set.cidr_groups.iter().filter(|g| g.name == name))
        .collect();
    let users: Vec<Object> = (p.group_users.iter())
        .map(|&i| &p.objects[i])
        .filter(|o| uses_cidr_groups(o, &changed))
        .cloned()
        .collect();
    groups.extend(p.set.cidr_groups.iter().filter(|g| g.name != name).cloned());
    let (with_new, _) = lower_with_groups(&users, &groups, version);
    let used = |r: &polc_compiler::ir::Rule| {
        users.iter().any(|u| {
            u.kind == r.origin.kind
                && u.namespace() == r.origin.namespace
                && u.name() == r.origin.name
        })
    };
    let others = p.set.rules.iter().filter(|r| !used(r)).cloned();
    let with_old: Vec<_> = p.set.rules.iter().filter(|r| used(r)).cloned().collect();
    // The items whose peers the new addresses change (the same objects lower to the same
    // rules and items, in the same order).
    // The addresses whose flows they match otherwise now (any, when the rules do not line up).
    let mut moved: Vec<(usize, usize)> = Vec::new();
    let mut addresses = Some(Addresses::default());
    for (ri, new) in with_new.rules.iter().enumerate() {
        let old = with_old.get(ri).map(|r| &r.items);
        for (ii, item) in new.items.iter().enumerate() {
            let was = old.and_then(|o| o.get(ii));
            if was.is_none_or(|o| o.peers != item.peers) {
                moved.push((ri, ii));
                addresses = match (addresses, was.and_then(|o| Addresses::moved(o, item))) {
                    (Some(a), Some(b)) => Some(a.union(&b)),
                    _ => None,
                };
            }
        }
    }
    if with_old.len() != with_new.rules.len()
        || with_old
            .iter()
            .zip(&with_new.rules)
            .any(|(o, n)| o.items.len() != n.items.len())
    {
        addresses = None;
    }
    let findings = |own: Vec<std::sync::Arc<polc_compiler::ir::Rule>>| {
        let n = own.len();
        let mut rules = own;
        rules.extend(others.clone());
        let set = PolicySet {
            rules,
            cidr_groups: Vec::new(),
        };
        let (after, before) = (Lowered(&set.rules), Lowered(&set.rules[n..]));
        let change = polc_verifier::checks::Change {
            set: &set,
            own: n,
            after: &after,
            before: &before,
            changed: Some(&moved),
            moved: addresses.as_ref(),
            facts: Some(&p.facts),
        };
        let found = if n == 0 || moved.is_empty() {
            Vec::new()
        } else {
            polc_verifier::checks::review(&change, version, settings.limits)
        };
        (found, View { set, own: n })
    };
    let (after, view) = findings(with_new.rules);
    // What the group's users were told before matters only when there is something to tell.
    let before = if after.is_empty() {
        Vec::new()
    } else {
        findings(with_old).0
    };
    let new: Vec<Diagnostic> = after
        .into_iter()
        .filter(|d| !before.iter().any(|b| b.code == d.code && b.loc == d.loc))
        .collect();
    (new, view)
}

/// What deleting the object (its last version, as the API server sends it) changes: the
/// pods that no policy isolates any more (V0410).
fn deleted(
    name: &str,
    text: String,
    settings: &Settings,
    policies: Option<&Snapshot>,
) -> Vec<Found> {
    let Some(p) = policies else {
        return Vec::new();
    };
    let r = read(name, text, settings, Some(p));
    let Some(o) = r.objects.first() else {
        return Vec::new();
    };
    let view = p.view(&Key::of(o), r.set);
    let diags = polc_verifier::isolation::after_delete(
        &view.set,
        view.own,
        settings.version,
        settings.limits,
    );
    diags
        .iter()
        .map(|d| Found::of(d, r.doc.as_ref(), Some(&view)))
        .collect()
}

/// `CiliumNetworkPolicy shop/api`.
fn display_name(kind: &str, namespace: Option<&str>, object: &DynamicObject) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("(unnamed)");
    match namespace.or(object.metadata.namespace.as_deref()) {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn warn(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn reply(status: u16, response: AdmissionResponse) -> Reply {
    let allowed = response.allowed;
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_else(|e| {
        format!(
            "{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\
             \"response\":{{\"uid\":\"\",\"allowed\":false,\"status\":{{\"message\":\
             \"polc: the response could not be written: {}\"}}}}}}",
            e.to_string().replace(['"', '\\'], "'")
        )
        .into_bytes()
    });
    Reply {
        status,
        body,
        allowed,
    }
}

fn invalid(status: u16, message: &str) -> Reply {
    reply(
        status,
        AdmissionResponse::invalid(format!("polc: {message}")),
    )
}
