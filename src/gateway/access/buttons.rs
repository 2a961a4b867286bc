//! The access buttons (pure): what each one's data says, who may press them, and the keyboard
//! an admin gets with a request.

use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use crate::crd::Profile;

/// What a button asks for. Its data is `access:approve:<code>:<profile>` or
/// `access:deny:<code>` (at most 64 bytes, Telegram's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonAction {
    Approve { code: String, profile: Profile },
    Deny { code: String },
}

impl ButtonAction {
    pub fn data(&self) -> String {
        match self {
            ButtonAction::Approve { code, profile } => format!("access:approve:{code}:{}", profile.as_str()),
            ButtonAction::Deny { code } => format!("access:deny:{code}"),
        }
    }

    pub fn parse(data: &str) -> Option<Self> {
        let mut parts = data.strip_prefix("access:")?.split(':');
        let action = match (parts.next()?, parts.next()?, parts.next()) {
            ("approve", code, Some(profile)) => ButtonAction::Approve {
                code: code.to_string(),
                profile: Profile::ALL.into_iter().find(|p| p.as_str() == profile)?,
            },
            ("deny", code, None) => ButtonAction::Deny { code: code.to_string() },
            _ => return None,
        };
        parts.next().is_none().then_some(action)
    }
}

/// What a press gets, before any I/O: only an admin's press of a well-formed button for an
/// offered profile goes on to a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressVerdict {
    NotAnAdmin,
    Unknown,
    Decide(ButtonAction),
}

pub fn judge_press(admins: &[i64], offered: &[Profile], from_id: i64, data: &str) -> PressVerdict {
    if !admins.contains(&from_id) {
        return PressVerdict::NotAnAdmin;
    }
    match ButtonAction::parse(data) {
        Some(ButtonAction::Approve { profile, .. }) if !offered.contains(&profile) => PressVerdict::Unknown,
        Some(action) => PressVerdict::Decide(action),
        None => PressVerdict::Unknown,
    }
}

/// The admins' buttons for a request: one Approve per offered profile, and Deny.
pub fn buttons(code: &str, profiles: &[Profile]) -> InlineKeyboardMarkup {
    let approve = profiles.iter().map(|p| {
        let action = ButtonAction::Approve { code: code.to_string(), profile: *p };
        InlineKeyboardButton::callback(format!("Approve: {}", p.as_str()), action.data())
    });
    let deny = ButtonAction::Deny { code: code.to_string() };
    InlineKeyboardMarkup::new([approve.collect::<Vec<_>>(), vec![InlineKeyboardButton::callback("Deny", deny.data())]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_data_round_trips_and_fits() {
        for action in [
            ButtonAction::Approve { code: "ABCDEFGH".into(), profile: Profile::HighSecurity },
            ButtonAction::Deny { code: "ABCDEFGH".into() },
        ] {
            assert!(action.data().len() <= 64);
            assert_eq!(ButtonAction::parse(&action.data()), Some(action));
        }
        for bad in ["", "access:approve:X", "access:approve:X:root", "access:deny:X:extra", "other:deny:X"] {
            assert_eq!(ButtonAction::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_an_admins_press_of_an_offered_profile_decides() {
        let offered = [Profile::Public, Profile::Family];
        let approve = ButtonAction::Approve { code: "C".into(), profile: Profile::Family }.data();
        assert_eq!(judge_press(&[42], &offered, 7, &approve), PressVerdict::NotAnAdmin);
        assert!(matches!(judge_press(&[42], &offered, 42, &approve), PressVerdict::Decide(_)));
        let personal = ButtonAction::Approve { code: "C".into(), profile: Profile::Personal }.data();
        assert_eq!(judge_press(&[42], &offered, 42, &personal), PressVerdict::Unknown, "not offered");
        assert_eq!(judge_press(&[42], &offered, 42, "junk"), PressVerdict::Unknown);
        let markup = buttons("C", &offered);
        assert_eq!(markup.inline_keyboard[0].len(), 2);
        assert_eq!(markup.inline_keyboard[1][0].text, "Deny");
    }
}
