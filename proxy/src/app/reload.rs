//! Hot reload (`POST /v1/reload`, SIGHUP): re-read the config file, build a
//! complete new policy, and swap it in only if everything built. Requests in
//! flight keep the policy they started with. Listener addresses, TLS, DNS and
//! interception settings are fixed at startup; changing them needs a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::config;
use crate::ops::{self, Metrics, ReloadController, ReloadSummary, Reloader};
use crate::secrets::Sources;
use crate::state::Shared;

use super::{build_policy, AppError};

struct FileReloader {
    path: PathBuf,
    shared: Arc<Shared>,
    sources: Sources,
}

#[async_trait]
impl Reloader for FileReloader {
    async fn reload(&self) -> Result<ReloadSummary, Vec<String>> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        let cfg = config::load(&self.path)
            .map_err(|e| e.0.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
        let (policy, deny) = build_policy(&cfg, &self.sources).map_err(|e| vec![e.to_string()])?;
        let transforms = policy.pipeline.transforms().len();
        self.shared.swap(policy, deny);
        tracing::info!(transforms, "configuration reloaded");
        let mut details = Map::new();
        details.insert("transforms".into(), Value::from(transforms));
        Ok(ReloadSummary {
            config_hash: ops::management::config_hash(&bytes),
            details,
        })
    }
}

/// The reload controller shared by the management API and SIGHUP.
pub fn controller(
    path: &Path,
    shared: Arc<Shared>,
    sources: Sources,
    metrics: Arc<Metrics>,
) -> Result<Arc<ReloadController>, AppError> {
    let bytes =
        std::fs::read(path).map_err(|e| AppError::Ops(format!("{}: {e}", path.display())))?;
    let reloader = Arc::new(FileReloader {
        path: path.to_path_buf(),
        shared,
        sources,
    });
    Ok(ReloadController::new(
        reloader,
        ops::management::config_hash(&bytes),
        Some(metrics),
    ))
}
