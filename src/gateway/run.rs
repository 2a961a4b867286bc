//! `moltmate gateway`: wiring. Watch caches of users and agent pods; the broker and the health
//! endpoints on every replica; the Telegram poller on the Lease holder only.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use prometheus_client::registry::Registry;
use teloxide::prelude::*;
use tracing::{info, warn};

use super::access::AccessDesk;
use super::activity::ActivityRecorder;
use super::agent_client::{AgentClient, AgentError};
use super::broker::{self, BrokerConfig, BrokerError, BrokerState, ProviderConfig, SystemClock};
use super::commands::{self, Action, Content, Incoming, MessageOutcome, Refusals, Settings};
use super::config::{BOT_TOKEN, GatewayArgs, LLM_API_KEY};
use super::directory::{Route, route};
use super::metrics::GatewayMetrics;
use super::model_choice::ModelStore;
use super::queues::Queues;
use super::reminders::{self, store::ReminderStore};
use super::resets;
use super::telegram::{self, ButtonPress, Handler, Outbox, Ticket, Tracker};
use super::usage_sync;
use super::web_fetch::{FetchConfig, Fetcher};
use super::webhook;
use super::worker::{Job, Worker};
use crate::cache;
use crate::crd::MoltmateUser;
use crate::names;
use crate::secret::SecretError;
use crate::shutdown::Shutdown;
use crate::token::MasterKey;
use crate::{http, leader};

/// How often the outcomes of access requests decided elsewhere (the CLI) or expired are told.
const ACCESS_ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// How long the start waits for the usage record before serving without it.
const USAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Profiles(#[from] crate::profile::DefaultsError),
    #[error(transparent)]
    Webhook(#[from] super::config::WebhookConfigError),
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    #[error("serving on {addr}: {source}")]
    Serve { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("web fetch setup: {0}")]
    Fetch(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("installing the SIGTERM handler: {0}")]
    Signals(#[source] std::io::Error),
}

/// A cache of `api` objects matching `config`, kept up to date in the background.
fn cached<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, events) = cache::reflect(api, config, trim);
    tokio::spawn(events.for_each(|_| futures::future::ready(())));
    reader
}

/// Routes each new message: answers what needs no agent, queues the rest per user.
struct Gateway {
    users: Store<MoltmateUser>,
    broker: Arc<BrokerState>,
    /// Access requests, when admins are named.
    access: Option<Arc<AccessDesk>>,
    queues: Arc<Queues<Job>>,
    outbox: Outbox,
    refusals: Mutex<Refusals>,
    metrics: Arc<GatewayMetrics>,
    settings: Settings,
    reminders: ReminderStore,
    models: ModelStore,
}

impl Gateway {
    /// Send `text`, then finish the update.
    fn answer(&self, chat_id: i64, text: String, ticket: Ticket, outcome: MessageOutcome) {
        self.answer_when_ready(chat_id, async move { text }, ticket, outcome);
    }

    /// Send the text `text` comes to (read from the cluster, say), then finish the update.
    fn answer_when_ready(
        &self,
        chat_id: i64,
        text: impl Future<Output = String> + Send + 'static,
        ticket: Ticket,
        outcome: MessageOutcome,
    ) {
        let (outbox, metrics) = (self.outbox.clone(), self.metrics.clone());
        tokio::spawn(async move {
            outbox.say(chat_id, &text.await).await;
            metrics.finished(outcome, ticket.received.elapsed().as_secs_f64());
            drop(ticket);
        });
    }

    /// `user`'s profile as the broker admits it; `None` for a user gone or not admitted.
    fn profile_of(&self, users: &[Arc<MoltmateUser>], user: &str) -> Option<crate::profile::ResolvedProfile> {
        let found = users.iter().find(|u| u.metadata.name.as_deref() == Some(user))?;
        broker::auth::admit(found, &self.broker.config().profiles).ok()
    }

    /// The settings for this message: a photo follows the sender's profile, which may refuse
    /// photos the installation takes.
    fn settings_for(&self, message: &Incoming, route: &Route, users: &[Arc<MoltmateUser>]) -> Cow<'_, Settings> {
        let (Content::Photo(_), Route::Agent { user, .. }) = (&message.content, route) else {
            return Cow::Borrowed(&self.settings);
        };
        match self.profile_of(users, user).and_then(|p| p.photos) {
            Some(false) if self.settings.media.photos => {
                let mut settings = self.settings.clone();
                settings.media.photos = false;
                Cow::Owned(settings)
            }
            _ => Cow::Borrowed(&self.settings),
        }
    }

    /// `/usage` of `user`, from the broker's counts and the user's profile.
    fn usage_text(&self, user: &str) -> String {
        match self.profile_of(&self.users.state(), user) {
            Some(profile) => commands::usage_text(&self.broker.figures(user), &profile.llm),
            None => commands::UNREACHABLE.to_string(),
        }
    }
}

