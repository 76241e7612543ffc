//! Reading a response body within bounds: bytes on the wire are counted as they stream in
//! (`Content-Length` is only a hint), and a gzip body is decoded chunk by chunk into a buffer
//! that refuses to grow past its limit, so a gzip bomb stops at the limit, not at the bomb.

use std::io::{self, Write};

use bytes::Bytes;

/// How the body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is.
    Identity,
    /// `Content-Encoding: gzip` (or `x-gzip`).
    Gzip,
}

impl Encoding {
    /// The encoding named by a `Content-Encoding` value, or `None` for one we did not ask for.
    pub(crate) fn from_header(v: Option<&str>) -> Option<Self> {
        match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Some(Encoding::Identity),
            Some("gzip" | "x-gzip") => Some(Encoding::Gzip),
            Some(_) => None,
        }
    }
}

/// Why a body was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// More bytes on the wire than allowed.
    WireTooLarge { limit: u64 },
    /// More decoded bytes than allowed.
    DecodedTooLarge { limit: u64 },
    /// The gzip stream is corrupt or truncated.
    Corrupt(String),
}

/// A `Vec` that refuses to grow past `limit` and remembers that it did.
#[derive(Debug)]
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("decoded body exceeds its limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Sink {
    Identity(Bounded),
    Gzip(Box<flate2::write::GzDecoder<Bounded>>),
}

/// Collects a body chunk by chunk within a wire limit and a decoded limit.
#[derive(Debug)]
pub(crate) struct BodyReader {
    sink: Sink,
    wire: u64,
    wire_limit: u64,
    decoded_limit: u64,
}

impl BodyReader {
    /// A reader for `encoding` allowing `wire_limit` bytes on the wire and `decoded_limit`
    /// after decoding.
    pub(crate) fn new(encoding: Encoding, wire_limit: u64, decoded_limit: u64) -> Self {
        let bounded = Bounded {
            buf: Vec::new(),
            limit: usize::try_from(decoded_limit).unwrap_or(usize::MAX),
            overflowed: false,
        };
        let sink = match encoding {
            Encoding::Identity => Sink::Identity(bounded),
            Encoding::Gzip => Sink::Gzip(Box::new(flate2::write::GzDecoder::new(bounded))),
        };
        Self {
            sink,
            wire: 0,
            wire_limit,
            decoded_limit,
        }
    }

    /// Bytes received on the wire so far.
    pub(crate) fn wire_bytes(&self) -> u64 {
        self.wire
    }

    fn decoded_error(&self, e: &io::Error) -> BodyError {
        let overflowed = match &self.sink {
            Sink::Identity(b) => b.overflowed,
            Sink::Gzip(d) => d.get_ref().overflowed,
        };
        if overflowed {
            BodyError::DecodedTooLarge {
                limit: self.decoded_limit,
            }
        } else {
            BodyError::Corrupt(format!("gzip body: {e}"))
        }
    }

    /// Adds one chunk as it arrived.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.wire = self.wire.saturating_add(chunk.len() as u64);
        if self.wire > self.wire_limit {
            return Err(BodyError::WireTooLarge {
                limit: self.wire_limit,
            });
        }
        let written = match &mut self.sink {
            Sink::Identity(b) => b.write_all(chunk),
            Sink::Gzip(d) => d.write_all(chunk),
        };
        written.map_err(|e| self.decoded_error(&e))
    }

    /// The decoded body, once the last chunk has arrived.
    pub(crate) fn finish(self) -> Result<Bytes, BodyError> {
        match self.sink {
            Sink::Identity(b) => Ok(Bytes::from(b.buf)),
            Sink::Gzip(mut d) => match d.try_finish() {
                Ok(()) => Ok(Bytes::from(std::mem::take(&mut d.get_mut().buf))),
                Err(_) if d.get_ref().overflowed => Err(BodyError::DecodedTooLarge {
                    limit: self.decoded_limit,
                }),
                Err(e) => Err(BodyError::Corrupt(format!("gzip body: {e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read(encoding: Encoding, body: &[u8], wire: u64, decoded: u64) -> Result<Bytes, BodyError> {
        let mut r = BodyReader::new(encoding, wire, decoded);
        for chunk in body.chunks(1000) {
            r.push(chunk)?;
        }
        r.finish()
    }

    #[test]
    fn identity_bodies_are_bounded_by_both_limits() {
        let body = vec![7u8; 5000];
        assert_eq!(
            read(Encoding::Identity, &body, 5000, 5000).unwrap().len(),
            5000
        );
        assert_eq!(
            read(Encoding::Identity, &body, 4999, 10_000),
            Err(BodyError::WireTooLarge { limit: 4999 })
        );
        assert_eq!(
            read(Encoding::Identity, &body, 10_000, 4096),
            Err(BodyError::DecodedTooLarge { limit: 4096 })
        );
    }

    #[test]
    fn gzip_bodies_decode_and_a_bomb_stops_at_the_decoded_limit() {
        let plain = b"odds 1.91 ".repeat(100);
        let packed = gzip(&plain);
        let got = read(Encoding::Gzip, &packed, 1 << 20, 1 << 20).unwrap();
        assert_eq!(&got[..], &plain[..]);

        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let mut r = BodyReader::new(Encoding::Gzip, 1 << 20, 1 << 20);
        let mut refused = None;
        for chunk in bomb.chunks(4096) {
            if let Err(e) = r.push(chunk) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(BodyError::DecodedTooLarge { limit: 1 << 20 }));
        assert!(
            r.wire_bytes() < bomb.len() as u64,
            "stopped before reading it all"
        );
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_refused() {
        let packed = gzip(b"a body long enough to matter, a body long enough to matter");
        let cut = &packed[..packed.len() - 4];
        assert!(matches!(
            read(Encoding::Gzip, cut, 1 << 20, 1 << 20),
            Err(BodyError::Corrupt(_))
        ));
        assert!(matches!(
            read(Encoding::Gzip, b"not gzip at all", 1 << 20, 1 << 20),
            Err(BodyError::Corrupt(_))
        ));
    }

    #[test]
    fn only_requested_encodings_are_understood() {
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some("GZIP")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("br")), None);
    }
}
