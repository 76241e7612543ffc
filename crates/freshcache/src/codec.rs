//! The stored form of an entry: a versioned, checksummed envelope.
//!
//! ```text
//! "FCE" version:u8 | flags:u8 codec:u8 | stored_at expires_at as_of:u64
//! value_len value_xxh3:u64 | key:u16+bytes type:u8+bytes etag:u16+bytes last_mod:u16+bytes
//! [version 2: inputs:u16 (key:u16+bytes checksum:u64 stored_at:u64)* tags:u16 (tag:u16+bytes)*]
//! payload_len:u64 payload | envelope_xxh3:u64 (over everything before it)
//! ```
//!
//! Version 2 adds the entry's lineage (declared inputs and tags) and is written only for entries
//! that have one, so plain entries stay readable by builds that know version 1 only.
//!
//! All integers are little-endian. The key is inside the envelope so a blob filed under the
//! wrong row is detected. Decoding checks the trailer first, then every length against the
//! buffer, then the value checksum after decompression (bounded by the declared length).

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::Timestamp;
use crate::entry::{Codec, Entry, Input, Lineage, Meta, checksum};
use crate::error::{Error, Result};

const MAGIC: &[u8; 3] = b"FCE";
const VERSION: u8 = 1;
/// The version of envelopes that carry a lineage.
const VERSION_LINEAGE: u8 = 2;
const FLAG_ZSTD: u8 = 1;
const FLAG_AS_OF: u8 = 2;
const FLAG_ETAG: u8 = 4;
const FLAG_LAST_MODIFIED: u8 = 8;
/// Largest value the decoder will inflate, whatever the envelope claims.
pub const MAX_VALUE_LEN: u64 = 1 << 30;
const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// zstd contexts, one per thread and made on first use: making one costs more than
    /// compressing a 64 KiB value that does not compress.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `value` compressed at [`ZSTD_LEVEL`]; `None` when zstd fails.
fn compress(value: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut kept = cell.try_borrow_mut().ok()?;
        if kept.is_none() {
            *kept = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?);
        }
        kept.as_mut()?.compress(value).ok()
    })
}

/// `payload` decompressed into at most `cap` bytes.
fn decompress(payload: &[u8], cap: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let Ok(mut kept) = cell.try_borrow_mut() else {
            return zstd::bulk::decompress(payload, cap);
        };
        if kept.is_none() {
            *kept = Some(zstd::bulk::Decompressor::new()?);
        }
        match kept.as_mut() {
            Some(d) => d.decompress(payload, cap),
            None => zstd::bulk::decompress(payload, cap),
        }
    })
}

/// Whether to compress the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd, used only when it actually saves space.
    Zstd,
}

