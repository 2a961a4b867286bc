//! `/model` in the chat: which model the person's assistant uses, and picking another from
//! their list. The choice is kept in `status.model` of their MoltmateUser (the gateway writes
//! the status subresource only); the broker reads it on every request and enforces the list.
//! What the person asked and the answer are pure ([`parse`], [`decide`]); [`answer`] reads
//! and writes the user.

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::broker::BrokerState;
use super::broker::auth;
use crate::crd::MoltmateUser;
use crate::profile::models::ModelChoice;

/// The field manager of `status.model` (each of the gateway's status fields has its own).
const FIELD_MANAGER: &str = "moltmate-gateway-model";

/// A `/model` command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Show,
    /// A model's name or its number in the list.
    Choose(String),
    /// Back to the default.
    Reset,
}

pub fn parse(args: &str) -> Request {
    match args.trim() {
        "" | "list" => Request::Show,
        "default" | "reset" => Request::Reset,
        asked => Request::Choose(asked.to_string()),
    }
}

/// What to answer, and the choice to store first if any (`Some(None)`: clear it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub store: Option<Option<String>>,
    pub text: String,
}

impl Decision {
    fn say(text: String) -> Self {
        Self { store: None, text }
    }
}

/// The answer to `request`, given the person's models and what they chose before.
pub fn decide(models: &ModelChoice, chosen: Option<&str>, request: &Request) -> Decision {
    let Some(in_use) = models.in_use(chosen) else {
        return Decision::say("No model is configured for you; ask the administrator.".into());
    };
    if models.allowed.len() < 2 {
        return Decision::say(format!("Your assistant uses {in_use}, the only model available to you."));
    }
    match request {
        Request::Show => Decision::say(show_text(models, in_use)),
        Request::Reset => {
            let default = models.default.as_deref().unwrap_or(in_use);
            // Stored even when nothing changes now: a choice left behind would come back if
            // the administrator put its model on the list again.
            let store = chosen.is_some().then_some(None);
            Decision { store, text: format!("Your assistant uses the default model again: {default}.") }
        }
        Request::Choose(asked) => match models.find(asked) {
            Some(model) if model == in_use && chosen == Some(model) => {
                Decision::say(format!("Your assistant already uses {model}."))
            }
            Some(model) => Decision {
                store: Some(Some(model.to_string())),
                text: format!("From now on your assistant uses {model}."),
            },
            None => Decision::say(format!(
                "{asked} is not one of your models. You may choose: {}.",
                models.allowed.join(", ")
            )),
        },
    }
}

/// The person's models (two or more), numbered, with the one in use marked.
fn show_text(models: &ModelChoice, in_use: &str) -> String {
    let mut text = format!("Your assistant uses {in_use}. Your models:\n");
    for (i, model) in models.allowed.iter().enumerate() {
        let mut marks = Vec::new();
        if model == in_use {
            marks.push("in use");
        }
        if models.default.as_deref() == Some(model) {
            marks.push("default");
        }
        let marks = if marks.is_empty() { String::new() } else { format!(" ({})", marks.join(", ")) };
        text.push_str(&format!("\n{}. {model}{marks}", i + 1));
    }
    text.push_str("\n\nSend /model and a name or number to switch, /model default to go back.");
    text
}

/// Reads and writes the person's choice.
#[derive(Clone)]
pub struct ModelStore {
    api: Api<MoltmateUser>,
}

impl ModelStore {
    pub fn new(client: Client) -> Self {
        Self { api: Api::all(client) }
    }

    async fn write(&self, user: &str, choice: Option<String>) -> Result<(), kube::Error> {
        let patch = json!({ "status": { "model": choice } });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        self.api.patch_status(user, &params, &Patch::Merge(&patch)).await.map(drop)
    }
}

