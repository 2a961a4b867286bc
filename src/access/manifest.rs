//! The MoltmateUser an approval makes, and its manifest for GitOps (pure).

use std::collections::BTreeMap;

use crate::crd::{MoltmateUser, MoltmateUserSpec, Profile};

/// The request a user came from, on the object, for whoever reads it later.
pub const ANNOTATION_REQUEST: &str = "moltmate.io/access-request";
pub const ANNOTATION_APPROVED_BY: &str = "moltmate.io/approved-by";

pub fn user(name: &str, telegram_id: i64, profile: Profile, code: &str, by: &str) -> MoltmateUser {
    let mut user = MoltmateUser::new(name, MoltmateUserSpec::new(telegram_id, profile));
    user.metadata.annotations = Some(BTreeMap::from([
        (ANNOTATION_REQUEST.to_string(), code.to_string()),
        (ANNOTATION_APPROVED_BY.to_string(), by.to_string()),
    ]));
    user
}

/// The manifest to commit, as YAML.
pub fn yaml(user: &MoltmateUser) -> String {
    let mut value = serde_json::to_value(user).expect("a MoltmateUser always serializes");
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    serde_saphyr::to_string(&value).expect("JSON always becomes YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_the_person_and_profile() {
        let text = yaml(&user("ann", 1001, Profile::Family, "ABCD2345", "telegram:42"));
        for needle in [
            "apiVersion: moltmate.io/v1alpha1",
            "kind: MoltmateUser",
            "name: ann",
            "userId: 1001",
            "profile: family",
            "ABCD2345",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(!text.contains("status"), "{text}");
        let back: MoltmateUser = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back.spec.telegram.user_id, 1001);
    }
}
