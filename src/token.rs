//! The agent's bearer token: HMAC-SHA256(master key, user uid), hex-encoded.
//!
//! Derived rather than random so the gateway can verify an agent's token without
//! reading Secrets, and so a re-created Secret always holds the same value.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Secret, SecretError, SecretSource};

/// Fewer bytes than this make the token guessable; refuse to start with them.
pub const MIN_MASTER_KEY_BYTES: usize = 32;

/// The key of a Secret holding the master key (the chart's, the operator's, one made by hand).
pub const SECRET_DATA_KEY: &str = "master-key";

/// The master key's file flag and variable, the same for the operator and the gateway.
pub const MASTER_KEY: SecretSource =
    SecretSource { what: "master key", flag: "master-key-file", env: "MOLTMATE_MASTER_KEY" };

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key is {0} bytes; at least {MIN_MASTER_KEY_BYTES} are required (e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
}

#[derive(Clone, Debug)]
pub struct MasterKey(Secret<Vec<u8>>);

impl MasterKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, MasterKeyError> {
        let bytes: Vec<u8> = bytes.into();
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < MIN_MASTER_KEY_BYTES {
            return Err(MasterKeyError::TooShort(trimmed.len()));
        }
        Ok(Self(Secret::new(trimmed)))
    }

    /// From `file` (preferred: a mounted Secret), else from env MOLTMATE_MASTER_KEY.
    pub fn load(file: Option<&Path>) -> Result<Self, SecretError> {
        MASTER_KEY.parse(file, |bytes| Self::new(bytes).map_err(|e| e.to_string()))
    }

    /// The bearer token of the agent of the MoltmateUser with this uid.
    pub fn agent_token(&self, user_uid: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose()).expect("HMAC takes keys of any length");
        mac.update(user_uid.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_hmac_of_uid() {
        let key = MasterKey::new("k".repeat(32)).unwrap();
        let a = key.agent_token("uid-a");
        assert_eq!(a.len(), 64);
        assert_eq!(a, key.agent_token("uid-a"));
        assert_ne!(a, key.agent_token("uid-b"));
        let other = MasterKey::new("j".repeat(32)).unwrap();
        assert_ne!(a, other.agent_token("uid-a"));
        // Known value, from `printf uid-a | openssl dgst -sha256 -hmac kkkk...` (32 k).
        assert_eq!(a, "1d9aff573269bab24330021888bb76b93abe104f555265006766aef9faccc68d");
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(MasterKey::new("short"), Err(MasterKeyError::TooShort(5))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        std::fs::write(&path, "short\n").unwrap();
        let refused = MasterKey::load(Some(&path)).unwrap_err().to_string();
        let named = format!("the master key in {} (--master-key-file): master key is 5 bytes", path.display());
        assert!(refused.starts_with(&named), "{refused}");
    }
}
