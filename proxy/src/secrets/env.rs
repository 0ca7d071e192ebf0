//! The `env` source: an environment variable of the proxy process.

use async_trait::async_trait;

use super::{EnvLookup, Fetch, SecretError, SecretValue};

/// Reads one variable. The cache reads it once (`env` has no `ttl`).
pub struct EnvSource {
    var: String,
    env: EnvLookup,
}

impl EnvSource {
    /// A source reading `var`.
    pub fn new(var: String, env: EnvLookup) -> Self {
        EnvSource { var, env }
    }
}

#[async_trait]
impl Fetch for EnvSource {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        self.env
            .secret(&self.var)
            .ok_or_else(|| SecretError::EnvMissing(self.var.clone()))
    }
}
