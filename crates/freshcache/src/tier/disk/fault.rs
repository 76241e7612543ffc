//! A fault seam on the blob write path.
//!
//! Where a small filesystem cannot be mounted (no privileges), tests make temp-file creation or
//! blob writes fail exactly as a full or read-only filesystem would, and check that the cache
//! reports a typed error, keeps serving what it holds, and recovers. Unset, it costs one atomic
//! load per blob write.

use std::io;
use std::path::Path;

/// A step of writing a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobStep {
    /// Creating the temp file (takes an inode).
    Create,
    /// Writing this many bytes into the just-created temp file (takes space).
    Write(u64),
}

/// A named point of the write path, where crash tests kill the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WritePoint {
    /// The value is in the temp file; not yet renamed into place.
    TempWritten,
    /// The blob is in place under its final name; the index row does not name it yet.
    Renamed,
    /// The index row is committed; the blob it replaced is not removed yet.
    Committed,
}

/// Decides whether a blob write step fails, and with which error. For tests only.
#[doc(hidden)]
pub trait FsFaults: Send + Sync {
    /// `Err` to fail `step` on the temp file at `path` with that error.
    ///
    /// # Errors
    /// The error the filesystem would report (e.g. `ENOSPC`, `EROFS`).
    fn check(&self, step: BlobStep, path: &Path) -> io::Result<()>;

    /// Called when a write reaches `point` (crash tests kill the process here). Does nothing
    /// unless overridden.
    fn reached(&self, point: WritePoint) {
        let _ = point;
    }
}
