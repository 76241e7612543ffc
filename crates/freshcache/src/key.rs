//! Validated hierarchical keys such as `odds:{game_id}:{timestamp}`.
//!
//! A [`Key`] is checked once, at the edge, and is a cheap handle afterwards. Keys are never used
//! as file paths (the disk tier names blobs by random ids), but the rules still refuse anything
//! that could be mistaken for one: path separators, `.`/`..` segments, control bytes, spaces.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result, clip};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// The separator between key segments.
pub const SEPARATOR: char = ':';

/// Punctuation allowed inside a segment besides ASCII letters and digits.
const SEGMENT_PUNCT: &[u8] = b"-_.~%*+=@!,;$&()[]{}|^";

fn allowed_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b':' || SEGMENT_PUNCT.contains(&b)
}

fn check_charset(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > MAX_KEY_LEN {
        return Err(format!(
            "{} bytes long; at most {MAX_KEY_LEN} allowed",
            s.len()
        ));
    }
    if let Some((i, c)) = s
        .char_indices()
        .find(|&(_, c)| !c.is_ascii() || !allowed_byte(c as u8))
    {
        return Err(format!(
            "character {c:?} at byte {i} is not allowed (letters, digits, ':' and {} only)",
            String::from_utf8_lossy(SEGMENT_PUNCT)
        ));
    }
    Ok(())
}

/// A validated cache key: `segment(:segment)+`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    text: Arc<str>,
    /// Counted once at parse time: data type resolution checks it on every lookup.
    segments: u16,
    /// The data type this key last resolved to, so that a key used again skips the prefix
    /// search; never part of the key's identity.
    resolved: ResolvedHint,
}

/// A data type resolution remembered by a [`Key`]: the resolving registry's id in the high 48
/// bits, the type's index in the low 16; 0 when none. A registry trusts only its own id (ids are
/// never reused within a process), so a hint can be stale but never wrong. Clones copy it;
/// equality, ordering and hashing ignore it.
#[derive(Debug, Default)]
pub(crate) struct ResolvedHint(AtomicU64);

impl ResolvedHint {
    /// The type index `registry` remembered for this key, if it did.
    #[inline]
    pub(crate) fn get(&self, registry: u64) -> Option<usize> {
        let v = self.0.load(Ordering::Relaxed);
        (v >> 16 == registry).then_some((v & 0xffff) as usize)
    }

    /// Remembers that `registry` (below 2^48) resolved this key to type `index`.
    pub(crate) fn set(&self, registry: u64, index: usize) {
        if let Ok(index) = u16::try_from(index)
            && registry < 1 << 48
        {
            self.0
                .store(registry << 16 | u64::from(index), Ordering::Relaxed);
        }
    }
}

impl Clone for ResolvedHint {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl PartialEq for ResolvedHint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ResolvedHint {}

impl PartialOrd for ResolvedHint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResolvedHint {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl std::hash::Hash for ResolvedHint {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl Key {
    /// Parses and validates a key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the key is empty, too long, has a forbidden character, an
    /// empty segment, a `.`/`..` segment, or fewer than two segments.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidKey {
            key: clip(s),
            reason,
        };
        check_charset(s).map_err(invalid)?;
        let mut count = 0usize;
        for seg in s.split(SEPARATOR) {
            count += 1;
            if seg.is_empty() {
                return Err(invalid(format!("segment {count} is empty")));
            }
            if seg.bytes().all(|b| b == b'.') {
                return Err(invalid(format!("segment {count} is {seg:?}")));
            }
        }
        if count < 2 {
            return Err(invalid("needs at least two segments (prefix:id)".into()));
        }
        Ok(Self {
            text: Arc::from(s),
            // At most MAX_KEY_LEN / 2 + 1 segments, so this always fits.
            segments: u16::try_from(count).unwrap_or(u16::MAX),
            resolved: ResolvedHint::default(),
        })
    }

    /// `llm:features:{cluster_id}:{date}`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when a part breaks the key rules.
    pub fn llm_features(cluster_id: impl fmt::Display, date: impl fmt::Display) -> Result<Self> {
        Self::parse(&format!("llm:features:{cluster_id}:{date}"))
    }

    /// `news:{source}:{article_id}`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when a part breaks the key rules.
    pub fn news(source: impl fmt::Display, article_id: impl fmt::Display) -> Result<Self> {
        Self::parse(&format!("news:{source}:{article_id}"))
    }

