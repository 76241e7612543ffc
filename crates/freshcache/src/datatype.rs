//! Data types: what a key prefix means for TTL, size, placement and compression.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result, clip};
use crate::key::Key;

/// Which tiers hold entries of a type. Disk is the durable tier, shared by the processes of a
/// host; the placements without it are for hot, short-lived signals that need no disk copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Placement {
    /// Memory, Redis (when configured) and disk: hot, small, shared signals.
    #[default]
    MemoryRedisDisk,
    /// Memory and disk, never Redis.
    MemoryAndDisk,
    /// Redis (when configured) and disk: shared, but not worth process memory.
    RedisAndDisk,
    /// Disk only: large objects that would crowd the faster tiers.
    DiskOnly,
    /// This process's memory only: nothing reaches disk or Redis, and other processes
    /// neither see the entries nor share their loads (each process caches its own).
    MemoryOnly,
    /// Memory and Redis (when configured), never disk: shared between instances through
    /// Redis, gone when Redis is (without Redis it is [`Placement::MemoryOnly`]).
    MemoryRedis,
}

impl Placement {
    /// Whether entries go to the memory tier.
    #[must_use]
    pub fn in_memory(self) -> bool {
        matches!(
            self,
            Placement::MemoryRedisDisk
                | Placement::MemoryAndDisk
                | Placement::MemoryOnly
                | Placement::MemoryRedis
        )
    }

    /// Whether entries go to Redis (when Redis is configured).
    #[must_use]
    pub fn in_redis(self) -> bool {
        matches!(
            self,
            Placement::MemoryRedisDisk | Placement::RedisAndDisk | Placement::MemoryRedis
        )
    }

    /// Whether entries go to disk.
    #[must_use]
    pub fn in_disk(self) -> bool {
        !matches!(self, Placement::MemoryOnly | Placement::MemoryRedis)
    }
}

/// Whether a caller may choose a TTL other than the type's on a `set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TtlOverride {
    /// The type's TTL always applies.
    Never,
    /// A caller may shorten the TTL, never lengthen it.
    #[default]
    ShorterOnly,
    /// A caller may choose any TTL.
    Any,
}

/// Whether, and for how long past its TTL, an expired value may be returned — always marked
/// [`crate::Lookup::Stale`], and never to the inference guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StalePolicy {
    /// Expired values are misses (the default).
    #[default]
    Never,
    /// Serve a value expired at most this long while one background refresh runs.
    WhileRevalidate(Duration),
    /// Serve a value expired at most this long when the loader fails.
    IfError(Duration),
}

impl StalePolicy {
    /// How long past expiry a value is kept for this policy (zero for `Never`).
    #[must_use]
    pub fn window(self) -> Duration {
        match self {
            StalePolicy::Never => Duration::ZERO,
            StalePolicy::WhileRevalidate(d) | StalePolicy::IfError(d) => d,
        }
    }
}

/// Everything the cache knows about one data type.
#[derive(Clone, Debug, PartialEq)]
pub struct DataTypeSpec {
    /// Position in the registry; indexes per-type statistics.
    pub id: usize,
    /// Name, e.g. `odds_data`.
    pub name: Arc<str>,
    /// Key prefix, e.g. `odds:`.
    pub prefix: String,
    /// Lifetime of a value from when it was produced or stored.
    pub ttl: Duration,
    /// Largest value accepted, in bytes.
    pub max_value_size: u64,
    /// Tiers that hold the type.
    pub placement: Placement,
    /// Values larger than this many bytes are compressed on disk.
    pub compress_above: u64,
    /// Allowed number of `:`-separated key segments, prefix included.
    pub segments: RangeInclusive<usize>,
    /// Per-call TTL policy.
    pub ttl_override: TtlOverride,
    /// Whether expired values may be served, marked stale, by `get_or_load`.
    pub stale: StalePolicy,
    /// Fraction of the lifetime (0..1) before expiry in which a read through `get_or_load`
    /// refreshes the value in the background; 0 turns refresh-ahead off.
    pub refresh_ahead: f64,
}

