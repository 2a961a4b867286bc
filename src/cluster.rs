//! How the admin's commands (`moltmate audit`, `moltmate users`) reach a cluster: kubectl's
//! `--kubeconfig` and `--context`, else `$KUBECONFIG`, `~/.kube/config` or in-cluster, with
//! timeouts that suit a command run by hand.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("kubeconfig: {0}")]
pub struct KubeconfigError(pub String);

impl ClusterArgs {
    /// The client configuration these arguments name.
    pub async fn config(&self) -> Result<Config, KubeconfigError> {
        let err = |e: &dyn std::fmt::Display| KubeconfigError(e.to_string());
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let mut config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| KubeconfigError(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| err(&e))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| err(&e))?,
            (None, None) => Config::infer().await.map_err(|e| err(&e))?,
        };
        // A one-shot command: fail fast rather than wait out the client's long defaults.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        Ok(config)
    }

    pub async fn client(&self) -> Result<Client, KubeconfigError> {
        Client::try_from(self.config().await?).map_err(|e| KubeconfigError(e.to_string()))
    }
}