impl Handler for Gateway {
    fn polled(&self) {
        self.metrics.polled();
    }

    fn press(&self, press: ButtonPress, ticket: Ticket) {
        let Some(desk) = self.access.clone() else {
            // No buttons were ever sent: nothing to decide.
            return drop(ticket);
        };
        tokio::spawn(async move {
            desk.press(&press).await;
            drop(ticket);
        });
    }

    fn handle(&self, message: Incoming, ticket: Ticket) {
        let users = self.users.state();
        let route = route(message.from_id, &users);
        let settings = self.settings_for(&message, &route, &users);
        match commands::decide(&message, route, &settings) {
            Action::Ignore => self.metrics.finished(MessageOutcome::Ignored, 0.0),
            Action::Reply { text, outcome } => self.answer(message.chat_id, text, ticket, outcome),
            Action::RequestAccess => {
                self.metrics.unknown_sender();
                let Some(desk) = self.access.clone() else { return drop(ticket) };
                let (outbox, metrics) = (self.outbox.clone(), self.metrics.clone());
                tokio::spawn(async move {
                    if let Some(text) = desk.request(&message).await {
                        outbox.say(message.chat_id, &text).await;
                    }
                    metrics.finished(MessageOutcome::Refused, ticket.received.elapsed().as_secs_f64());
                    drop(ticket);
                });
            }
            Action::Refuse => {
                self.metrics.unknown_sender();
                tracing::info!(telegram_id = message.from_id, "message from an unknown sender refused");
                let tell = self
                    .refusals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .allow(message.from_id, std::time::Instant::now());
                if tell {
                    self.answer(
                        message.chat_id,
                        commands::refusal_text(message.from_id, self.settings.access_requests),
                        ticket,
                        MessageOutcome::Refused,
                    );
                } else {
                    self.metrics.finished(MessageOutcome::Refused, 0.0);
                }
            }
            Action::Usage { user } => {
                let text = self.usage_text(&user);
                self.answer(message.chat_id, text, ticket, MessageOutcome::Command);
            }
            Action::Reminders { user, request } => {
                let store = self.reminders.clone();
                let text = async move { reminders::chat::answer(&store, &user, request).await };
                self.answer_when_ready(message.chat_id, text, ticket, MessageOutcome::Command);
            }
            Action::Model { user, request } => {
                let (store, broker) = (self.models.clone(), self.broker.clone());
                let text = async move { super::model_choice::answer(&store, &broker, &user, request).await };
                self.answer_when_ready(message.chat_id, text, ticket, MessageOutcome::Command);
            }
            Action::Forward { user, uid, work } => {
                let job = Job { ticket, chat_id: message.chat_id, from_id: message.from_id, uid, work };
                if let Err(job) = self.queues.push(&user, job) {
                    tracing::warn!(user, telegram_id = job.from_id, update_id = job.ticket.update_id, "queue full");
                    self.answer(job.chat_id, commands::QUEUE_FULL.to_string(), job.ticket, MessageOutcome::QueueFull);
                }
            }
        }
    }
}

