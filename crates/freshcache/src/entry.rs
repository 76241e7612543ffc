//! An entry: value bytes plus the metadata that decides its freshness.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::clock::Timestamp;
use crate::error::{Error, Result, clip};

/// How the value bytes are to be read. Values are never executable: a codec names a data
/// format, and decoding is plain serde.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// Opaque bytes.
    #[default]
    Bytes,
    /// UTF-8 JSON.
    Json,
    /// MessagePack.
    MsgPack,
    /// UTF-8 text (e.g. an article body).
    Text,
}

impl Codec {
    /// Stable wire number.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Codec::Bytes => 0,
            Codec::Json => 1,
            Codec::MsgPack => 2,
            Codec::Text => 3,
        }
    }

    /// From its wire number.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Codec::Bytes,
            1 => Codec::Json,
            2 => Codec::MsgPack,
            3 => Codec::Text,
            _ => return None,
        })
    }

    /// The HTTP media type.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Codec::Bytes => "application/octet-stream",
            Codec::Json => "application/json",
            Codec::MsgPack => "application/msgpack",
            Codec::Text => "text/plain; charset=utf-8",
        }
    }

    /// The codec for an HTTP media type (parameters ignored); unknown types are bytes.
    #[must_use]
    pub fn from_media_type(mt: &str) -> Self {
        let essence = mt
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Codec::Json,
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Codec::MsgPack
            }
            t if t.starts_with("text/") => Codec::Text,
            _ => Codec::Bytes,
        }
    }

    /// Short lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Codec::Bytes => "bytes",
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
            Codec::Text => "text",
        }
    }
}

/// Metadata stamped once at write time and carried unchanged across tiers and restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Data type name.
    pub data_type: Arc<str>,
    /// When the cache stored the value.
    pub stored_at: Timestamp,
    /// First instant at which the value is no longer fresh.
    pub expires_at: Timestamp,
    /// When the producer says the signal was true, if it said.
    pub as_of: Option<Timestamp>,
    /// How to read the value.
    pub codec: Codec,
    /// Validator from the origin.
    pub etag: Option<String>,
    /// Validator from the origin.
    pub last_modified: Option<String>,
    /// xxh3-64 of the value bytes.
    pub checksum: u64,
    /// What the value was computed from and the tags it carries, if anything.
    pub lineage: Option<Box<Lineage>>,
    /// The last check of the lineage made in this process (not stored; `Default::default()`
    /// when building a `Meta`).
    pub lineage_check: LineageCheck,
}

/// One declared input of a derived entry, as it stood when the entry was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The input's key.
    pub key: String,
    /// xxh3-64 of the input's value: the entry stays fresh only while the input still has it.
    pub checksum: u64,
    /// When the input was stored (for reports: its age when it was used).
    pub stored_at: Timestamp,
}

/// An entry's lineage: the inputs it was derived from and its tags. Stored in the envelope, so
/// it travels with the entry across tiers, processes, instances and restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Declared inputs, in the order given.
    pub inputs: Vec<Input>,
    /// Tags, for one-step invalidation of every entry carrying one.
    pub tags: Vec<String>,
}

impl Lineage {
    /// A lineage of `inputs` and `tags`.
    #[must_use]
    pub fn new(inputs: Vec<Input>, tags: Vec<String>) -> Self {
        Self { inputs, tags }
    }

    /// True when there is nothing to record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.tags.is_empty()
    }
}

/// The last check that found a derived entry's inputs and tags sound, kept on the entry in
/// memory (never stored): at which cache change count (plus one; zero is "never") and until
/// when. Beside the other metadata rather than behind the lineage's pointer, and two atomics
/// rather than a lock, so that a memory hit on a derived value costs two loads more than a
/// plain one and no extra cache miss. A torn pair is harmless: a reader only uses it when its
/// count equals the current one, and every check stores a deadline computed at that count or
/// later. Copies and comparisons ignore it.
#[derive(Debug, Default)]
pub struct LineageCheck {
    epoch: AtomicU64,
    until: AtomicU64,
}

