//! What of an agent's chat request reaches the provider: only the fields an agent needs, the
//! model the installation serves, one choice, and a bounded answer. Pure: the request in, the
//! request to forward (or the reason it is refused) out.
//!
//! Every field is a cost the user's budget cannot see coming: `n: 8` is eight answers,
//! `service_tier` or `reasoning_effort` change the price, `store` keeps the conversation at the
//! provider. The agent sends `model`, `messages` and `tools`; sampling settings are let through.
//!
//! The request is read as its top-level fields, each kept as the JSON text the agent sent:
//! `messages` and `tools` grow with the conversation and are passed on as they are (checked to
//! be JSON, never built into a tree); only the few small fields ruled on here are read and
//! rewritten.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// A request's top-level fields, each as the JSON text the agent sent (borrowed from the
/// body: the conversation is not copied), or as rewritten here.
pub type Fields<'a> = BTreeMap<String, Cow<'a, RawValue>>;

/// The fields of a request body, or why it is not a JSON object.
pub fn fields(body: &[u8]) -> Result<Fields<'_>, String> {
    let sent: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => "the request body must be a JSON object".to_string(),
            Err(_) => format!("the request body is not JSON: {e}"),
        })?;
    Ok(sent.into_iter().map(|(key, value)| (key, Cow::Borrowed(value))).collect())
}

/// The value of one (small) field; None if absent.
pub fn value(fields: &Fields, key: &str) -> Option<Value> {
    // A field's text was checked to be JSON when the body was read.
    fields.get(key).map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null))
}

fn set(fields: &mut Fields, key: &str, value: &Value) {
    if let Ok(raw) = serde_json::value::to_raw_value(value) {
        fields.insert(key.to_string(), Cow::Owned(raw));
    }
}

/// Fields forwarded as sent (after the checks below).
const ALLOWED: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
];

/// The model agents ask for: whatever the installation serves.
pub const PLACEHOLDER_MODEL: &str = "default";

/// Why a request for the placeholder is refused when no model is configured.
pub const NO_MODEL: &str = "no model is configured: set the gateway's --llm-default-model (the chart's llm.defaultModel) to a model the provider serves";

/// The broker's rules for chat requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// What a request for `default` (or for no model) gets: the person's model in use.
    /// `None`: such a request is refused, since no provider serves `default`.
    pub model: Option<String>,
    /// The models a request may name; empty: any (an installation that names no model).
    pub allowed: Vec<String>,
    /// The longest answer, in tokens: a larger `max_tokens`/`max_completion_tokens` is lowered
    /// to it, and a request with neither gets `max_tokens` set to it. `None`: no cap.
    pub max_output_tokens: Option<u64>,
}

