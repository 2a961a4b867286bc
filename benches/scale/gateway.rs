//! `moltmate gateway` as a real process against the control plane, with the Telegram and LLM
//! stand-ins in this process (the command line of `support::GatewayCommand`).

use std::time::{Duration, Instant};

use moltmates::dev::llm::LlmStandIn;
use moltmates::dev::telegram::TelegramStandIn;

use crate::support::stack::LLM_KEY;
use crate::support::{BOT_TOKEN, GatewayCommand, Proc, TestEnv, free_port, http_get};

/// The stand-ins and ports are here for benchmarks that send traffic (4 and 5).
#[allow(dead_code)]
pub struct Gateway {
    pub proc: Proc,
    pub http_port: u16,
    pub broker_port: u16,
    pub telegram: TelegramStandIn,
    pub llm: LlmStandIn,
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Start the gateway (its RBAC must be installed); returns at once, before it is ready.
    pub async fn spawn(env: &TestEnv, extra: &[&str]) -> Result<Gateway, String> {
        let any = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        let llm = LlmStandIn::start(any, Some(LLM_KEY.into())).await.map_err(|e| format!("LLM stand-in: {e}"))?;
        let telegram = TelegramStandIn::start(any, BOT_TOKEN).await.map_err(|e| format!("Telegram stand-in: {e}"))?;
        let (http_port, broker_port) = (free_port(), free_port());
        let proc = GatewayCommand::against(env, &telegram, &llm, broker_port).with(extra).spawn_on(env, http_port);
        Ok(Gateway { proc, http_port, broker_port, telegram, llm })
    }

    /// Wait until its caches of users and agent pods are synced: `/readyz` answers 200, or,
    /// failing that, the gateway polls Telegram (which it does only from synced caches).
    /// Returns when that was seen, and whether `/readyz` said so (given 10 s more to follow
    /// the polling); an error if neither happens within `timeout`.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(Instant, bool), String> {
        let deadline = Instant::now() + timeout;
        let readyz = || async { http_get(self.http_port, "/readyz").await.is_some_and(|(code, _)| code == 200) };
        while Instant::now() < deadline {
            if readyz().await {
                return Ok((Instant::now(), true));
            }
            if self.telegram.stats().get_updates_calls > 0 {
                let polling = Instant::now();
                while polling.elapsed() < Duration::from_secs(10) {
                    if readyz().await {
                        return Ok((polling, true));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Ok((polling, false));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("the gateway neither answered /readyz nor polled Telegram within {timeout:?}"))
    }
}