    /// `odds:{game_id}:{timestamp}`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when a part breaks the key rules.
    pub fn odds(game_id: impl fmt::Display, timestamp: impl fmt::Display) -> Result<Self> {
        Self::parse(&format!("odds:{game_id}:{timestamp}"))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shared text, for stores that keep keys.
    #[must_use]
    pub fn as_arc(&self) -> &Arc<str> {
        &self.text
    }

    /// Number of `:`-separated segments.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        usize::from(self.segments)
    }

    /// The remembered data type resolution.
    pub(crate) fn resolved(&self) -> &ResolvedHint {
        &self.resolved
    }

    /// True when the key starts with `prefix`.
    #[must_use]
    pub fn has_prefix(&self, prefix: &KeyPrefix) -> bool {
        self.text.starts_with(prefix.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.text)
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// A validated key prefix for invalidation, e.g. `news:espn:`; matched literally.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    /// Parses a prefix: the key character set, non-empty, at most [`MAX_KEY_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the prefix breaks those rules.
    pub fn parse(s: &str) -> Result<Self> {
        check_charset(s).map_err(|reason| Error::InvalidKey {
            key: clip(s),
            reason: format!("prefix {reason}"),
        })?;
        Ok(Self(Arc::from(s)))
    }

    /// The prefix as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The smallest string greater than every string with this prefix, for range scans;
    /// `None` when no such string exists within the key alphabet (never for valid prefixes).
    #[must_use]
    pub fn upper_bound(&self) -> Option<String> {
        let mut bytes = self.0.as_bytes().to_vec();
        while let Some(last) = bytes.pop() {
            if last < 0x7f {
                bytes.push(last + 1);
                return String::from_utf8(bytes).ok();
            }
        }
        None
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typed_constructors_build_the_documented_shapes() {
        assert_eq!(
            Key::llm_features("c17", "2026-11-24").unwrap().as_str(),
            "llm:features:c17:2026-11-24"
        );
        assert_eq!(Key::news("espn", "a1").unwrap().as_str(), "news:espn:a1");
        let odds = Key::odds("g1", 1_700_000_000).unwrap();
        assert_eq!(odds.as_str(), "odds:g1:1700000000");
        assert_eq!(odds.segment_count(), 3);
    }

    #[test]
    fn hostile_keys_are_refused_with_a_reason() {
        for bad in [
            "",
            "news",
            "news:../../x",
            "news:..:x",
            "news:.:x",
            "news::x",
            "news:x:",
            "news:a b",
            "news:a/b",
            "news:a\\b",
            "news:a\0b",
            "news:é",
            "news:a?b",
            "news:a#b",
            "news:a\nb",
        ] {
            let err = Key::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidKey { .. }),
                "{bad:?} gave {err:?}"
            );
        }
        let long = format!("news:{}", "a".repeat(MAX_KEY_LEN));
        let err = Key::parse(&long).unwrap_err().to_string();
        assert!(err.contains("at most 512"), "{err}");
    }

    #[test]
    fn wildcard_like_characters_are_literal_key_characters() {
        for ok in ["news:50%:a", "news:a_b:c", "news:*:x", "odds:g[1]:2"] {
            assert_eq!(Key::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn prefix_upper_bound_orders_after_every_key_with_the_prefix() {
        let p = KeyPrefix::parse("news:espn:").unwrap();
        let ub = p.upper_bound().unwrap();
        assert_eq!(ub, "news:espn;");
        assert!("news:espn:zzz~~" < ub.as_str());
        assert!("news:espn;" >= ub.as_str());
        assert!(KeyPrefix::parse("news espn").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(
            game in "[A-Za-z0-9_%*.-]{1,20}",
            ts in 0u64..u64::MAX,
        ) {
            prop_assume!(!game.bytes().all(|b| b == b'.'));
            let key = Key::odds(&game, ts).unwrap();
            let back: Key = key.to_string().parse().unwrap();
            prop_assert_eq!(&back, &key);
            prop_assert_eq!(back.segment_count(), 3);
        }

        #[test]
        fn any_accepted_key_is_ascii_without_path_separators(s in "\\PC{0,40}") {
            if let Ok(k) = Key::parse(&s) {
                prop_assert!(k.as_str().is_ascii());
                prop_assert!(!k.as_str().contains('/') && !k.as_str().contains('\\'));
                prop_assert!(k.as_str().split(':').all(|seg| seg != ".." && !seg.is_empty()));
            }
        }
    }
}
