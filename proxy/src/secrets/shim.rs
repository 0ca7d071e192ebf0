//! Temporary mirror of the config module's `SecretSourceConfig` and `OpRef`
//! (branch `config`), replaced by re-exports once that branch is merged.

use std::fmt;
use std::time::Duration;

/// A duration that may be zero (mirror of `config::values::NonNegativeDuration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NonNegativeDuration(pub Duration);

impl NonNegativeDuration {
    /// The duration.
    pub fn get(&self) -> Duration {
        self.0
    }
}

/// A 1Password secret reference, `op://vault/item/[section/]field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// Vault name or id.
    pub vault: String,
    /// Item name or id.
    pub item: String,
    /// Optional section.
    pub section: Option<String>,
    /// Field name.
    pub field: String,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op://{}/{}/", self.vault, self.item)?;
        if let Some(s) = &self.section {
            write!(f, "{s}/")?;
        }
        f.write_str(&self.field)
    }
}

/// Where a secret value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSourceConfig {
    /// `type: env`.
    Env {
        /// Variable name.
        var: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
    },
    /// `type: aws_sm`.
    AwsSm {
        /// ARN or name.
        secret_id: String,
        /// Region.
        region: Option<String>,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval.
        ttl: NonNegativeDuration,
    },
    /// `type: aws_ssm`.
    AwsSsm {
        /// Parameter name or ARN.
        name: String,
        /// Region.
        region: Option<String>,
        /// Decrypt SecureString parameters.
        with_decryption: bool,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval.
        ttl: NonNegativeDuration,
    },
    /// `type: 1password`.
    OnePassword {
        /// The reference.
        secret_ref: OpRef,
        /// Token variable.
        token_env: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval.
        ttl: NonNegativeDuration,
    },
    /// `type: 1password_connect`.
    OnePasswordConnect {
        /// The reference.
        secret_ref: OpRef,
        /// Host variable.
        host_env: String,
        /// Token variable.
        token_env: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval.
        ttl: NonNegativeDuration,
    },
}

impl SecretSourceConfig {
    /// The `json_key`, whatever the type.
    pub fn json_key(&self) -> Option<&str> {
        match self {
            SecretSourceConfig::Env { json_key, .. }
            | SecretSourceConfig::AwsSm { json_key, .. }
            | SecretSourceConfig::AwsSsm { json_key, .. }
            | SecretSourceConfig::OnePassword { json_key, .. }
            | SecretSourceConfig::OnePasswordConnect { json_key, .. } => json_key.as_deref(),
        }
    }

    /// The refresh interval.
    pub fn ttl(&self) -> NonNegativeDuration {
        match self {
            SecretSourceConfig::Env { .. } => NonNegativeDuration::default(),
            SecretSourceConfig::AwsSm { ttl, .. }
            | SecretSourceConfig::AwsSsm { ttl, .. }
            | SecretSourceConfig::OnePassword { ttl, .. }
            | SecretSourceConfig::OnePasswordConnect { ttl, .. } => *ttl,
        }
    }
}
