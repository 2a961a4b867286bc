//! The workspace's size, enforced by the agent itself. Some StorageClasses (k3s's
//! `local-path`, hostPath volumes) do not enforce a volume's size at all, so without this one
//! user could fill the node's disk. Pure arithmetic and wording; the tools measure and refuse.

use crate::quantity::Quantity;

/// The workspace may hold this many bytes (`spec.resources.storage`, e.g. `1Gi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLimit(pub u64);

impl DiskLimit {
    /// From the profile's storage quantity; `None` if it does not parse (no limit then, as before).
    pub fn of(storage: &str) -> Option<Self> {
        Quantity::parse(storage).ok()?.whole().filter(|b| *b > 0).map(DiskLimit)
    }

    /// Bytes still free when `used` are taken.
    pub fn room(self, used: u64) -> u64 {
        self.0.saturating_sub(used)
    }

    /// Whether `adding` more bytes fit; if not, the refusal for the model (and, through it,
    /// the person).
    pub fn admit(self, used: u64, adding: u64) -> Result<(), String> {
        if adding <= self.room(used) {
            return Ok(());
        }
        Err(format!(
            "the workspace is full: {}, and this would add {}. {}",
            self.usage(used),
            bytes(adding),
            FREE_SPACE
        ))
    }

    /// After a command: a note when the workspace has gone past its size.
    pub fn over(self, used: u64) -> Option<String> {
        (used > self.0).then(|| {
            format!(
                "the workspace is now over its size: {}. Further writes are refused. {}",
                self.usage(used),
                FREE_SPACE
            )
        })
    }

    fn usage(self, used: u64) -> String {
        format!("{} of {} used", bytes(used), bytes(self.0))
    }
}

const FREE_SPACE: &str = "Free space by overwriting files with empty content, or tell the person: the administrator can raise spec.resources.storage";

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match UNITS.iter().find(|(_, size)| n >= *size) {
        Some((unit, size)) => format!("{:.1} {unit}", n as f64 / *size as f64),
        None => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_profile_quantity() {
        assert_eq!(DiskLimit::of("1Gi"), Some(DiskLimit(1 << 30)));
        assert_eq!(DiskLimit::of("512Mi"), Some(DiskLimit(512 << 20)));
        assert_eq!(DiskLimit::of("0"), None);
        assert_eq!(DiskLimit::of("lots"), None);
    }

    #[test]
    fn admits_what_fits_and_says_why_not() {
        let limit = DiskLimit(100 << 10);
        assert!(limit.admit(0, 100 << 10).is_ok());
        assert!(limit.admit(60 << 10, 40 << 10).is_ok());
        let refused = limit.admit(60 << 10, (40 << 10) + 1).unwrap_err();
        assert!(refused.starts_with("the workspace is full: 60.0 KiB of 100.0 KiB used"), "{refused}");
        assert!(refused.contains("spec.resources.storage"), "{refused}");
        assert!(limit.admit(200 << 10, 0).is_ok(), "nothing added, nothing refused");
        assert_eq!(limit.room(200 << 10), 0);
        assert!(limit.over(100 << 10).is_none());
        assert!(limit.over((100 << 10) + 1).unwrap().contains("over its size"));
    }
}