impl LineageCheck {
    /// The deadline found by the last check, if it was made at change count `epoch`.
    #[inline]
    pub(crate) fn checked_until(&self, epoch: u64) -> Option<Timestamp> {
        (self.epoch.load(Ordering::Acquire) == epoch.wrapping_add(1))
            .then(|| Timestamp::from_millis(self.until.load(Ordering::Acquire)))
    }

    /// Remembers a check made at change count `epoch` that found the lineage sound until
    /// `until`.
    pub(crate) fn remember(&self, epoch: u64, until: Timestamp) {
        self.until.store(until.as_millis(), Ordering::Release);
        self.epoch.store(epoch.wrapping_add(1), Ordering::Release);
    }
}

impl Clone for LineageCheck {
    /// No remembered check: it belongs to the copy it was made on.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for LineageCheck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LineageCheck {}

impl Meta {
    /// True when the entry may be served as fresh at `now`: strictly before `expires_at`, and
    /// not stamped in the future (see [`Meta::is_future_stamped_at`]).
    #[must_use]
    pub fn is_fresh_at(&self, now: Timestamp) -> bool {
        now < self.expires_at && !self.is_future_stamped_at(now)
    }

    /// True when the entry was stamped later than `now`: by a writer whose clock is ahead of
    /// this reader's, or before this reader's wall clock stepped back. Its real age cannot be
    /// known (judged from the stamp it would look younger than it is), so such an entry is
    /// never served. There is no tolerance: an entry stamped even a millisecond ahead is a miss.
    #[must_use]
    pub fn is_future_stamped_at(&self, now: Timestamp) -> bool {
        self.stored_at > now || self.as_of.is_some_and(|t| t > now)
    }

    /// Time left before expiry at `now` (zero once expired).
    #[must_use]
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.expires_at.duration_since(now)
    }

    /// Age of the signal at `now`: from `as_of` when known, else from `stored_at`.
    #[must_use]
    pub fn age(&self, now: Timestamp) -> Duration {
        now.duration_since(self.as_of.unwrap_or(self.stored_at))
    }

    /// The inputs the value was derived from (empty for a plain value).
    #[must_use]
    pub fn inputs(&self) -> &[Input] {
        self.lineage.as_deref().map_or(&[], |l| &l.inputs)
    }

    /// The entry's tags.
    #[must_use]
    pub fn tags(&self) -> &[String] {
        self.lineage.as_deref().map_or(&[], |l| &l.tags)
    }

    /// The lifetime the entry was given.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.expires_at
            .duration_since(self.as_of.unwrap_or(self.stored_at))
    }
}

/// A cached value with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Metadata.
    pub meta: Meta,
    /// The value, uncompressed.
    pub value: Bytes,
}

impl Entry {
    /// Value size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.value.len() as u64
    }

    /// Decodes the value by its codec into `T` (JSON or MessagePack).
    ///
    /// # Errors
    /// [`Error::Codec`] when the bytes are not a `T` in the entry's codec, or the codec is not
    /// a serde format.
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let codec_err = |reason: String| Error::Codec {
            key: clip(key),
            reason,
        };
        match self.meta.codec {
            Codec::Json => {
                serde_json::from_slice(&self.value).map_err(|e| codec_err(e.to_string()))
            }
            Codec::MsgPack => {
                rmp_serde::from_slice(&self.value).map_err(|e| codec_err(e.to_string()))
            }
            other => Err(codec_err(format!(
                "value is stored as {}, not a serde format",
                other.name()
            ))),
        }
    }
}

/// Encodes `value` with a serde codec.
///
/// # Errors
/// [`Error::Codec`] when serialization fails or `codec` is not a serde format.
pub fn encode_value<T: Serialize + ?Sized>(key: &str, value: &T, codec: Codec) -> Result<Bytes> {
    let codec_err = |reason: String| Error::Codec {
        key: clip(key),
        reason,
    };
    match codec {
        Codec::Json => serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| codec_err(e.to_string())),
        Codec::MsgPack => rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|e| codec_err(e.to_string())),
        other => Err(codec_err(format!("{} is not a serde format", other.name()))),
    }
}

