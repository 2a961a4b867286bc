//! Durations: one syntax for every flag, environment variable and setting that takes one.
//!
//! Numbers with units, summed: `90s`, `5m`, `1h30m`, `1.5h`, `2h 30min`, `30d`, `500ms`; a
//! bare `0`; or plain seconds (`10`). Units: `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`,
//! `d`, `w`, and humantime's long forms (`sec`, `min`, `hours`, `days`, ...). This is Go's
//! syntax (what Kubernetes and `idleTimeout` use) and humantime's together, so every form
//! either accepted before is still accepted.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration such as 30s, 5m or 1h30m")]
    Invalid(String),
    #[error("{0:?} is negative; a duration such as 30s, 5m or 1h30m is needed")]
    Negative(String),
}

pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed.parse().map(Duration::from_secs).map_err(|_| invalid());
    }
    humantime::parse_duration(&go_forms_for_humantime(trimmed)).map_err(|_| invalid())
}

/// The Go forms humantime does not take: `.5s` and `5.s` (a side of the point left out) and
/// the Greek letter mu in `μs` (humantime knows the micro sign only).
fn go_forms_for_humantime(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    let mut chars = text.chars().peekable();
    let mut previous = None;
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !previous.is_some_and(|p: char| p.is_ascii_digit()) {
                    out.push('0');
                }
                out.push('.');
                if !chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                    out.push('0');
                }
            }
            '\u{03bc}' => out.push('\u{00b5}'),
            c => out.push(c),
        }
        previous = Some(c);
    }
    out
}

/// [`parse`] for clap's `value_parser`.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn go_forms() {
        for (text, want) in [
            ("0", secs(0.0)),
            ("0s", secs(0.0)),
            ("90s", secs(90.0)),
            ("5m", secs(300.0)),
            ("1h30m", secs(5400.0)),
            ("1.5h", secs(5400.0)),
            ("500ms", secs(0.5)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", secs(0.5)),
            ("5.s", secs(5.0)),
            ("+5s", secs(5.0)),
            (" 30s ", secs(30.0)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn humantime_forms() {
        for (text, want) in [
            ("30d", secs(30.0 * 86400.0)),
            ("2w", secs(14.0 * 86400.0)),
            ("2h 30min", secs(9000.0)),
            ("1hour 12min 5s", secs(4325.0)),
            ("10 seconds", secs(10.0)),
            ("2mins", secs(120.0)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn plain_seconds() {
        assert_eq!(parse("10"), Ok(secs(10.0)));
        assert_eq!(parse("007"), Ok(secs(7.0)));
    }

    #[test]
    fn refusals_say_what_is_wanted() {
        for text in
            ["", "  ", "soon", "5x", "5 s x", "1..5s", "s", "1e3s", "99999999999999999999h", "18446744073709551616"]
        {
            let err = parse(text).unwrap_err();
            assert_eq!(err, DurationError::Invalid(text.into()), "{text:?}");
            assert_eq!(err.to_string(), format!("{text:?} is not a duration such as 30s, 5m or 1h30m"));
        }
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())), "not silently 5s");
        assert_eq!(parse_arg("later").unwrap_err(), "\"later\" is not a duration such as 30s, 5m or 1h30m");
    }
}
