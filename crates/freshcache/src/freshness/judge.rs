//! The one place that decides whether an entry may be used: every read path (memory, Redis,
//! disk, the loader's result handed to waiters), `inspect` and the inference guard call
//! [`judge`] on the entry they actually read, at one clock reading.
//!
//! The rule, in order:
//! 1. an entry stamped after `now` (`stored_at` or `as_of`) has no knowable age: **future-stamped**;
//! 2. its deadline is its own `expires_at`, capped by its type's *current* TTL from `as_of` (or
//!    `stored_at`) unless the type lets callers pick any TTL — so shortening a TTL in the config
//!    takes effect on entries already stored;
//! 3. before the deadline (plus the guard's configured clock-skew allowance, zero on every
//!    read path) it is **fresh**;
//! 4. within the caller's allowed staleness past the deadline it is **stale** (served only
//!    marked as such, never to the guard);
//! 5. otherwise **expired**.
//!
//! A fresh entry with a lineage is then held to its inputs and tags (checked by the cache's
//! `lineage` step, by the rules [`judge_input`] and [`tag_invalidates`] here): each input must be
//! fresh and hold the content it had when the entry was derived from it, and no tag of the
//! entry may have been invalidated at or after its `stored_at`.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::datatype::{DataTypeSpec, TtlOverride};
use crate::entry::{Input, Meta};
use crate::error::InputProblem;

/// What [`judge`] concluded about one entry at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// Usable until `until` (exclusive).
    Fresh {
        /// The entry's deadline.
        until: Timestamp,
    },
    /// Past its deadline `until`, but within the staleness the caller allowed.
    Stale {
        /// The entry's deadline.
        until: Timestamp,
    },
    /// Past its deadline `until` and any allowed staleness.
    Expired {
        /// The entry's deadline.
        until: Timestamp,
    },
    /// Stamped after `now` (a writer's clock ahead of ours, or our clock stepped back).
    FutureStamped,
}

/// How far past the deadline a caller accepts an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Allowance {
    /// Counted as fresh this long past the deadline (the guard's clock-skew tolerance).
    pub skew: Duration,
    /// Returned as stale this long past the deadline (zero: never).
    pub stale: Duration,
}

impl Allowance {
    /// Nothing past the deadline: what every plain read uses.
    pub const NONE: Self = Self {
        skew: Duration::ZERO,
        stale: Duration::ZERO,
    };

    /// Stale values accepted up to `max_stale` past the deadline.
    pub fn stale(max_stale: Duration) -> Self {
        Self {
            stale: max_stale,
            ..Self::NONE
        }
    }
}

/// The instant after which an entry of `ty` must not be served as fresh (rule 2 above).
#[inline]
pub(crate) fn deadline(meta: &Meta, ty: &DataTypeSpec) -> Timestamp {
    if ty.ttl_override == TtlOverride::Any {
        return meta.expires_at;
    }
    let cap = meta.as_of.unwrap_or(meta.stored_at).saturating_add(ty.ttl);
    meta.expires_at.min(cap)
}

/// Judges the entry described by `meta`, of type `ty`, at `now`.
#[inline]
pub(crate) fn judge(meta: &Meta, ty: &DataTypeSpec, now: Timestamp, allow: Allowance) -> Judgement {
    if meta.is_future_stamped_at(now) {
        return Judgement::FutureStamped;
    }
    let until = deadline(meta, ty);
    if now < until.saturating_add(allow.skew) {
        Judgement::Fresh { until }
    } else if !allow.stale.is_zero() && now < until.saturating_add(allow.stale) {
        Judgement::Stale { until }
    } else {
        Judgement::Expired { until }
    }
}

/// How a declared input was found when a derived entry was checked.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Found<'a> {
    /// Fresh (its own lineage included) until `until`.
    Fresh {
        /// The input as read.
        meta: &'a Meta,
        /// Its deadline.
        until: Timestamp,
    },
    /// Present but not fresh since `since`.
    Stale {
        /// The input as read.
        meta: &'a Meta,
        /// When it stopped being fresh.
        since: Timestamp,
    },
    /// Not in the cache.
    Missing,
}

/// The lineage rule for one input: a derived entry is vouched for by `recorded` only while the
/// input is fresh and holds the content it was derived from (same checksum: a rewrite with
/// identical content, such as a 304 re-validation, changes nothing). Returns the input's
/// deadline, or what is wrong with it — a change of content is named before staleness.
#[inline]
pub(crate) fn judge_input(recorded: &Input, found: Found<'_>) -> Result<Timestamp, InputProblem> {
    match found {
        Found::Missing => Err(InputProblem::Missing),
        Found::Fresh { meta, .. } | Found::Stale { meta, .. }
            if meta.checksum != recorded.checksum =>
        {
            Err(InputProblem::Changed { at: meta.stored_at })
        }
        Found::Stale { since, .. } => Err(InputProblem::Stale { since }),
        Found::Fresh { until, .. } => Ok(until),
    }
}

