//! "Is the live object already what we want?" — answered without writing anything.
//!
//! The API server adds defaults and rewrites quantities, so equality is the wrong test.
//! Desired is up to date when every field it sets has the same value live.

use serde::Serialize;
use serde_json::Value;

use crate::quantity::same_quantity;

/// True when `live` is missing or differs from `desired` in a field `desired` sets.
pub fn needs_apply<T: Serialize>(desired: &T, live: Option<&T>) -> bool {
    let Some(live) = live else { return true };
    let (Ok(desired), Ok(live)) = (serde_json::to_value(desired), serde_json::to_value(live)) else {
        return true;
    };
    !is_subset(&desired, &live)
}

/// Every field set in `desired` has an equal value in `live` (arrays: same length, element-wise).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Null, _) => true,
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, want_value)| match have.get(key) {
            Some(have_value) => is_subset(want_value, have_value),
            None => is_empty(want_value),
        }),
        (Value::Object(want), Value::Null) => want.values().all(is_empty),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (Value::Array(want), Value::Null) => want.is_empty(),
        (Value::String(want), Value::String(have)) => want == have || same_quantity(want, have),
        (want, have) => want == have,
    }
}

/// Values the API server may drop without changing meaning.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_rules() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
            (json!({"a": 1}), json!({"a": 2}), false),
            (json!({"a": 1}), json!({}), false),
            (json!({"a": null}), json!({}), true),
            (json!({"a": {}}), json!({}), true),
            (json!({"a": []}), json!({}), true),
            (json!({"l": [{"x": 1}]}), json!({"l": [{"x": 1, "default": true}]}), true),
            (json!({"l": [{"x": 1}]}), json!({"l": [{"x": 1}, {"x": 2}]}), false),
            (json!({"cpu": "0.5"}), json!({"cpu": "500m"}), true),
            (json!({"cpu": "1"}), json!({"cpu": "2"}), false),
            (json!({"name": "a"}), json!({"name": "b"}), false),
            (json!({"b": false}), json!({"b": true}), false),
        ];
        for (desired, live, expected) in cases {
            assert_eq!(is_subset(&desired, &live), expected, "{desired} within {live}");
        }
    }

    #[test]
    fn missing_live_object_needs_apply() {
        assert!(needs_apply(&json!({"a": 1}), None));
        assert!(!needs_apply(&json!({"a": 1}), Some(&json!({"a": 1, "status": {}}))));
    }
}
