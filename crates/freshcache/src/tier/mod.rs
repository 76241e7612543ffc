//! Storage tiers. A tier stores and returns entries; it knows nothing about TTL rules or other
//! tiers, except that it never hands out an entry whose `expires_at` has passed.

use std::fmt;

pub mod breaker;
pub mod disk;
pub mod memory;
pub mod redis;

/// Where a value was found or stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TierKind {
    /// L1: in-process memory.
    Memory,
    /// L2: Redis, shared between processes.
    Redis,
    /// L3: blob files indexed by SQLite.
    Disk,
}

impl TierKind {
    /// Lowercase name, as used in headers and metrics labels.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TierKind::Memory => "memory",
            TierKind::Redis => "redis",
            TierKind::Disk => "disk",
        }
    }
}

impl fmt::Display for TierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
