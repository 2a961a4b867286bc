//! Kubernetes quantities, parsed just far enough to compare and order them.
//!
//! The API server rewrites quantities to a canonical form (`0.5` becomes `500m`), so
//! comparing desired and live objects as text would see a change that is not there.

use std::cmp::Ordering;

/// A quantity in thousandths of its unit (milli-units), exact for every value the CRD allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 10Gi)")]
pub struct ParseQuantityError(pub String);

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, ParseQuantityError> {
        let err = || ParseQuantityError(text.to_string());
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let multiplier: i128 = match suffix {
            "" => 1000,
            "m" => 1,
            "k" => 1000 * 1000,
            "M" => 1000 * 1000_i128.pow(2),
            "G" => 1000 * 1000_i128.pow(3),
            "T" => 1000 * 1000_i128.pow(4),
            "P" => 1000 * 1000_i128.pow(5),
            "E" => 1000 * 1000_i128.pow(6),
            "Ki" => 1000 * 1024,
            "Mi" => 1000 * 1024_i128.pow(2),
            "Gi" => 1000 * 1024_i128.pow(3),
            "Ti" => 1000 * 1024_i128.pow(4),
            "Pi" => 1000 * 1024_i128.pow(5),
            "Ei" => 1000 * 1024_i128.pow(6),
            _ => return Err(err()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') || fraction.len() > 9 {
            return Err(err());
        }
        let digits = |s: &str| -> Result<i128, ParseQuantityError> {
            if s.is_empty() { Ok(0) } else { s.parse::<i128>().map_err(|_| err()) }
        };
        // Scale the fraction to nine decimal places so the arithmetic stays integral.
        let scale = 10_i128.pow(9);
        let nanos = digits(whole)?.checked_mul(scale).ok_or_else(err)?
            + digits(fraction)? * 10_i128.pow(9 - fraction.len() as u32);
        let milli = nanos.checked_mul(multiplier).ok_or_else(err)? / scale;
        Ok(Quantity(milli))
    }

    pub fn millis(self) -> i128 {
        self.0
    }

    /// Whole units (bytes, for a memory or storage quantity); `None` below zero or past u64.
    pub fn whole(self) -> Option<u64> {
        u64::try_from(self.0 / 1000).ok()
    }
}

/// True when both texts are the same quantity (`0.5` and `500m`, `1Gi` and `1024Mi`).
pub fn same_quantity(a: &str, b: &str) -> bool {
    match (Quantity::parse(a), Quantity::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The smaller of two quantities, as written; unparsable text loses to parsable text.
pub fn min_quantity<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (Quantity::parse(a), Quantity::parse(b)) {
        (Ok(x), Ok(y)) => match x.cmp(&y) {
            Ordering::Greater => b,
            _ => a,
        },
        (Err(_), Ok(_)) => b,
        _ => a,
    }
}

/// Serde for an optional quantity written as Kubernetes takes it: a string (`500m`, `2Gi`) or
/// a whole number (`cpu: 1`, as YAML writes it unquoted), kept as its text.
pub mod int_or_string {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Whole(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Written>::deserialize(deserializer)?.map(|written| match written {
            Written::Text(text) => text,
            Written::Whole(number) => number.to_string(),
        }))
    }
}

/// The CRD schema of such a quantity: a string or an integer (`x-kubernetes-int-or-string`),
/// checked by the API server: a string must be a quantity, and either must be above zero.
pub fn int_or_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let pattern = crate::crd::QUANTITY_PATTERN;
    let rule = format!(
        "type(self) == int ? self > 0 : (self.matches(r'{pattern}') && quantity(self).isGreaterThan(quantity('0')))"
    );
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{ "type": "integer" }, { "type": "string" }],
        "x-kubernetes-validations": [
            { "rule": rule, "message": "must be a quantity above zero, such as 500m, 2, 512Mi or 10Gi" }
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_crd_allows() {
        let cases = [
            ("500m", 500),
            ("0.5", 500),
            (".5", 500),
            ("2", 2000),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("512Mi", 512 * 1024 * 1024 * 1000),
            ("1.5Gi", 3 * 512 * 1024 * 1024 * 1000),
            ("10G", 10_000_000_000_000),
        ];
        for (text, millis) in cases {
            assert_eq!(Quantity::parse(text).map(Quantity::millis), Ok(millis), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for text in ["", "m", "1.2.3", "-1", "1Xi", "1 Gi", "Gi", "1e3"] {
            assert!(Quantity::parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn compares_across_spellings() {
        assert!(same_quantity("0.5", "500m"));
        assert!(same_quantity("1Gi", "1024Mi"));
        assert!(!same_quantity("1G", "1Gi"));
        assert_eq!(min_quantity("100m", "0.05"), "0.05");
        assert_eq!(min_quantity("128Mi", "1Gi"), "128Mi");
    }
}