/// xxh3-64 of a value.
#[must_use]
pub fn checksum(value: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(stored: u64, expires: u64, as_of: Option<u64>) -> Meta {
        Meta {
            data_type: "odds_data".into(),
            stored_at: Timestamp::from_secs(stored),
            expires_at: Timestamp::from_secs(expires),
            as_of: as_of.map(Timestamp::from_secs),
            codec: Codec::Json,
            etag: None,
            last_modified: None,
            checksum: 0,
            lineage: None,
            lineage_check: LineageCheck::default(),
        }
    }

    #[test]
    fn the_checksum_is_xxh3_64_with_the_default_seed() {
        // Stored envelopes carry these sums: the function may never change. Reference values
        // from the XXH3 reference implementation; the long input takes the SIMD path.
        assert_eq!(checksum(b""), 0x2d06_8005_38d3_94c2);
        let long: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(checksum(&long), 0x02df_1e98_5a77_6b74);
    }

    #[test]
    fn fresh_strictly_before_expiry() {
        let m = meta(100, 160, None);
        assert!(m.is_fresh_at(Timestamp::from_millis(159_999)));
        assert!(!m.is_fresh_at(Timestamp::from_secs(160)));
        assert_eq!(
            m.remaining(Timestamp::from_secs(150)),
            Duration::from_secs(10)
        );
        assert_eq!(m.remaining(Timestamp::from_secs(170)), Duration::ZERO);
        assert_eq!(m.ttl(), Duration::from_secs(60));
    }

    #[test]
    fn an_entry_stamped_after_now_is_never_fresh() {
        let m = meta(100, 160, None);
        assert!(m.is_future_stamped_at(Timestamp::from_millis(99_999)));
        assert!(!m.is_fresh_at(Timestamp::from_millis(99_999)));
        assert!(!m.is_future_stamped_at(Timestamp::from_secs(100)));
        assert!(m.is_fresh_at(Timestamp::from_secs(100)));
        // A clock far behind the stamp: no panic, zero age, still not fresh.
        assert!(!m.is_fresh_at(Timestamp::EPOCH));
        assert_eq!(m.age(Timestamp::EPOCH), Duration::ZERO);
        let m = meta(100, 160, Some(120));
        assert!(m.is_future_stamped_at(Timestamp::from_secs(110)));
    }

    #[test]
    fn age_counts_from_as_of_when_known() {
        let m = meta(100, 150, Some(90));
        assert_eq!(m.age(Timestamp::from_secs(120)), Duration::from_secs(30));
        assert_eq!(m.ttl(), Duration::from_secs(60));
    }

    #[test]
    fn serde_codecs_round_trip_and_refuse_wrong_shapes() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Odds {
            home: f64,
            away: f64,
        }
        let v = Odds {
            home: 1.9,
            away: 2.1,
        };
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = encode_value("odds:g:1", &v, codec).unwrap();
            let mut m = meta(0, 1, None);
            m.codec = codec;
            let e = Entry {
                meta: m,
                value: bytes,
            };
            assert_eq!(e.decode::<Odds>("odds:g:1").unwrap(), v);
            assert!(matches!(
                e.decode::<Vec<String>>("k"),
                Err(Error::Codec { .. })
            ));
        }
        assert!(encode_value("k", &v, Codec::Bytes).is_err());
    }

    #[test]
    fn media_types_map_to_codecs() {
        assert_eq!(
            Codec::from_media_type("application/json; charset=utf-8"),
            Codec::Json
        );
        assert_eq!(Codec::from_media_type("text/html"), Codec::Text);
        assert_eq!(
            Codec::from_media_type("application/msgpack"),
            Codec::MsgPack
        );
        assert_eq!(Codec::from_media_type("image/png"), Codec::Bytes);
        for c in [Codec::Bytes, Codec::Json, Codec::MsgPack, Codec::Text] {
            assert_eq!(Codec::from_u8(c.to_u8()), Some(c));
            assert_eq!(Codec::from_media_type(c.media_type()), c);
        }
        assert_eq!(Codec::from_u8(9), None);
    }
}