/// The answer to `request` from `user`, after storing any choice it makes.
pub async fn answer(store: &ModelStore, broker: &BrokerState, user: &str, request: Request) -> String {
    const UNREACHABLE: &str = "Your model settings cannot be reached just now. Please try again in a minute.";
    // As stored now, not the watch cache, which may lag a choice just made.
    let live = match store.api.get_opt(user).await {
        Ok(Some(live)) => live,
        Ok(None) => return UNREACHABLE.into(),
        Err(e) => {
            tracing::warn!(user, error = %e, "reading the model choice failed");
            return UNREACHABLE.into();
        }
    };
    let profile = match auth::admit(&live, &broker.config().profiles) {
        Ok(profile) => profile,
        Err(e) => return format!("Your assistant is not available: {e}."),
    };
    let chosen = live.status.as_ref().and_then(|s| s.model.as_deref());
    let decision = decide(&broker.model_choice(&profile), chosen, &request);
    if let Some(choice) = decision.store {
        let model = choice.clone().unwrap_or_else(|| "(default)".into());
        if let Err(e) = store.write(user, choice).await {
            tracing::warn!(user, error = %e, "storing the model choice failed");
            return UNREACHABLE.into();
        }
        tracing::info!(user, model, "model choice changed");
    }
    decision.text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(names: &[&str], default: &str) -> ModelChoice {
        let list: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        ModelChoice::new(Some(&list), &[], Some(default))
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse(""), Request::Show);
        assert_eq!(parse(" list "), Request::Show);
        assert_eq!(parse("default"), Request::Reset);
        assert_eq!(parse(" gpt-big "), Request::Choose("gpt-big".into()));
        assert_eq!(parse("2"), Request::Choose("2".into()));
    }

    #[test]
    fn the_list_marks_the_model_in_use_and_the_default() {
        let m = models(&["gpt-small", "gpt-big"], "gpt-small");
        let shown = decide(&m, Some("gpt-big"), &Request::Show);
        assert_eq!(shown.store, None);
        assert_eq!(
            shown.text,
            "Your assistant uses gpt-big. Your models:\n\n1. gpt-small (default)\n2. gpt-big (in use)\n\n\
             Send /model and a name or number to switch, /model default to go back."
        );
        let single = decide(&models(&["gpt-small"], "gpt-small"), None, &Request::Show);
        assert_eq!(single.text, "Your assistant uses gpt-small, the only model available to you.");
    }

    #[test]
    fn a_choice_is_stored_only_when_it_is_on_the_list() {
        let m = models(&["gpt-small", "gpt-big"], "gpt-small");
        let picked = decide(&m, None, &Request::Choose("GPT-big".into()));
        assert_eq!(picked.store, Some(Some("gpt-big".into())), "stored as the list spells it");
        assert_eq!(picked.text, "From now on your assistant uses gpt-big.");
        assert_eq!(decide(&m, None, &Request::Choose("2".into())).store, Some(Some("gpt-big".into())));

        let refused = decide(&m, None, &Request::Choose("gpt-premium".into()));
        assert_eq!(refused.store, None);
        assert_eq!(refused.text, "gpt-premium is not one of your models. You may choose: gpt-small, gpt-big.");

        let again = decide(&m, Some("gpt-big"), &Request::Choose("gpt-big".into()));
        assert_eq!((again.store, again.text.as_str()), (None, "Your assistant already uses gpt-big."));
        // The default picked explicitly is stored: it stays if the default changes later.
        assert_eq!(decide(&m, None, &Request::Choose("gpt-small".into())).store, Some(Some("gpt-small".into())));
    }

    #[test]
    fn going_back_clears_the_choice() {
        let m = models(&["gpt-small", "gpt-big"], "gpt-small");
        let reset = decide(&m, Some("gpt-big"), &Request::Reset);
        assert_eq!(reset.store, Some(None));
        assert_eq!(reset.text, "Your assistant uses the default model again: gpt-small.");
        assert_eq!(decide(&m, None, &Request::Reset).store, None, "nothing to clear");
        let gone = decide(&m, Some("gpt-gone"), &Request::Reset);
        assert_eq!(gone.store, Some(None), "a choice taken off the list is cleared too");
    }

    #[test]
    fn with_one_model_there_is_nothing_to_pick() {
        let m = models(&["gpt-small"], "gpt-small");
        let d = decide(&m, None, &Request::Choose("gpt-big".into()));
        assert_eq!(
            (d.store, d.text.as_str()),
            (None, "Your assistant uses gpt-small, the only model available to you.")
        );
        let none = ModelChoice::new(None, &[], None);
        assert_eq!(decide(&none, None, &Request::Show).text, "No model is configured for you; ask the administrator.");
    }
}
