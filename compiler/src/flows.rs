//! Policy flow tests: a YAML file of flows with expected verdicts, kept next to the policies
//! and checked by `polc explain --flows`.
//!
//! ```yaml
//! flows:
//!   - {from: shop/frontend, to: shop/backend, proto: TCP, port: 8080, expect: allow}
//!   - {from: shop/frontend, to: shop/backend, proto: TCP, port: 8080,
//!      http: {method: DELETE, path: /api/items}, expect: deny}
//!   - {from: 203.0.113.9, to: shop/frontend, proto: ICMP, icmpType: 8, expect: deny}
//! ```

use crate::diag::{Code, Diagnostic};
use crate::raw::decode::{Cx, Decode, Spanned, raw_struct};
use crate::source::{FileId, Loc, SourceFile};
use crate::yaml;

raw_struct! {
    /// A flows file.
    FlowsFile("flows file", Strict) {
        /// The flows.
        flows: "flows" => Vec<FlowSpec>,
    }
}

raw_struct! {
    /// One flow and its expected verdict.
    FlowSpec("flow", Strict) {
        /// A name for reports.
        name: "name" => String,
        /// `NS/POD`, `host/NODE`, or an address.
        from: "from" => String,
        /// `NS/POD`, `host/NODE`, or an address.
        to: "to" => String,
        /// `TCP`, `UDP`, `SCTP`, `ICMP` or `ICMPv6`.
        proto: "proto" => String,
        /// The destination port.
        port: "port" => i64,
        /// The ICMP type.
        icmp_type: "icmpType" => i64,
        /// An HTTP request.
        http: "http" => HttpRequest,
        /// A DNS query.
        dns: "dns" => DnsRequest,
        /// A Kafka request.
        kafka: "kafka" => KafkaRequest,
        /// `allow` or `deny`.
        expect: "expect" => String,
        /// Why the verdict is expected (free text).
        why: "why" => String,
    }
}

raw_struct! {
    /// An HTTP request.
    HttpRequest("HTTP request", Strict) {
        /// Method (default `GET`).
        method: "method" => String,
        /// Path (default `/`).
        path: "path" => String,
        /// Host.
        host: "host" => String,
        /// Headers, `Name: value`.
        headers: "headers" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A DNS query.
    DnsRequest("DNS request", Strict) {
        /// The name.
        query: "query" => String,
    }
}

raw_struct! {
    /// A Kafka request.
    KafkaRequest("Kafka request", Strict) {
        /// API key (`produce`, `fetch`, ...).
        api_key: "apiKey" => String,
        /// API version.
        api_version: "apiVersion" => i64,
        /// Client ID.
        client_id: "clientID" => String,
        /// Topic.
        topic: "topic" => String,
    }
}

/// Reads a flows file. Problems are diagnostics; flows that decode are returned.
pub fn read(
    id: FileId,
    file: &SourceFile,
    limits: yaml::Limits,
) -> (Vec<FlowSpec>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let docs = yaml::parse_stream(id, file, limits, &mut diags);
    let mut out = Vec::new();
    if docs.iter().all(|d| d.root.is_null()) && diags.is_empty() {
        diags.push(
            Diagnostic::new(
                Code::EmptyInput,
                Loc::new(id, 0, 0),
                "the flows file is empty",
            )
            .label("empty")
            .help("write `flows:` followed by one mapping per flow"),
        );
    }
    for doc in &docs {
        if doc.root.is_null() {
            continue;
        }
        if doc.root.as_map().is_none() {
            diags.push(
                Diagnostic::new(
                    Code::WrongType,
                    doc.root.loc,
                    format!(
                        "a flows file is a mapping with a `flows` list, not {}",
                        crate::raw::decode::article(doc.root.type_name())
                    ),
                )
                .label("expected `flows:`")
                .help("write `flows:` and indent the flows under it as list items"),
            );
            continue;
        }
        let mut cx = Cx::new(&mut diags);
        if let Some(f) = FlowsFile::decode(&mut cx, &doc.root) {
            match f.flows {
                Some(flows) => out.extend(flows.value),
                None => diags.push(
                    Diagnostic::new(
                        Code::MissingRequiredField,
                        doc.root.loc,
                        "a flows file needs a `flows` list",
                    )
                    .label("no `flows`")
                    .help("write `flows:` followed by one mapping per flow"),
                ),
            }
        }
    }
    (out, diags)
}

/// Where a flow is, for reports.
pub fn flow_loc(f: &FlowSpec) -> Loc {
    f.loc
}
