//! What calls take and return: values to store, hits, lookups, read options.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::entry::{Codec, Entry, Meta, encode_value};
use crate::error::Result;
use crate::key::Key;
use crate::tier::TierKind;

/// A value to store, with what the producer knows about it.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct Value {
    /// The value as stored and served: opaque to the cache, read by its `codec`.
    pub bytes: Bytes,
    /// How to read them.
    pub codec: Codec,
    /// When the signal was true, per its producer; age is measured from here.
    pub as_of: Option<Timestamp>,
    /// A per-call TTL, subject to the data type's override policy.
    pub ttl: Option<Duration>,
    /// Origin validator.
    pub etag: Option<String>,
    /// Origin validator.
    pub last_modified: Option<String>,
    /// The keys the value was computed from: it is fresh only while each of them is fresh and
    /// unchanged (see [`Value::derived_from`]).
    pub derived_from: Vec<Key>,
    /// Whether the inputs must be fresh for the write to be accepted.
    pub input_checks: InputChecks,
    /// Tags, for one-step invalidation with `Cache::invalidate_tag`.
    pub tags: Vec<String>,
}

/// What a write of a derived value demands of its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputChecks {
    /// Every input must be fresh: a missing or stale one refuses the write.
    #[default]
    Required,
    /// The write is accepted whatever the inputs' state; those found are recorded (the value is
    /// then fresh only while they are fresh and unchanged), missing ones are not.
    Unchecked,
}

impl Value {
    /// Opaque bytes.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Self {
            bytes: b.into(),
            ..Self::default()
        }
    }

    /// `v` as JSON.
    ///
    /// # Errors
    /// [`crate::Error::Codec`] when `v` cannot be serialised.
    pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<Self> {
        Ok(Self::bytes(encode_value("", v, Codec::Json)?).codec(Codec::Json))
    }

    /// `v` as MessagePack.
    ///
    /// # Errors
    /// [`crate::Error::Codec`] when `v` cannot be serialised.
    pub fn msgpack<T: Serialize + ?Sized>(v: &T) -> Result<Self> {
        Ok(Self::bytes(encode_value("", v, Codec::MsgPack)?).codec(Codec::MsgPack))
    }

    /// Sets the codec.
    pub fn codec(mut self, c: Codec) -> Self {
        self.codec = c;
        self
    }

    /// Sets the producer's `as_of`.
    pub fn as_of(mut self, t: Timestamp) -> Self {
        self.as_of = Some(t);
        self
    }

    /// Sets a per-call TTL.
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = Some(d);
        self
    }

    /// Sets the ETag validator.
    pub fn etag(mut self, e: impl Into<String>) -> Self {
        self.etag = Some(e.into());
        self
    }

    /// Declares the keys the value was computed from. Each is read at write time: a missing or
    /// stale one refuses the write ([`crate::Error::InputNotFresh`]) unless
    /// [`Value::unchecked_inputs`] is given; inputs that lead back to the key refuse it too
    /// ([`crate::Error::LineageCycle`]). The value expires with its earliest input, and stops
    /// being fresh as soon as any input is rewritten with other content, deleted, invalidated or
    /// expires — on every tier, process and instance.
    pub fn derived_from(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.derived_from = keys.into_iter().collect();
        self
    }

    /// Accepts the write whatever the state of its inputs (see [`InputChecks::Unchecked`]).
    pub fn unchecked_inputs(mut self) -> Self {
        self.input_checks = InputChecks::Unchecked;
        self
    }

    /// Tags the value: `Cache::invalidate_tag` makes every value carrying the tag not fresh.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the Last-Modified validator.
    pub fn last_modified(mut self, lm: impl Into<String>) -> Self {
        self.last_modified = Some(lm.into());
        self
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Self::bytes(b)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Self::bytes(b)
    }
}

impl From<&'static [u8]> for Value {
    fn from(b: &'static [u8]) -> Self {
        Self::bytes(Bytes::from_static(b))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::bytes(s).codec(Codec::Text)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::bytes(Bytes::copy_from_slice(s.as_bytes())).codec(Codec::Text)
    }
}

/// Where a returned value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The tier that held a fresh copy.
    Tier(TierKind),
    /// The loader given to `get_or_fetch`, just now.
    Loader,
}

impl Source {
    /// Lowercase name for headers: `memory`, `redis`, `disk`, `loader`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Source::Tier(t) => t.name(),
            Source::Loader => "loader",
        }
    }
}

/// A value found in the cache.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The entry as read (shared with the memory tier: cloning a hit copies no bytes).
    pub entry: Arc<Entry>,
    /// Where it came from.
    pub source: Source,
    /// The clock reading the lookup used.
    pub now: Timestamp,
    /// The instant after which the value is no longer served: its own expiry, capped by its
    /// type's current TTL.
    pub deadline: Timestamp,
}

impl Hit {
    /// The value bytes (shared, not copied).
    #[must_use]
    pub fn value(&self) -> &Bytes {
        &self.entry.value
    }

    /// The entry's metadata.
    #[must_use]
    pub fn meta(&self) -> &Meta {
        &self.entry.meta
    }

    /// Age of the signal at lookup time.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.entry.meta.age(self.now)
    }

    /// Lifetime left at lookup time (zero for stale hits).
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.deadline.duration_since(self.now)
    }
}

/// What a lookup found.
#[derive(Clone, Debug)]
#[must_use]
pub enum Lookup {
    /// A value within its TTL.
    Fresh(Hit),
    /// A value past its TTL, returned only because the call allowed it.
    Stale(Hit),
    /// Nothing usable.
    Miss,
}

impl Lookup {
    /// The hit when fresh; `None` for a stale hit or a miss.
    #[must_use]
    pub fn fresh(self) -> Option<Hit> {
        match self {
            Lookup::Fresh(h) => Some(h),
            _ => None,
        }
    }

    /// True for [`Lookup::Fresh`].
    #[must_use]
    pub fn is_fresh(&self) -> bool {
        matches!(self, Lookup::Fresh(_))
    }

    /// True for [`Lookup::Miss`].
    #[must_use]
    pub fn is_miss(&self) -> bool {
        matches!(self, Lookup::Miss)
    }
}

/// Where an entry lives and how it stands, without counting as a read.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The clock reading used.
    pub now: Timestamp,
    /// The entry (memory copy if held, else the disk copy), expired or not.
    pub entry: Option<Arc<Entry>>,
    /// Held in this process's memory tier.
    pub in_memory: bool,
    /// Index facts when on disk.
    pub disk: Option<crate::tier::disk::RowInfo>,
    /// Whether a plain `get` would return it now.
    pub fresh: bool,
    /// When the entry found stopped being fresh, if it did (it stays reported stale, not
    /// missing, until the sweep removes it).
    pub stale_since: Option<Timestamp>,
    /// For a derived or tagged entry: its inputs (and invalidated tags) as found in this
    /// process's memory or on disk.
    pub inputs: Vec<crate::report::InputCheck>,
    /// Keys whose current entry was derived from this one.
    pub dependents: Vec<String>,
}

/// Per-call read options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct ReadOptions {
    /// Return an expired entry as [`Lookup::Stale`] if it expired at most this long ago.
    /// Zero (the default) never returns stale data.
    pub max_stale: Duration,
}

/// Why a lookup is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// To return a value to a caller.
    Serve,
    /// For the freshness guard: an expired entry comes back as `Stale` so its age can be
    /// reported (it is still removed, and never returned to a caller as a value).
    Audit,
}
