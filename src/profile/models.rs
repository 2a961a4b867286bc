//! Which language models a person may use, and which one their agent's requests get. Pure.
//!
//! The list comes from the first place that sets one: the person's `spec.llm.models`, their
//! profile's default (`profiles.<profile>.llm.models`), the installation's (`--llm-models`);
//! with none, the installation's default model alone. The person's default is the
//! installation's default model when it is on their list, else the list's first. A choice
//! made with `/model` holds while it is on the list: an administrator who narrows the list
//! moves the person back to their default, without anyone editing their status.

/// The most models one list may name.
pub const MAX_MODELS: usize = 32;
/// The longest model name.
pub const MAX_MODEL_NAME: usize = 128;

/// Why a list of models is refused (for the profile defaults and the gateway's flags; the
/// CRD's schema says the same for a spec).
pub fn check(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("is empty: name at least one model, or leave the list out".into());
    }
    if list.len() > MAX_MODELS {
        return Err(format!("names {} models; at most {MAX_MODELS}", list.len()));
    }
    for name in list {
        check_name(name)?;
    }
    Ok(())
}

/// A model name as a provider spells it: printable ASCII without spaces, and not the
/// placeholder agents ask for.
pub fn check_name(name: &str) -> Result<(), String> {
    if name == "default" {
        return Err("\"default\" is what agents ask for, not a model; name the provider's model".into());
    }
    if name.is_empty() || name.len() > MAX_MODEL_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{name:?} is not a model name (1 to {MAX_MODEL_NAME} printable characters, no spaces)"));
    }
    Ok(())
}

/// One person's models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    /// What they may use, in the administrator's order. Empty only when the installation
    /// names no model at all (requests must then name theirs).
    pub allowed: Vec<String>,
    /// What they get unless they chose otherwise.
    pub default: Option<String>,
}

impl ModelChoice {
    /// `own`: the person's list (spec, else profile); `installation`: the gateway's list
    /// (may be empty); `installation_default`: the gateway's default model.
    pub fn new(own: Option<&[String]>, installation: &[String], installation_default: Option<&str>) -> Self {
        let allowed: Vec<String> = match own {
            Some(list) if !list.is_empty() => list.to_vec(),
            _ if !installation.is_empty() => installation.to_vec(),
            _ => installation_default.map(str::to_string).into_iter().collect(),
        };
        let default = match installation_default {
            Some(model) if allowed.iter().any(|m| m == model) => Some(model.to_string()),
            _ => allowed.first().cloned(),
        };
        Self { allowed, default }
    }

    /// The model a request for `default` gets: the person's choice while it is allowed.
    pub fn in_use(&self, chosen: Option<&str>) -> Option<&str> {
        match chosen.and_then(|model| self.allowed.iter().find(|m| *m == model)) {
            Some(model) => Some(model),
            None => self.default.as_deref(),
        }
    }

    /// The allowed model a person means by `asked`: its name (any case), or its number in
    /// the list `/model` shows.
    pub fn find(&self, asked: &str) -> Option<&str> {
        let asked = asked.trim();
        if let Ok(number) = asked.trim_start_matches('#').parse::<usize>() {
            return number.checked_sub(1).and_then(|i| self.allowed.get(i)).map(String::as_str);
        }
        self.allowed
            .iter()
            .find(|m| *m == asked)
            .or_else(|| self.allowed.iter().find(|m| m.eq_ignore_ascii_case(asked)))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_list_set_wins_and_the_installation_default_stays_default_when_allowed() {
        let own = list(&["gpt-big", "gpt-small"]);
        let everyone = list(&["gpt-small", "gpt-mid"]);
        let c = ModelChoice::new(Some(&own), &everyone, Some("gpt-small"));
        assert_eq!((c.allowed.as_slice(), c.default.as_deref()), (own.as_slice(), Some("gpt-small")));

        let c = ModelChoice::new(Some(&list(&["gpt-big"])), &everyone, Some("gpt-small"));
        assert_eq!(c.default.as_deref(), Some("gpt-big"), "the default is not on the person's list: their first");

        let c = ModelChoice::new(None, &everyone, Some("gpt-small"));
        assert_eq!(c.allowed, everyone, "no own list: the installation's");

        let c = ModelChoice::new(None, &[], Some("gpt-small"));
        assert_eq!((c.allowed, c.default.as_deref()), (list(&["gpt-small"]), Some("gpt-small")));

        let c = ModelChoice::new(None, &[], None);
        assert_eq!((c.allowed.len(), c.default), (0, None));
    }

    #[test]
    fn a_choice_holds_only_while_it_is_allowed() {
        let c = ModelChoice::new(Some(&list(&["gpt-small", "gpt-big"])), &[], Some("gpt-small"));
        assert_eq!(c.in_use(None), Some("gpt-small"));
        assert_eq!(c.in_use(Some("gpt-big")), Some("gpt-big"));
        assert_eq!(c.in_use(Some("gpt-gone")), Some("gpt-small"), "a choice taken off the list");
        assert_eq!(c.in_use(Some("GPT-BIG")), Some("gpt-small"), "the stored choice is an exact name");
    }

    #[test]
    fn a_person_names_a_model_by_name_in_any_case_or_by_number() {
        let c = ModelChoice::new(Some(&list(&["gpt-small", "Llama3.1:8b"])), &[], None);
        assert_eq!(c.find("llama3.1:8B"), Some("Llama3.1:8b"));
        assert_eq!(c.find(" gpt-small "), Some("gpt-small"));
        assert_eq!(c.find("2"), Some("Llama3.1:8b"));
        assert_eq!(c.find("#1"), Some("gpt-small"));
        for missing in ["0", "3", "gpt-big", "", "gpt"] {
            assert_eq!(c.find(missing), None, "{missing:?}");
        }
    }

    #[test]
    fn lists_are_checked() {
        assert!(check(&list(&["gpt-4o", "openai/gpt-4o", "llama3.1:8b"])).is_ok());
        for bad in
            [vec![], list(&["default"]), list(&["two words"]), list(&[""]), vec!["x".repeat(129)], list(&["tab\there"])]
        {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
        assert!(check(&vec!["m".to_string(); MAX_MODELS + 1]).is_err());
    }
}
