//! The MoltmateUser name an approved person gets: from their @username when it makes a safe,
//! free name, else with their Telegram id, else `tg-<id>`. A username is chosen by a stranger,
//! so only lowercase letters and digits survive, and no name may land the user's namespace
//! (`moltmate-<name>`) on the release namespace.

use crate::names::user_namespace;

/// Names that are never given, whatever the release namespace is called.
const RESERVED: &[&str] = &["system"];
/// Room kept for `-<id>` within the 54 characters a name may have.
const SLUG_MAX: usize = 30;

/// The first free candidate: `ann`, `ann-1001`, `tg-1001`, then `tg-1001-2`, ...
pub fn derive(
    username: Option<&str>,
    telegram_id: i64,
    release_namespace: &str,
    taken: impl Fn(&str) -> bool,
) -> String {
    let slug = username.map(slug).filter(|s| !s.is_empty());
    let mut candidates: Vec<String> = Vec::new();
    if let Some(slug) = &slug {
        candidates.push(slug.clone());
        candidates.push(format!("{slug}-{telegram_id}"));
    }
    candidates.push(format!("tg-{telegram_id}"));
    let usable = |name: &str| {
        !RESERVED.contains(&name)
            && user_namespace(name).is_ok_and(|ns| ns != release_namespace)
            && name.len() <= 54
            && !taken(name)
    };
    if let Some(name) = candidates.into_iter().find(|c| usable(c)) {
        return name;
    }
    (2..).map(|n| format!("tg-{telegram_id}-{n}")).find(|c| usable(c)).expect("some suffix is free")
}

/// Lowercase letters and digits, everything else one `-`, no `-` at either end.
fn slug(username: &str) -> String {
    let mut out = String::new();
    for c in username.chars() {
        match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => out.push(c),
            _ if !out.ends_with('-') => out.push('-'),
            _ => {}
        }
        if out.len() >= SLUG_MAX {
            break;
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> bool {
        false
    }

    #[test]
    fn the_username_when_free_then_with_the_id_then_tg_id() {
        assert_eq!(derive(Some("Ann_Lee"), 1001, "moltmate-system", none), "ann-lee");
        assert_eq!(derive(Some("ann"), 1001, "moltmate-system", |n| n == "ann"), "ann-1001");
        assert_eq!(derive(Some("ann"), 1001, "moltmate-system", |n| n.starts_with("ann")), "tg-1001");
        assert_eq!(derive(None, 1001, "moltmate-system", none), "tg-1001");
        assert_eq!(derive(None, 1001, "moltmate-system", |n| n == "tg-1001"), "tg-1001-2");
    }

    #[test]
    fn hostile_usernames_give_safe_names() {
        for (username, expected) in [
            ("__", "tg-5"),
            ("../etc", "etc"),
            ("Ünïcode_Ok", "n-code-ok"),
            ("a.b.c", "a-b-c"),
            ("x".repeat(40).as_str(), "x".repeat(30).as_str()),
        ] {
            let name = derive(Some(username), 5, "moltmate-system", none);
            assert_eq!(name, expected, "{username}");
            assert!(user_namespace(&name).is_ok());
        }
    }

    #[test]
    fn never_the_release_namespace() {
        assert_eq!(derive(Some("system"), 5, "moltmate-other", none), "system-5");
        assert_eq!(derive(Some("ops"), 5, "moltmate-ops", none), "ops-5");
    }
}
