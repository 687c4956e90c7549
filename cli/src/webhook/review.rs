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

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use polc_compiler::diag::{Diagnostic, Severity};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::version::CiliumVersion;
use polc_compiler::yaml;

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
}

/// An HTTP answer: the status and the JSON body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body: an AdmissionReview holding the response.
    pub body: Vec<u8>,
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

/// Judges one request body.
pub fn review(body: &[u8], settings: &Settings) -> Reply {
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
    let response = judge(&req, settings);
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
fn judge(req: &AdmissionRequest<DynamicObject>, settings: &Settings) -> AdmissionResponse {
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
    match req.operation {
        Operation::Create | Operation::Update => {}
        Operation::Delete | Operation::Connect => return allowed,
    }
    let Some(object) = &req.object else {
        return allowed.deny(format!(
            "polc: the {} request for {kind} `{}` carries no object",
            operation_name(&req.operation),
            req.name
        ));
    };
    // What the checks read, without the API server's bookkeeping (managedFields can be
    // most of an object's text).
    let mut object = object.clone();
    object.metadata.managed_fields = None;
    let text = match serde_json::to_string(&object) {
        Ok(t) => t,
        Err(e) => return allowed.deny(format!("polc: the object cannot be read: {e}")),
    };
    let name = display_name(kind, req.namespace.as_deref(), &object);
    let found = check(&name, text, settings);
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

/// One diagnostic, as the API server's caller reads it.
struct Found {
    code: String,
    severity: Severity,
    path: String,
    message: String,
    help: Option<String>,
}

impl Found {
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

/// Lints the object's text (JSON, which is YAML) and says where each finding is.
fn check(name: &str, text: String, settings: &Settings) -> Vec<Found> {
    let mut sources = SourceMap::new();
    let id = sources.add(SourceFile::new(name, text));
    let opts = polc_compiler::Options {
        version: settings.version,
        ..polc_compiler::Options::default()
    };
    let (_, diags) = polc_compiler::lint(&sources, &opts);
    if diags.is_empty() {
        return Vec::new();
    }
    let file = sources.get(id);
    let mut ignored = Vec::new();
    let docs = yaml::parse_stream(id, file, opts.limits, &mut ignored);
    let path_of = |d: &Diagnostic| {
        docs.first()
            .map(|doc| doc.root.path_to(d.loc.start))
            .unwrap_or_default()
    };
    diags
        .iter()
        .map(|d| Found {
            code: d.code.as_str().to_string(),
            severity: d.severity,
            path: path_of(d),
            message: d.message.clone(),
            help: d.help.clone(),
        })
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
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_else(|e| {
        format!(
            "{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\
             \"response\":{{\"uid\":\"\",\"allowed\":false,\"status\":{{\"message\":\
             \"polc: the response could not be written: {}\"}}}}}}",
            e.to_string().replace(['"', '\\'], "'")
        )
        .into_bytes()
    });
    Reply { status, body }
}

fn invalid(status: u16, message: &str) -> Reply {
    reply(
        status,
        AdmissionResponse::invalid(format!("polc: {message}")),
    )
}
