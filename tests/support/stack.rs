//! The product's stack for tests and benchmarks: a control plane installed with both service
//! accounts, the LLM and Telegram stand-ins, the node stand-in running real agents, the
//! operator, and the gateway's command line against all of them.

use kube::Client;
use moltmates::dev::llm::{LlmStandIn, MODEL};
use moltmates::dev::telegram::{StandInConfig, TelegramStandIn};

use super::{Proc, SYSTEM_NS, TestEnv, free_port};

pub const BOT_TOKEN: &str = "123456:test-bot-token";
pub const LLM_KEY: &str = "test-llm-key";

/// A control plane as installed, with the gateway's RBAC and the stand-ins listening on
/// loopback. Agents, operator and gateway are started by the test, which decides when.
pub struct Stack {
    pub env: TestEnv,
    pub client: Client,
    pub llm: LlmStandIn,
    pub tg: TelegramStandIn,
    /// Where the gateway's broker will listen, and where the agents call it.
    pub broker_port: u16,
}

impl Stack {
    pub async fn up(name: &str) -> Stack {
        Self::up_with(name, StandInConfig::new(BOT_TOKEN)).await
    }

    /// The same, with the Telegram stand-in configured by the test (its token must be
    /// `BOT_TOKEN`).
    pub async fn up_with(name: &str, telegram: StandInConfig) -> Stack {
        let env = TestEnv::up(name);
        env.install().await;
        env.install_gateway_rbac().await;
        let client = env.admin().await;
        let loopback = "127.0.0.1:0".parse().unwrap();
        let llm = LlmStandIn::start(loopback, Some(LLM_KEY.into())).await.expect("start the LLM stand-in");
        let tg = TelegramStandIn::start_with(loopback, telegram).await.expect("start the Telegram stand-in");
        Stack { env, client, llm, tg, broker_port: free_port() }
    }

    /// The gateway's command line against this stack's stand-ins and broker port.
    pub fn gateway(&self) -> GatewayCommand {
        GatewayCommand::against(&self.env, &self.tg, &self.llm, self.broker_port)
    }
}

/// `moltmate gateway` with its secrets in files, as the chart mounts them.
#[derive(Clone)]
pub struct GatewayCommand {
    args: Vec<String>,
}

impl GatewayCommand {
    /// Against the Telegram API at `telegram_url` and the model at `llm_url`; writes the bot
    /// token and the provider key into the environment's directory.
    pub fn new(env: &TestEnv, telegram_url: &str, llm_url: &str, broker_port: u16) -> Self {
        let path = |name: &str| env.dir.join(name).to_string_lossy().into_owned();
        std::fs::write(env.dir.join("bot.token"), BOT_TOKEN).expect("write the bot token");
        std::fs::write(env.dir.join("llm.key"), LLM_KEY).expect("write the provider key");
        let args = [
            "gateway",
            "--telegram-api-url",
            telegram_url,
            "--bot-token-file",
            &path("bot.token"),
            "--llm-base-url",
            llm_url,
            "--llm-default-model",
            MODEL,
            "--llm-api-key-file",
            &path("llm.key"),
            "--master-key-file",
            &path("master.key"),
            "--broker-addr",
            &format!("127.0.0.1:{broker_port}"),
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            "gateway-0",
            "--poll-timeout",
            "5s",
        ];
        Self { args: args.iter().map(|a| a.to_string()).collect() }
    }

    /// Against the stand-ins `tg` and `llm`.
    pub fn against(env: &TestEnv, tg: &TelegramStandIn, llm: &LlmStandIn, broker_port: u16) -> Self {
        Self::new(env, &tg.url(), &llm.url(), broker_port)
    }

    /// The same gateway under another replica name (its own identity in the Lease).
    pub fn replica(&self, identity: &str, broker_port: u16) -> Self {
        self.set("--identity", identity).set("--broker-addr", &format!("127.0.0.1:{broker_port}"))
    }

    /// With `flag` set to `value` (replaced where the command has it already).
    pub fn set(&self, flag: &str, value: &str) -> Self {
        let mut args = self.args.clone();
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
        Self { args }
    }

    /// With more arguments at the end.
    pub fn with(&self, extra: &[&str]) -> Self {
        Self { args: self.args.iter().cloned().chain(extra.iter().map(|a| a.to_string())).collect() }
    }

    /// Its arguments, with /healthz, /readyz and /metrics on `port`.
    pub fn serving_on(&self, port: u16) -> Vec<String> {
        self.set("--http-addr", &format!("127.0.0.1:{port}")).args
    }

    /// The gateway process and its /metrics port.
    pub fn spawn(&self, env: &TestEnv) -> (Proc, u16) {
        let port = free_port();
        (self.spawn_on(env, port), port)
    }

    /// The gateway process with /healthz, /readyz and /metrics on `port`.
    pub fn spawn_on(&self, env: &TestEnv, port: u16) -> Proc {
        env.spawn("gateway", &env.gateway_kubeconfig(), &as_strs(&self.serving_on(port)))
    }

    /// The gateway as PID 1 of its own PID namespace, as in its container.
    pub fn spawn_pid1(&self, env: &TestEnv) -> Proc {
        env.spawn_pid1("gateway", &env.gateway_kubeconfig(), &as_strs(&self.serving_on(free_port())))
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
