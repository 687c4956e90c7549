//! The Cilium version polc targets, for the rules and fields that differ between releases.

use std::fmt;
use std::str::FromStr;

/// A supported target Cilium release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum CiliumVersion {
    /// Cilium 1.17.
    V1_17,
    /// Cilium 1.18.
    V1_18,
    /// Cilium 1.19 (the default).
    #[default]
    V1_19,
}

impl CiliumVersion {
    /// Every supported version, oldest first.
    pub const ALL: &'static [CiliumVersion] = &[
        CiliumVersion::V1_17,
        CiliumVersion::V1_18,
        CiliumVersion::V1_19,
    ];

    /// `1.17`, `1.18`, `1.19`.
    pub fn as_str(self) -> &'static str {
        match self {
            CiliumVersion::V1_17 => "1.17",
            CiliumVersion::V1_18 => "1.18",
            CiliumVersion::V1_19 => "1.19",
        }
    }
}

impl fmt::Display for CiliumVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string polc does not support.
#[derive(Debug, thiserror::Error)]
#[error("unsupported Cilium version `{0}`: expected 1.17, 1.18 or 1.19")]
pub struct UnsupportedVersion(String);

impl FromStr for CiliumVersion {
    type Err = UnsupportedVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let major = parts.next();
        let minor = parts.next();
        match (major, minor) {
            (Some("1"), Some("17")) => Ok(CiliumVersion::V1_17),
            (Some("1"), Some("18")) => Ok(CiliumVersion::V1_18),
            (Some("1"), Some("19")) => Ok(CiliumVersion::V1_19),
            _ => Err(UnsupportedVersion(s.to_string())),
        }
    }
}