pub async fn run(args: GatewayArgs) -> Result<(), Error> {
    let shutdown = Shutdown::on_signals().map_err(Error::Signals)?;
    let master_key = MasterKey::load(args.master_key_file.as_deref())?;
    let bot_token = BOT_TOKEN.text(args.bot_token_file.as_deref())?;
    let llm_key = LLM_API_KEY.text(args.llm_api_key_file.as_deref())?;
    let profiles = crate::profile::ProfileDefaults::load(args.profiles_file.as_deref())?;
    let webhook = args.webhook()?;
    let access_config = args.access();
    let client = Client::try_default().await.map_err(Error::Connect)?;
    let health = http::Health::new();
    let mut registry = Registry::default();
    let metrics = Arc::new(GatewayMetrics::register(&mut registry));
    crate::telemetry::register_build_info(&mut registry, "gateway");

    let users: Store<MoltmateUser> = cached(Api::all(client.clone()), cache::config(), cache::trim_user);
    // Only pods the operator made and labelled as agents (the routing checks their namespace).
    let agent_pods = format!("{}=agent,{}={}", names::LABEL_COMPONENT, names::LABEL_MANAGED_BY, names::MANAGED_BY);
    let pods: Store<Pod> = cached(Api::all(client.clone()), cache::config().labels(&agent_pods), cache::trim_agent_pod);

    // The broker serves on every replica: agents reach whichever the Service picks.
    let mut provider = ProviderConfig::new(args.llm_base_url.clone(), llm_key);
    provider.default_model = Some(args.llm_default_model.clone());
    // Whether the provider serves the model, for the log and /readyz; serving goes on either way.
    tokio::spawn(super::broker::provider_check::report(provider.clone(), health.clone()));
    let fetcher = Arc::new(Fetcher::new(FetchConfig::default()).map_err(|e| Error::Fetch(e.to_string()))?);
    let mut broker_config = BrokerConfig::new(provider);
    broker_config.profiles = profiles;
    broker_config.max_output_tokens = (args.llm_max_output_tokens > 0).then_some(args.llm_max_output_tokens);
    broker_config.models = args.llm_models.clone();
    let reminder_store = ReminderStore::new(client.clone());
    let broker = Arc::new(
        BrokerState::new(
            master_key.clone(),
            users.clone(),
            broker_config,
            fetcher,
            Arc::new(SystemClock),
            &mut registry,
        )?
        .with_reminders(reminder_store.clone()),
    );
    // The day's counts so far (this or an earlier gateway's, any replica's), before serving.
    let usage_record = usage_sync::record(Api::namespaced(client.clone(), &args.lease_namespace));
    match tokio::time::timeout(USAGE_LOAD_TIMEOUT, usage_sync::load(&usage_record, &broker)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the usage record; today's budgets start from what this gateway counts")
        }
        Err(_) => warn!(
            "no answer from the API server for the usage record; today's budgets start from what this gateway counts"
        ),
    }
    tokio::spawn(usage_sync::run(usage_record.clone(), broker.clone(), args.usage_sync_interval));
    // At exit, after the last turn: this replica's counts since its last sync.
    let settle_usage = {
        let broker = broker.clone();
        move || async move {
            match tokio::time::timeout(USAGE_LOAD_TIMEOUT, usage_sync::sync(&usage_record, &broker)).await {
                Ok(Ok(())) => info!("usage record written"),
                Ok(Err(e)) => warn!(error = %e, "writing the usage record at exit failed"),
                Err(_) => warn!("no answer from the API server for the usage record at exit"),
            }
        }
    };
    let bound = http::serve(args.broker_addr, broker::router(broker.clone()))
        .await
        .map_err(|source| Error::Serve { addr: args.broker_addr, source })?;
    info!(addr = %bound, "broker listening");
    let pruned = broker.clone();
    let transcriber = broker.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            pruned.prune();
        }
    });

    // The queues exist once this replica serves Telegram; until then there is nothing to show.
    let scraped_queues: Arc<OnceLock<Arc<Queues<Job>>>> = Arc::default();
    let (scrape_queues, scrape_metrics, scrape_users) = (scraped_queues.clone(), metrics.clone(), users.clone());
    let before_scrape: http::BeforeScrape = Box::new(move || {
        scrape_metrics
            .set_users(scrape_users.state().iter().filter(|u| u.metadata.deletion_timestamp.is_none()).count());
        if let Some(queues) = scrape_queues.get() {
            scrape_metrics.set_queue_depths(&queues.depths());
        }
    });
    let app = http::router(health.clone(), registry, before_scrape);
    let bound =
        http::serve(args.http_addr, app).await.map_err(|source| Error::Serve { addr: args.http_addr, source })?;
    info!(addr = %bound, "serving /healthz, /readyz, /metrics");

    // A reflector store wakes only one `wait_until_ready` waiter: this task is the one, and
    // passes readiness on to everything else through `synced`.
    let (users_ready, pods_ready) = (users.clone(), pods.clone());
    let ready_health = health.clone();
    let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = users_ready.wait_until_ready().await;
        let _ = pods_ready.wait_until_ready().await;
        ready_health.set_ready(true);
        synced_tx.send_replace(true);
        info!("caches synced; gateway ready");
    });

    // Asked to stop: not ready any more (no new webhooks from the Service), work in flight goes on.
    let (stopping, stopping_health) = (shutdown.clone(), health.clone());
    tokio::spawn(async move {
        stopping.requested().await;
        stopping_health.set_ready(false);
    });

    // Every way out of serving Telegram, a stop included, ends by writing the usage counts.
    let serving = async move {
        let leadership = if args.leader_elect {
            let identity = args.identity.clone().unwrap_or_else(|| leader::default_identity("moltmate-gateway"));
            let lease = "moltmate-gateway";
            match leader::acquire(client.clone(), &args.lease_namespace, lease, &identity, &shutdown).await? {
                Some(leadership) => Some(leadership),
                None => return Ok(()),
            }
        } else {
            None
        };
        // Route only from synced caches: an empty cache would refuse every user.
        tokio::select! {
            _ = synced.wait_for(|synced| *synced) => {}
            () = shutdown.requested() => {
                if let Some(leadership) = leadership {
                    leadership.release().await;
                }
                return Ok(());
            }
        }

        let bot = Bot::new(bot_token.expose()).set_api_url(args.telegram_api_url.clone());
        let bot_username = match bot.get_me().await {
            Ok(me) => me.user.username.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "getMe failed; commands addressed to @bots are not told apart");
                None
            }
        };
        let outbox = Outbox::new(bot.clone());
        let media_policy = args.media_policy();
        let worker = Arc::new(Worker {
            telegram: bot.clone(),
            media: media_policy.clone(),
            broker: transcriber,
            transcription_model: args.transcription_model(),
            outbox: outbox.clone(),
            agents: AgentClient::new(args.agent_port, args.agent_timeout)?,
            pods,
            master_key,
            activity: ActivityRecorder::new(client.clone()),
            metrics: metrics.clone(),
            wake_timeout: args.wake_timeout,
            starting_notice_after: Duration::from_secs(3),
        });
        let queue_worker = worker.clone();
        let queues = Arc::new(Queues::new(
            args.queue_size,
            Box::new(move |user, jobs| {
                tokio::spawn(queue_worker.clone().run(user, jobs));
            }),
        ));
        let _ = scraped_queues.set(queues.clone());
        // Beside the poller (or the webhook registration), on the Lease holder only.
        let announcing = {
            let resets = resets::announce(users.clone(), outbox.clone(), Duration::from_secs(1));
            let delivering =
                reminders::delivery::run(users.clone(), reminder_store.clone(), outbox.clone(), worker.clone());
            async move {
                tokio::join!(resets, delivering);
            }
        };
        let access = access_config.map(|config| {
            info!(admins = ?config.admins, mode = ?config.mode, "access requests on");
            Arc::new(AccessDesk::new(config, client.clone(), users.clone(), outbox.clone(), metrics.clone()))
        });
        // What the CLI decided, and expiries, are told from here; on the Lease holder only.
        let announcing_access = {
            let access = access.clone();
            async move {
                match access {
                    Some(desk) => desk.announce_forever(ACCESS_ANNOUNCE_EVERY).await,
                    None => std::future::pending().await,
                }
            }
        };
        let announcing = async move {
            tokio::select! {
                () = announcing => {}
                () = announcing_access => {}
            }
        };
        let access_requests = access.is_some();
        let gateway = Arc::new(Gateway {
            users,
            broker,
            access,
            queues,
            outbox,
            refusals: Mutex::new(Refusals::new(Duration::from_secs(600))),
            metrics,
            settings: Settings { allow_groups: args.allow_groups, bot_username, media: media_policy, access_requests },
            reminders: reminder_store,
            models: ModelStore::new(client.clone()),
        });
        let Some(webhook) = webhook else {
            info!(api = %args.telegram_api_url, "polling Telegram");
            let tracker = Arc::new(Tracker::default());
            let polling =
                telegram::poll(bot, tracker, gateway, args.poll_timeout, shutdown.clone(), args.drain_timeout);
            // Announcing ends with the polling, which ends once a stop is requested and drained.
            let leading = async move {
                tokio::select! {
                    () = polling => {}
                    () = announcing => {}
                }
            };
            return Ok(leader::while_leading(leadership, leading).await?);
        };
        // Every replica receives; the Lease holder (re)registers the webhook when it takes over.
        let (bound, serving) = http::serve_until(webhook.addr, webhook::router(&webhook, gateway), shutdown.clone())
            .await
            .map_err(|source| Error::Serve { addr: webhook.addr, source })?;
        info!(addr = %bound, path = %webhook.path, url = %webhook.url, "serving the Telegram webhook");
        let registering = async move {
            let mut failures = 0;
            while let Err(e) = webhook::register(&bot, &webhook).await {
                let pause = super::agent_client::backoff(failures);
                tracing::warn!(error = %e, pause = ?pause, "setWebhook failed");
                tokio::time::sleep(pause).await;
                failures += 1;
            }
            info!(url = %webhook.url, "webhook registered with Telegram");
            announcing.await
        };
        // Once asked to stop, the server takes no new requests; each one under way is answered
        // when its update is handled, so its end is the drain.
        let drain = args.drain_timeout;
        let draining = async move {
            shutdown.requested().await;
            if tokio::time::timeout(drain, serving).await.is_err() {
                warn!("stopping with webhook updates unfinished; Telegram sends them again");
            }
        };
        let work = async move {
            tokio::select! {
                () = registering => {}
                () = draining => {}
            }
        };
        Ok(leader::while_leading(leadership, work).await?)
    };
    let outcome: Result<(), Error> = serving.await;
    settle_usage().await;
    outcome
}