/// Encodes an entry for `key`; `compress_above` is the data type's threshold in bytes.
///
/// # Errors
/// [`Error::Corrupt`] when a field exceeds its length prefix (an etag over 64 KiB).
pub fn encode(key: &str, entry: &Entry, compress_above: u64) -> Result<Vec<u8>> {
    let m = &entry.meta;
    let mut flags = 0u8;
    let compressed = if entry.size() > compress_above {
        compress(&entry.value).filter(|c| c.len() < entry.value.len())
    } else {
        None
    };
    if compressed.is_some() {
        flags |= FLAG_ZSTD;
    }
    if m.as_of.is_some() {
        flags |= FLAG_AS_OF;
    }
    if m.etag.is_some() {
        flags |= FLAG_ETAG;
    }
    if m.last_modified.is_some() {
        flags |= FLAG_LAST_MODIFIED;
    }
    let payload: &[u8] = compressed.as_deref().unwrap_or(&entry.value);
    let mut out = Vec::with_capacity(payload.len() + key.len() + 128);
    let lineage = m.lineage.as_deref().filter(|l| !l.is_empty());
    out.extend_from_slice(MAGIC);
    out.push(if lineage.is_some() {
        VERSION_LINEAGE
    } else {
        VERSION
    });
    out.push(flags);
    out.push(m.codec.to_u8());
    for t in [m.stored_at, m.expires_at, m.as_of.unwrap_or_default()] {
        out.extend_from_slice(&t.as_millis().to_le_bytes());
    }
    out.extend_from_slice(&entry.size().to_le_bytes());
    out.extend_from_slice(&m.checksum.to_le_bytes());
    put_u16_str(&mut out, key)?;
    let ty = m.data_type.as_bytes();
    let ty_len = u8::try_from(ty.len()).map_err(|_| Error::corrupt("data type name too long"))?;
    out.push(ty_len);
    out.extend_from_slice(ty);
    put_u16_str(&mut out, m.etag.as_deref().unwrap_or(""))?;
    put_u16_str(&mut out, m.last_modified.as_deref().unwrap_or(""))?;
    if let Some(l) = lineage {
        put_lineage(&mut out, l)?;
    }
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = twox_hash::XxHash3_64::oneshot(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

fn put_u16_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| Error::corrupt("field longer than 64 KiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize) -> Result<()> {
    let n = u16::try_from(n).map_err(|_| Error::corrupt("more than 65535 inputs or tags"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn put_lineage(out: &mut Vec<u8>, l: &Lineage) -> Result<()> {
    put_count(out, l.inputs.len())?;
    for i in &l.inputs {
        put_u16_str(out, &i.key)?;
        out.extend_from_slice(&i.checksum.to_le_bytes());
        out.extend_from_slice(&i.stored_at.as_millis().to_le_bytes());
    }
    put_count(out, l.tags.len())?;
    for t in &l.tags {
        put_u16_str(out, t)?;
    }
    Ok(())
}

fn get_lineage(r: &mut Reader<'_>) -> Result<Lineage> {
    let n = usize::from(r.u16()?);
    let mut inputs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        inputs.push(Input {
            key: r.str16()?.to_owned(),
            checksum: r.u64()?,
            stored_at: Timestamp::from_millis(r.u64()?),
        });
    }
    let n = usize::from(r.u16()?);
    let mut tags = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        tags.push(r.str16()?.to_owned());
    }
    Ok(Lineage::new(inputs, tags))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| Error::corrupt("envelope truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str16(&mut self) -> Result<&'a str> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::corrupt("field is not UTF-8"))
    }
}

/// The envelope version of `buf`, once its length, magic and version are checked.
fn check_header(buf: &[u8]) -> Result<u8> {
    if buf.len() < MAGIC.len() + 1 + 8 {
        return Err(Error::corrupt("envelope too short"));
    }
    if &buf[..3] != MAGIC {
        return Err(Error::corrupt("bad magic"));
    }
    match buf[3] {
        v @ (VERSION | VERSION_LINEAGE) => Ok(v),
        v => Err(Error::corrupt(format!("unknown envelope version {v}"))),
    }
}

/// Decodes and verifies an envelope stored under `expected_key`.
///
/// # Errors
/// [`Error::Corrupt`] on any mismatch: magic, version, trailer checksum, lengths, key,
/// decompression, value checksum.
pub fn decode(expected_key: &str, buf: &[u8]) -> Result<Entry> {
    decode_bytes(expected_key, Bytes::copy_from_slice(buf))
}

/// Like [`decode`], taking ownership so an uncompressed value is a view into `buf`, not a copy.
///
/// # Errors
/// As [`decode`].
pub fn decode_bytes(expected_key: &str, owned: Bytes) -> Result<Entry> {
    let buf: &[u8] = &owned;
    let version = check_header(buf)?;
    let (body, trailer) = buf.split_at(buf.len() - 8);
    let mut t = [0u8; 8];
    t.copy_from_slice(trailer);
    if twox_hash::XxHash3_64::oneshot(body) != u64::from_le_bytes(t) {
        return Err(Error::corrupt("envelope checksum mismatch"));
    }
    let mut r = Reader { buf: body, pos: 4 };
    let flags = r.u8()?;
    let codec = Codec::from_u8(r.u8()?).ok_or_else(|| Error::corrupt("unknown codec"))?;
    let stored_at = Timestamp::from_millis(r.u64()?);
    let expires_at = Timestamp::from_millis(r.u64()?);
    let as_of = Timestamp::from_millis(r.u64()?);
    let value_len = r.u64()?;
    let value_sum = r.u64()?;
    let key = r.str16()?;
    if key != expected_key {
        return Err(Error::corrupt("envelope belongs to another key"));
    }
    let ty_len = usize::from(r.u8()?);
    let data_type = std::str::from_utf8(r.take(ty_len)?)
        .map_err(|_| Error::corrupt("data type is not UTF-8"))?;
    let etag = r.str16()?;
    let last_modified = r.str16()?;
    let lineage = if version == VERSION_LINEAGE {
        Some(Box::new(get_lineage(&mut r)?))
    } else {
        None
    };
    let payload_len = usize::try_from(r.u64()?).map_err(|_| Error::corrupt("payload length"))?;
    let payload_start = r.pos;
    let payload = r.take(payload_len)?;
    if r.pos != body.len() {
        return Err(Error::corrupt("trailing bytes in envelope"));
    }
    if value_len > MAX_VALUE_LEN {
        return Err(Error::corrupt("declared value length is implausible"));
    }
    let value = if flags & FLAG_ZSTD != 0 {
        let cap = usize::try_from(value_len).map_err(|_| Error::corrupt("value length"))?;
        let v = Bytes::from(
            decompress(payload, cap).map_err(|e| Error::corrupt(format!("zstd: {e}")))?,
        );
        // The trailer vouches for the compressed bytes; this vouches for what came out.
        if checksum(&v) != value_sum {
            return Err(Error::corrupt("value checksum mismatch"));
        }
        v
    } else {
        // Stored as is: the trailer checksum already covers these exact bytes.
        owned.slice(payload_start..payload_start + payload.len())
    };
    if value.len() as u64 != value_len {
        return Err(Error::corrupt("value length mismatch"));
    }
    Ok(Entry {
        meta: Meta {
            data_type: Arc::from(data_type),
            stored_at,
            expires_at,
            as_of: (flags & FLAG_AS_OF != 0).then_some(as_of),
            codec,
            etag: (flags & FLAG_ETAG != 0).then(|| etag.to_owned()),
            last_modified: (flags & FLAG_LAST_MODIFIED != 0).then(|| last_modified.to_owned()),
            checksum: value_sum,
            lineage,
            lineage_check: Default::default(),
        },
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(value: &[u8]) -> Entry {
        Entry {
            meta: Meta {
                data_type: "news_articles".into(),
                stored_at: Timestamp::from_secs(1_700_000_000),
                expires_at: Timestamp::from_secs(1_700_003_600),
                as_of: Some(Timestamp::from_secs(1_699_999_990)),
                codec: Codec::Text,
                etag: Some("W/\"abc\"".into()),
                last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
                checksum: checksum(value),
                lineage: None,
                lineage_check: Default::default(),
            },
            value: Bytes::copy_from_slice(value),
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let e = entry(b"hello");
        let buf = encode("news:espn:1", &e, 4096).unwrap();
        assert_eq!(decode("news:espn:1", &buf).unwrap(), e);
    }

    #[test]
    fn large_compressible_values_are_compressed_and_restored() {
        let text = "the quick brown fox ".repeat(5000);
        let e = entry(text.as_bytes());
        let buf = encode("news:espn:1", &e, 4096).unwrap();
        assert!(buf.len() < text.len() / 5, "{} bytes", buf.len());
        assert_eq!(decode("news:espn:1", &buf).unwrap(), e);
        let plain = encode("news:espn:1", &e, u64::MAX).unwrap();
        assert!(plain.len() > text.len());
    }

    #[test]
    fn a_lineage_round_trips_in_version_2_and_plain_entries_stay_version_1() {
        let plain = entry(b"x");
        assert_eq!(encode("news:espn:1", &plain, 4096).unwrap()[3], 1);
        let mut e = entry(b"features");
        e.meta.lineage = Some(Box::new(Lineage::new(
            vec![Input {
                key: "news:espn:a1".into(),
                checksum: 42,
                stored_at: Timestamp::from_secs(7),
            }],
            vec!["cluster-7".into()],
        )));
        let buf = encode("llm:features:c7:d", &e, 4096).unwrap();
        assert_eq!(buf[3], 2);
        assert_eq!(decode("llm:features:c7:d", &buf).unwrap(), e);
        for cut in 0..buf.len() {
            assert!(decode("llm:features:c7:d", &buf[..cut]).is_err());
        }
    }

    #[test]
    fn a_blob_under_another_key_is_corrupt() {
        let buf = encode("news:espn:1", &entry(b"x"), 4096).unwrap();
        assert!(matches!(
            decode("news:espn:2", &buf),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn every_single_flipped_byte_is_detected() {
        let e = entry(&[7u8; 300]);
        let buf = encode("news:espn:1", &e, 100).unwrap();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            assert!(
                decode("news:espn:1", &bad).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        for cut in 0..buf.len() {
            assert!(
                decode("news:espn:1", &buf[..cut]).is_err(),
                "truncation at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode("k:x", &data);
        }

        #[test]
        fn arbitrary_values_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20_000), threshold in 0u64..30_000) {
            let e = entry(&data);
            let buf = encode("odds:g:1", &e, threshold).unwrap();
            prop_assert_eq!(decode("odds:g:1", &buf).unwrap(), e);
        }
    }
}