/// The request to forward, or why it is refused (for a 400 to the agent).
pub fn shape<'a>(mut fields: Fields<'a>, rules: &Shape) -> Result<Fields<'a>, String> {
    // A field sent as null is a field not sent (some clients write every field they know).
    fields.retain(|key, value| value.get() != "null" || ALLOWED.contains(&key.as_str()));
    let mut unknown: Vec<&str> = fields.keys().map(String::as_str).filter(|k| !ALLOWED.contains(k)).collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(format!(
            "the broker does not forward the field(s) {}; send only {}",
            unknown.join(", "),
            ALLOWED.join(", ")
        ));
    }
    if !matches!(value(&fields, "stream"), None | Some(Value::Null) | Some(Value::Bool(false))) {
        return Err("streaming is not supported by the broker: send the request without \"stream\": true".into());
    }
    let n = value(&fields, "n");
    if !matches!(n, None | Some(Value::Null)) && n.as_ref().and_then(Value::as_u64) != Some(1) {
        return Err("the broker forwards one choice per request: leave out \"n\" or send \"n\": 1".into());
    }
    let model = value(&fields, "model");
    match &model {
        None | Some(Value::Null) => {}
        Some(Value::String(asked)) if asked == PLACEHOLDER_MODEL => {}
        Some(Value::String(asked)) if rules.allowed.is_empty() || rules.allowed.contains(asked) => {}
        Some(other) => {
            let allowed: Vec<String> = rules.allowed.iter().map(|m| format!("{m:?}")).collect();
            return Err(format!(
                "this user may use the model(s) {} only, not {other}; ask for \"default\" (the person picks with /model)",
                allowed.join(", ")
            ));
        }
    }
    if matches!(model.as_ref().and_then(Value::as_str), None | Some(PLACEHOLDER_MODEL)) {
        let Some(model) = &rules.model else { return Err(NO_MODEL.into()) };
        set(&mut fields, "model", &Value::String(model.clone()));
    }
    if let Some(cap) = rules.max_output_tokens {
        let mut capped = false;
        for key in ["max_tokens", "max_completion_tokens"] {
            match value(&fields, key) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    let asked = value
                        .as_u64()
                        .ok_or_else(|| format!("\"{key}\" must be a positive whole number, not {value}"))?;
                    set(&mut fields, key, &Value::from(asked.min(cap)));
                    capped = true;
                }
            }
        }
        if !capped {
            set(&mut fields, "max_tokens", &Value::from(cap));
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Shape {
        Shape { model: Some("served-1".into()), allowed: vec!["served-1".into()], max_output_tokens: Some(4096) }
    }

    fn run(request: Value, rules: &Shape) -> Result<Value, String> {
        let body = request.to_string();
        let shaped = shape(fields(body.as_bytes())?, rules)?;
        Ok(serde_json::from_slice(&serde_json::to_vec(&shaped).unwrap()).unwrap())
    }

    #[test]
    fn what_the_agent_sends_is_forwarded_with_the_served_model_and_a_cap() {
        let agent = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}], "tools": [], "temperature": 0.5});
        let forwarded = run(agent, &rules()).unwrap();
        assert_eq!(forwarded["model"], "served-1");
        assert_eq!(forwarded["max_tokens"], 4096);
        assert_eq!(forwarded["temperature"], 0.5);
        assert_eq!(run(json!({"messages": []}), &rules()).unwrap()["model"], "served-1");
        assert_eq!(run(json!({"model": "served-1", "messages": []}), &rules()).unwrap()["model"], "served-1");
        // Smaller caps stay; larger ones are lowered; both spellings.
        let asked = json!({"messages": [], "max_tokens": 100, "max_completion_tokens": 1_000_000});
        let forwarded = run(asked, &rules()).unwrap();
        assert_eq!(
            (forwarded["max_tokens"].as_u64(), forwarded["max_completion_tokens"].as_u64()),
            (Some(100), Some(4096))
        );
        assert_eq!(run(json!({"messages": [], "n": 1}), &rules()).unwrap()["n"], 1);
        assert_eq!(
            run(json!({"messages": [], "store": null}), &rules()).unwrap().get("store"),
            None,
            "null is not sent"
        );
        // Without rules, the request goes as sent.
        let open = Shape { model: None, allowed: vec![], max_output_tokens: None };
        assert_eq!(
            run(json!({"model": "other", "messages": []}), &open).unwrap(),
            json!({"model": "other", "messages": []})
        );
        // Nothing asks a provider for the placeholder: without a configured model it is refused.
        for placeholder in [json!({"model": "default", "messages": []}), json!({"messages": []})] {
            assert_eq!(run(placeholder, &open).unwrap_err(), NO_MODEL);
        }
    }

    #[test]
    fn the_persons_model_is_used_and_only_their_models_may_be_named() {
        let rules = Shape {
            model: Some("gpt-big".into()),
            allowed: vec!["gpt-small".into(), "gpt-big".into()],
            max_output_tokens: None,
        };
        assert_eq!(run(json!({"model": "default", "messages": []}), &rules).unwrap()["model"], "gpt-big");
        assert_eq!(run(json!({"messages": []}), &rules).unwrap()["model"], "gpt-big");
        assert_eq!(run(json!({"model": "gpt-small", "messages": []}), &rules).unwrap()["model"], "gpt-small");
        let err = run(json!({"model": "gpt-premium", "messages": []}), &rules).unwrap_err();
        assert!(err.contains("\"gpt-small\", \"gpt-big\" only, not \"gpt-premium\""), "{err}");
        let err = run(json!({"model": "GPT-BIG", "messages": []}), &rules).unwrap_err();
        assert!(err.contains("not \"GPT-BIG\""), "names are exact at the broker: {err}");
    }

    #[test]
    fn costs_the_budget_cannot_see_are_refused() {
        let table = [
            (json!({"model": "gpt-expensive", "messages": []}), "model(s) \"served-1\" only"),
            (json!({"model": 7, "messages": []}), "model(s) \"served-1\" only, not 7"),
            (json!({"messages": [], "n": 8}), "one choice per request"),
            (json!({"messages": [], "n": "2"}), "one choice per request"),
            (json!({"messages": [], "stream": true}), "streaming is not supported"),
            (json!({"messages": [], "service_tier": "priority"}), "service_tier"),
            (json!({"messages": [], "reasoning_effort": "high", "store": true}), "reasoning_effort, store"),
            (json!({"messages": [], "logprobs": true, "top_logprobs": 20}), "logprobs, top_logprobs"),
            (json!({"messages": [], "max_tokens": -1}), "positive whole number"),
            (json!({"messages": [], "max_completion_tokens": "lots"}), "positive whole number"),
        ];
        for (request, want) in table {
            let err = run(request.clone(), &rules()).unwrap_err();
            assert!(err.contains(want), "{request}: {err}");
        }
    }
}
