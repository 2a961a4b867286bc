//! Secrets (the master key, the provider's key, the bot token, the agent's token, the webhook
//! secret) held so that they cannot be printed.

use std::fmt;

/// A value kept out of output: `Debug` shows `Secret(..)`, and there is no `Display`, so a
/// secret cannot be formatted into a log line, an error or a header by mistake (reqwest's
/// `bearer_auth` takes any `Display`); [`Secret::expose`] marks each place it is used.
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: impl Into<T>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            key: Secret<String>,
            bytes: Secret<Vec<u8>>,
        }
        let config = Config { key: Secret::new("sk-very-secret"), bytes: Secret::new(b"master-bytes".to_vec()) };
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{:?}", config.key)] {
            assert!(!shown.contains("very-secret") && !shown.contains("master"), "{shown}");
            assert!(!shown.contains("109, 97"), "nor as bytes: {shown}");
        }
        assert_eq!(format!("{:?}", config.key), "Secret(..)");
        assert_eq!(config.key.expose(), "sk-very-secret");
    }

    #[test]
    fn there_is_no_display() {
        // Resolves only while exactly one impl applies: implementing Display for Secret adds
        // the second, and this stops compiling.
        trait AmbiguousIfDisplay<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfDisplay<()> for T {}
        impl<T: ?Sized + fmt::Display> AmbiguousIfDisplay<u8> for T {}
        <Secret<String> as AmbiguousIfDisplay<_>>::check();
    }
}
