//! `/reminders`, `/reminders cancel N` and `/timezone` in the chat: what the person asked
//! (pure, [`parse`]) and the answer, read from and written to the store.

use jiff::Timestamp;

use super::schedule;
use super::store::{ReminderStore, StoreError};
use crate::crd::MoltmateUser;

/// A reminders command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    Cancel(u64),
    /// `/reminders` with arguments it does not take: the usage, nothing changed.
    Usage,
    ShowTimezone,
    SetTimezone(String),
    /// Back to the administrator's `spec.timezone` (or UTC).
    ResetTimezone,
}

pub const USAGE: &str = "/reminders lists your reminders; /reminders cancel 3 cancels reminder #3.";

/// `args` of `/reminders`.
pub fn parse_reminders(args: &str) -> Request {
    let words: Vec<&str> = args.split_whitespace().collect();
    match words.as_slice() {
        [] | ["list"] => Request::List,
        ["cancel" | "delete" | "remove", n] => {
            n.trim_start_matches('#').parse().map(Request::Cancel).unwrap_or(Request::Usage)
        }
        _ => Request::Usage,
    }
}

/// `args` of `/timezone`.
pub fn parse_timezone(args: &str) -> Request {
    match args.trim() {
        "" => Request::ShowTimezone,
        "reset" | "default" => Request::ResetTimezone,
        zone => Request::SetTimezone(zone.to_string()),
    }
}

fn zone_of(user: &MoltmateUser) -> (String, jiff::tz::TimeZone) {
    let chosen = user.status.as_ref().and_then(|s| s.reminders.as_ref()).and_then(|b| b.timezone.as_deref());
    schedule::effective_zone(chosen, user.spec.timezone.as_deref())
}

/// The list as the person reads it.
pub fn list_text(user: &MoltmateUser) -> String {
    let (name, zone) = zone_of(user);
    let pending = user.status.as_ref().and_then(|s| s.reminders.as_ref()).map(|b| b.pending.as_slice()).unwrap_or(&[]);
    if pending.is_empty() {
        return format!(
            "You have no reminders. Ask your assistant, e.g. \"remind me tomorrow at 8 to call mum\". (Time zone: {name})"
        );
    }
    let lines: Vec<String> = pending.iter().map(|r| schedule::describe(r, &zone, &name)).collect();
    format!("Your reminders:\n{}\n\nTo cancel one: /reminders cancel {}", lines.join("\n"), pending[0].id)
}

/// The answer to `request` from `user`, after any change it asks for.
pub async fn answer(store: &ReminderStore, user: &str, request: Request) -> String {
    let result = match request {
        Request::Usage => return USAGE.to_string(),
        Request::List => store.read(user).await.map(|u| list_text(&u)),
        Request::Cancel(id) => store
            .update(user, |_, book| schedule::cancel(book, id))
            .await
            .map(|r| format!("Cancelled reminder #{}: {}", r.id, r.text)),
        Request::ShowTimezone => store.read(user).await.map(|u| {
            let (name, zone) = zone_of(&u);
            let now = Timestamp::now().to_zoned(zone).strftime("%H:%M");
            format!("Your time zone is {name} (it is {now} there). Change it with /timezone Europe/Berlin.")
        }),
        Request::SetTimezone(name) => {
            let zone = match schedule::time_zone(&name) {
                Ok(zone) => zone,
                Err(reason) => return format!("{reason}."),
            };
            let name = schedule::canonical_name(&zone, &name);
            let now = Timestamp::now().to_zoned(zone).strftime("%H:%M");
            store
                .update(user, |_, book| {
                    book.timezone = Some(name.clone());
                    Ok(())
                })
                .await
                .map(|()| format!("Your time zone is now {name} (it is {now} there)."))
        }
        Request::ResetTimezone => store
            .update(user, |u, book| {
                book.timezone = None;
                Ok(u.spec.timezone.clone().unwrap_or_else(|| "UTC".into()))
            })
            .await
            .map(|name| format!("Your time zone is back to {name}.")),
    };
    match result {
        Ok(text) => text,
        Err(StoreError::Refused(reason)) => {
            let mut chars = reason.chars();
            let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
            format!("{first}{}.", chars.as_str())
        }
        Err(e) => {
            tracing::warn!(user, error = %e, "reminders command failed");
            "Your reminders cannot be reached just now. Please try again in a minute.".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Profile, Reminder, ReminderBook};

    #[test]
    fn arguments_parse() {
        assert_eq!(parse_reminders(""), Request::List);
        assert_eq!(parse_reminders(" cancel 3 "), Request::Cancel(3));
        assert_eq!(parse_reminders("cancel #4"), Request::Cancel(4));
        assert_eq!(parse_reminders("cancel three"), Request::Usage);
        assert_eq!(parse_reminders("frobnicate"), Request::Usage);
        assert_eq!(parse_timezone(""), Request::ShowTimezone);
        assert_eq!(parse_timezone(" Europe/Berlin "), Request::SetTimezone("Europe/Berlin".into()));
        assert_eq!(parse_timezone("reset"), Request::ResetTimezone);
    }

    #[test]
    fn the_list_is_in_the_persons_zone() {
        let mut u = MoltmateUser::new("al", MoltmateUserSpec::new(1, Profile::Public));
        assert!(list_text(&u).contains("no reminders"));
        u.spec.timezone = Some("Europe/Berlin".into());
        u.status = Some(MoltmateUserStatus {
            reminders: Some(ReminderBook {
                pending: vec![Reminder {
                    id: 4,
                    text: "call mum".into(),
                    due: "2026-12-04T07:00:00Z".into(),
                    repeat: None,
                    timezone: "Europe/Berlin".into(),
                }],
                ..ReminderBook::default()
            }),
            ..MoltmateUserStatus::default()
        });
        let text = list_text(&u);
        assert!(text.contains("#4 Fri 2026-12-04 08:00 (Europe/Berlin): call mum"), "{text}");
        assert!(text.contains("/reminders cancel 4"), "{text}");
    }
}
