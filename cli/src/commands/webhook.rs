//! `polc webhook`: the validating admission webhook (see [`crate::webhook`]). Runs until it is
//! stopped; what it has to tell the operator goes to standard error.

use crate::webhook::review::{self, Settings};
use crate::webhook::server::{self, Config};
use crate::webhook::store::{Snapshot, Source};
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, Io};
use polc_compiler::diag::{Code, Severity};
use polc_compiler::version::CiliumVersion;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `polc webhook`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Serves POST /validate (admission.k8s.io/v1 AdmissionReview), GET \
                        /healthz, GET /readyz and GET /metrics over HTTPS until stopped. Exit \
                        codes: 2 when it cannot start."
)]
pub struct WebhookArgs {
    /// Where to listen.
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The TLS certificate chain (PEM); read again when the file changes.
    #[arg(long, value_name = "FILE", required_unless_present = "review")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); read again when the file changes.
    #[arg(long, value_name = "FILE", required_unless_present = "review")]
    pub tls_key: Option<PathBuf>,
    /// Judge the AdmissionReview in FILE (`-`: standard input) against the policy set of
    /// `--policies`, print the AdmissionReview the server would answer, and exit: 0 when
    /// allowed, 1 when denied. Nothing is served.
    #[arg(long, value_name = "FILE", conflicts_with = "cluster")]
    pub review: Option<PathBuf>,
    /// The policy set new objects are checked against: a directory of the cluster's
    /// policies and CIDR groups (read again when its files change). Without it or
    /// `--cluster`, each object is checked alone, and the verifier's findings (V04xx) are
    /// not looked for.
    #[arg(long, value_name = "DIR", conflicts_with = "cluster")]
    pub policies: Option<PathBuf>,
    /// `--cluster`: read the policy set from the API server instead, through watches (with
    /// `--kubeconfig` and `--context`, `KUBECONFIG`, `~/.kube/config`, or the pod's service
    /// account).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// Codes of warnings that deny the request instead of warning (`L0305,L0302`).
    #[arg(long, value_delimiter = ',', value_name = "CODE,...")]
    pub deny: Vec<String>,
    /// The Cilium release whose rules apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// Seconds a client may take for the TLS handshake, and then for its request.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub read_timeout: f64,
    /// Seconds a review may take before it is answered unchecked (allowed, with a warning);
    /// keep it below the ValidatingWebhookConfiguration's `timeoutSeconds`.
    #[arg(long, default_value_t = 8.0, value_name = "SECONDS")]
    pub review_timeout: f64,
    /// Client connections served at once; more are closed at once.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_connections: usize,
}

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s <= 3600.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "{what} must be between 0 and 3600 seconds, not {s}"
        ))
    }
}

/// Runs `polc webhook`.
pub fn run(args: &WebhookArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let mut deny = Vec::new();
    for code in &args.deny {
        let code = code.trim().to_ascii_uppercase();
        match Code::ALL.iter().find(|c| c.as_str() == code) {
            Some(c) if c.severity() != Severity::Error => deny.push(code),
            Some(_) => {
                writeln!(
                    io.stderr,
                    "polc: note: --deny {code}: errors always deny; nothing to add"
                )?;
            }
            None => {
                writeln!(
                    io.stderr,
                    "polc: error: --deny {code}: no such diagnostic code (see `polc explain-code`)"
                )?;
                return Ok(EXIT_USAGE);
            }
        }
    }
    let timeouts = seconds("--read-timeout", args.read_timeout)
        .and_then(|r| Ok((r, seconds("--review-timeout", args.review_timeout)?)));
    let (read_timeout, review_timeout) = match timeouts {
        Ok(t) => t,
        Err(e) => {
            writeln!(io.stderr, "polc: error: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let settings = Settings {
        version: args.cilium_version,
        deny,
        // Several questions may be asked per review, all before its deadline.
        limits: polc_verifier::Limits {
            timeout: review_timeout / 4,
        },
    };
    if let Some(file) = &args.review {
        return review_file(file, args.policies.as_deref(), &settings, io);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        writeln!(
            io.stderr,
            "polc: error: --tls-cert and --tls-key are required"
        )?;
        return Ok(EXIT_USAGE);
    };
    let config = Config {
        listen: args.listen,
        cert: cert.clone(),
        key: key.clone(),
        settings,
        read_timeout,
        review_timeout,
        reload_every: Duration::from_secs(2),
        max_connections: args.max_connections,
        policies: match (&args.policies, args.live.cluster) {
            (Some(dir), _) => Some(Source::Dir(dir.clone())),
            (None, true) => Some(Source::Cluster(args.live.clone())),
            (None, false) => None,
        },
    };
    let (log, lines) = std::sync::mpsc::channel();
    let handle = match server::start(config, log) {
        Ok(h) => h,
        Err(e) => {
            writeln!(io.stderr, "polc: error: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    writeln!(
        io.stderr,
        "polc webhook: listening on https://{} (POST /validate)",
        handle.addr
    )?;
    io.stderr.flush()?;
    // The server's lines, written here: only this thread writes to standard error. The
    // loop ends when the server does.
    for line in lines {
        writeln!(io.stderr, "{line}")?;
        io.stderr.flush()?;
    }
    match handle.wait() {
        Ok(()) => Ok(0),
        Err(e) => {
            writeln!(io.stderr, "polc: error: {e}")?;
            Ok(EXIT_USAGE)
        }
    }
}

/// `--review FILE`: one review judged as the server would, printed.
fn review_file(
    file: &Path,
    policies: Option<&Path>,
    settings: &Settings,
    io: &mut Io<'_>,
) -> anyhow::Result<i32> {
    let body = if file == Path::new("-") {
        let mut body = Vec::new();
        io.stdin
            .read_to_end(&mut body)
            .map(|_| body)
            .map_err(|e| format!("standard input: {e}"))
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            writeln!(io.stderr, "polc: error: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let snapshot = match policies.map(|dir| Snapshot::read(dir, settings.version)) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            writeln!(io.stderr, "polc: error: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    crate::timing::lap(io.stderr, "load policies");
    let reply = review::review(&body, settings, snapshot.as_ref());
    crate::timing::lap(io.stderr, "review");
    io.stdout.write_all(&reply.body)?;
    writeln!(io.stdout)?;
    Ok(match (reply.status, reply.allowed) {
        (200, true) => EXIT_CLEAN,
        (200, false) => EXIT_FINDINGS,
        _ => EXIT_USAGE,
    })
}