/// The tag rule: an entry carrying a tag is not fresh if it was stored at or before the tag's
/// latest invalidation (`invalidated`).
#[inline]
pub(crate) fn tag_invalidates(meta: &Meta, invalidated: Option<Timestamp>) -> bool {
    invalidated.is_some_and(|at| meta.stored_at <= at)
}

impl Judgement {
    /// The deadline, unless the entry is future-stamped.
    #[cfg(test)]
    pub fn until(self) -> Option<Timestamp> {
        match self {
            Self::Fresh { until } | Self::Stale { until } | Self::Expired { until } => Some(until),
            Self::FutureStamped => None,
        }
    }

    /// True for [`Judgement::Fresh`].
    pub fn is_fresh(self) -> bool {
        matches!(self, Self::Fresh { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Codec;
    use crate::key::Key;
    use proptest::prelude::*;

    fn odds() -> DataTypeSpec {
        crate::Config::default()
            .data_types
            .resolve(&Key::parse("odds:g1:1").unwrap())
            .unwrap()
            .as_ref()
            .clone()
    }

    fn meta(stored_at: u64, expires_at: u64, as_of: Option<u64>) -> Meta {
        Meta {
            data_type: "odds_data".into(),
            stored_at: Timestamp::from_millis(stored_at),
            expires_at: Timestamp::from_millis(expires_at),
            as_of: as_of.map(Timestamp::from_millis),
            codec: Codec::Bytes,
            etag: None,
            last_modified: None,
            checksum: 0,
            lineage: None,
            lineage_check: Default::default(),
        }
    }

    #[test]
    fn fresh_until_exactly_the_deadline_then_expired() {
        let ty = odds();
        let m = meta(1_000, 61_000, None);
        let at = Timestamp::from_millis;
        assert_eq!(
            judge(&m, &ty, at(60_999), Allowance::NONE),
            Judgement::Fresh { until: at(61_000) }
        );
        assert_eq!(
            judge(&m, &ty, at(61_000), Allowance::NONE),
            Judgement::Expired { until: at(61_000) }
        );
    }

    #[test]
    fn the_types_current_ttl_caps_a_longer_stamped_expiry() {
        let ty = odds();
        // Stored with a 1 h lifetime (an older config); the type's TTL is now 60 s.
        let m = meta(0, 3_600_000, None);
        assert_eq!(
            judge(&m, &ty, Timestamp::from_millis(60_000), Allowance::NONE),
            Judgement::Expired {
                until: Timestamp::from_millis(60_000)
            }
        );
        let mut any = ty;
        any.ttl_override = TtlOverride::Any;
        assert!(judge(&m, &any, Timestamp::from_millis(60_000), Allowance::NONE).is_fresh());
    }

    #[test]
    fn stale_only_within_the_allowed_window() {
        let ty = odds();
        let m = meta(0, 60_000, None);
        let allow = Allowance::stale(Duration::from_secs(5));
        let at = Timestamp::from_millis;
        assert!(matches!(
            judge(&m, &ty, at(64_999), allow),
            Judgement::Stale { .. }
        ));
        assert!(matches!(
            judge(&m, &ty, at(65_000), allow),
            Judgement::Expired { .. }
        ));
    }

    #[test]
    fn skew_tolerance_extends_fresh_not_stale() {
        let ty = odds();
        let m = meta(0, 60_000, None);
        let allow = Allowance {
            skew: Duration::from_secs(2),
            ..Allowance::NONE
        };
        assert!(judge(&m, &ty, Timestamp::from_millis(61_999), allow).is_fresh());
        assert!(!judge(&m, &ty, Timestamp::from_millis(62_000), allow).is_fresh());
    }

    #[test]
    fn stamped_after_now_is_future_stamped_whatever_the_allowance() {
        let ty = odds();
        let generous = Allowance {
            skew: Duration::from_secs(3600),
            stale: Duration::from_secs(3600),
        };
        let by_store = meta(10_000, 70_000, None);
        let by_as_of = meta(1_000, 61_000, Some(5_000));
        let now = Timestamp::from_millis(4_999);
        assert_eq!(
            judge(&by_store, &ty, now, generous),
            Judgement::FutureStamped
        );
        assert_eq!(
            judge(&by_as_of, &ty, now, generous),
            Judgement::FutureStamped
        );
    }

    proptest! {
        /// No fresh verdict at or past the deadline without a skew allowance, and the deadline
        /// is never later than the stamped expiry.
        #[test]
        fn never_fresh_past_the_deadline(
            stored in 0u64..1_000_000,
            life in 1u64..200_000,
            now in 0u64..2_000_000,
            stale in 0u64..100_000,
        ) {
            let ty = odds();
            let m = meta(stored, stored + life, None);
            let now = Timestamp::from_millis(now);
            let j = judge(&m, &ty, now, Allowance::stale(Duration::from_millis(stale)));
            if let Some(until) = j.until() {
                prop_assert!(until <= m.expires_at);
                prop_assert_eq!(j.is_fresh(), now < until);
            } else {
                prop_assert!(m.is_future_stamped_at(now));
            }
        }
    }
}