impl DataTypeSpec {
    /// The TTL for a write that asked for `requested`, per this type's policy.
    ///
    /// # Errors
    /// [`Error::TtlNotAllowed`] when the policy refuses the requested TTL.
    pub fn effective_ttl(&self, key: &Key, requested: Option<Duration>) -> Result<Duration> {
        let Some(req) = requested else {
            return Ok(self.ttl);
        };
        let refuse = |reason: String| Error::TtlNotAllowed {
            key: clip(key.as_str()),
            requested: req,
            reason,
        };
        if req < Duration::from_millis(1) {
            return Err(refuse("ttl must be at least 1ms".into()));
        }
        match self.ttl_override {
            TtlOverride::Any => Ok(req),
            TtlOverride::ShorterOnly if req <= self.ttl => Ok(req),
            TtlOverride::ShorterOnly => Err(refuse(format!(
                "{} allows only ttls up to {:?}",
                self.name, self.ttl
            ))),
            TtlOverride::Never => Err(refuse(format!(
                "{} does not allow per-call ttls",
                self.name
            ))),
        }
    }
}

impl fmt::Display for DataTypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A process-unique registry id (never 0, which means "no hint" in a key; 48 bits would take
/// centuries to run out); equality ignores it, so registries built from the same types still
/// compare equal.
#[derive(Clone, Copy, Debug)]
struct RegistryId(u64);

impl RegistryId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl PartialEq for RegistryId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The declared data types, resolved by longest matching key prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Registry {
    /// Names this registry in the resolutions keys remember (see [`Key`]).
    uid: RegistryId,
    types: Vec<Arc<DataTypeSpec>>,
    /// Indexes into `types`, longest prefix first.
    by_prefix_len: Vec<usize>,
    default: Option<usize>,
}

impl Registry {
    /// A registry of `types` (ids are reassigned to positions) with an optional fallback type.
    #[must_use]
    pub fn new(types: Vec<DataTypeSpec>, default: Option<usize>) -> Self {
        let types = types
            .into_iter()
            .enumerate()
            .map(|(id, mut t)| {
                t.id = id;
                Arc::new(t)
            })
            .collect::<Vec<Arc<DataTypeSpec>>>();
        let mut by_prefix_len: Vec<usize> = (0..types.len()).collect();
        by_prefix_len.sort_by_key(|&i| std::cmp::Reverse(types[i].prefix.len()));
        Self {
            uid: RegistryId::next(),
            types,
            by_prefix_len,
            default,
        }
    }

    /// Every declared type, in id order.
    #[must_use]
    pub fn types(&self) -> &[Arc<DataTypeSpec>] {
        &self.types
    }

    /// The type named `name`.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&Arc<DataTypeSpec>> {
        self.types.iter().find(|t| &*t.name == name)
    }

    /// The type a key belongs to, checking its segment count.
    ///
    /// # Errors
    /// [`Error::UnknownDataType`] when no prefix matches and no default type is set;
    /// [`Error::InvalidKey`] when the segment count is outside the type's range.
    #[inline]
    pub fn resolve(&self, key: &Key) -> Result<&Arc<DataTypeSpec>> {
        // A key this registry resolved before (and validated then: its text cannot change).
        match key
            .resolved()
            .get(self.uid.0)
            .and_then(|i| self.types.get(i))
        {
            Some(ty) => Ok(ty),
            None => self.resolve_by_prefix(key),
        }
    }

    /// [`Registry::resolve`] for a key this registry has not resolved before.
    #[cold]
    #[inline(never)]
    fn resolve_by_prefix(&self, key: &Key) -> Result<&Arc<DataTypeSpec>> {
        // Types are kept longest prefix first, so the first match is the longest.
        let ty = self
            .by_prefix_len
            .iter()
            .map(|&i| &self.types[i])
            .find(|t| key.as_str().starts_with(&t.prefix))
            .or_else(|| self.default.and_then(|i| self.types.get(i)))
            .ok_or_else(|| Error::UnknownDataType {
                key: clip(key.as_str()),
                known: self
                    .types
                    .iter()
                    .map(|t| t.prefix.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let n = key.segment_count();
        if !ty.segments.contains(&n) {
            return Err(Error::InvalidKey {
                key: clip(key.as_str()),
                reason: format!(
                    "{} keys have {}..={} segments, this one has {n}",
                    ty.name,
                    ty.segments.start(),
                    ty.segments.end()
                ),
            });
        }
        key.resolved().set(self.uid.0, ty.id);
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn registry() -> Registry {
        Config::default().data_types
    }

    #[test]
    fn seed_prefixes_resolve_to_their_types() {
        let r = registry();
        let name = |k: &str| r.resolve(&Key::parse(k).unwrap()).unwrap().name.to_string();
        assert_eq!(name("llm:features:c1:2026-11-24"), "llm_features");
        assert_eq!(name("news:espn:a1"), "news_articles");
        assert_eq!(name("odds:g1:1700000000"), "odds_data");
    }

    #[test]
    fn a_key_remembers_its_type_per_registry_never_across_registries() {
        let defaults = registry();
        let key = Key::parse("odds:g1:1700000000").unwrap();
        assert_eq!(&*defaults.resolve(&key).unwrap().name, "odds_data");
        // The same key (and a clone carrying the remembered type) in a registry whose types
        // are in another order resolves by that registry's own prefixes.
        let mut types: Vec<DataTypeSpec> = defaults.types().iter().map(|t| (**t).clone()).collect();
        types.reverse();
        let reversed = Registry::new(types, None);
        let clone = key.clone();
        assert_eq!(&*reversed.resolve(&clone).unwrap().name, "odds_data");
        assert_eq!(&*defaults.resolve(&clone).unwrap().name, "odds_data");
        // A registry without the type refuses the key even though it was resolved before.
        let others: Vec<DataTypeSpec> = defaults
            .types()
            .iter()
            .filter(|t| &*t.name != "odds_data")
            .map(|t| (**t).clone())
            .collect();
        assert!(Registry::new(others, None).resolve(&key).is_err());
        assert_eq!(key, clone, "the remembered type is not part of the key");
    }

    #[test]
    fn unknown_prefix_is_an_error_not_an_infinite_ttl() {
        let err = registry()
            .resolve(&Key::parse("weather:nyc").unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::UnknownDataType { .. }), "{err}");
        assert!(err.to_string().contains("odds:"));
    }

    #[test]
    fn segment_count_is_checked_per_type() {
        let r = registry();
        for bad in ["odds:g1", "odds:g1:1:2", "llm:features:c1", "news:espn"] {
            let err = r.resolve(&Key::parse(bad).unwrap()).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad}: {err}");
        }
        assert!(
            r.resolve(&Key::parse("news:espn:a1:etag9").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn ttl_override_policies() {
        let r = registry();
        let key = Key::parse("odds:g1:1").unwrap();
        let mut odds = (**r.by_name("odds_data").unwrap()).clone();
        assert_eq!(
            odds.effective_ttl(&key, None).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            odds.effective_ttl(&key, Some(Duration::from_secs(5)))
                .unwrap(),
            Duration::from_secs(5)
        );
        assert!(
            odds.effective_ttl(&key, Some(Duration::from_secs(61)))
                .is_err()
        );
        assert!(odds.effective_ttl(&key, Some(Duration::ZERO)).is_err());
        odds.ttl_override = TtlOverride::Never;
        assert!(
            odds.effective_ttl(&key, Some(Duration::from_secs(5)))
                .is_err()
        );
        odds.ttl_override = TtlOverride::Any;
        assert_eq!(
            odds.effective_ttl(&key, Some(Duration::from_secs(3600)))
                .unwrap(),
            Duration::from_secs(3600)
        );
    }
}
