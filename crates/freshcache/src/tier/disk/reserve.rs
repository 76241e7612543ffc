//! Headroom that lets deletes run on a full filesystem.
//!
//! Every index write, a delete included, appends to the SQLite WAL; on a full filesystem that
//! fails with `SQLITE_FULL`, so without headroom the cache could not even delete entries to
//! make room. The tier keeps a `reserve` file of [`RESERVE_BYTES`] in its directory; a delete
//! that fails for lack of space removes it and tries once more. The file is put back once the
//! filesystem has room for it again (at open, or after a later delete).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Size of the reserve at most: room for the WAL frames of many deletes and a checkpoint.
pub const RESERVE_BYTES: u64 = 1 << 20;

/// The reserve for a tier limited to `limit` bytes (it counts in that limit): a sixty-fourth
/// of it, between 64 KiB (the WAL frames of a few deletes) and [`RESERVE_BYTES`].
pub(super) fn reserve_for(limit: u64) -> u64 {
    (limit / 64).clamp(64 << 10, RESERVE_BYTES)
}

/// The reserve file of one cache directory.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    tmp: PathBuf,
    /// False once released (or never made): the next successful delete tries to put it back.
    present: AtomicBool,
    /// Its size in bytes.
    size: AtomicU64,
}

impl Reserve {
    /// The reserve of `dir`, made now when there is room; temp files go to `tmp`.
    pub(super) fn open(dir: &Path, tmp: &Path) -> Self {
        let r = Self {
            path: dir.join("reserve"),
            tmp: tmp.to_path_buf(),
            present: AtomicBool::new(false),
            size: AtomicU64::new(RESERVE_BYTES),
        };
        r.restore();
        r
    }

    /// The reserve file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Sizes the reserve to `bytes`: a larger one left by another process is cut down to it,
    /// a smaller one is made again.
    pub(super) fn resize(&self, bytes: u64) {
        let bytes = bytes.min(RESERVE_BYTES);
        self.size.store(bytes, Ordering::Relaxed);
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_file() && m.len() > bytes => {
                let cut = fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .and_then(|f| f.set_len(bytes));
                if cut.is_err() {
                    self.present.store(false, Ordering::Relaxed);
                }
            }
            Ok(m) if m.is_file() && m.len() == bytes => {}
            _ => {
                self.present.store(false, Ordering::Relaxed);
                let _ = fs::remove_file(&self.path);
                self.restore();
            }
        }
    }

    /// Removes the reserve to free its space; true when that freed anything.
    pub(super) fn release(&self) -> bool {
        self.present.store(false, Ordering::Relaxed);
        let freed = fs::remove_file(&self.path).is_ok();
        if freed {
            tracing::warn!(
                path = %self.path.display(),
                "disk tier: filesystem full; reserve released so deletes can run"
            );
        }
        freed
    }

    /// Puts the reserve back if it is missing and the filesystem has room for it twice over.
    /// Best effort: without room it stays missing.
    pub(super) fn restore(&self) {
        if self.present.load(Ordering::Relaxed) {
            return;
        }
        let size = self.size.load(Ordering::Relaxed);
        if fs::metadata(&self.path).is_ok_and(|m| m.len() >= size) {
            self.present.store(true, Ordering::Relaxed);
            return;
        }
        // Never written through a link planted in place of tmp/.
        if !super::nofollow::is_real_dir(&self.tmp) {
            return;
        }
        let room = rustix::fs::statvfs(&self.tmp)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        if room < 2 * size {
            return;
        }
        // Written in full (not sparse) under a unique temp name, then renamed, so concurrent
        // openers never see a short reserve.
        let tmp = self
            .tmp
            .join(format!("reserve-{:016x}.tmp", crate::random::u64()));
        let made = (|| {
            let mut f = fs::File::create_new(&tmp)?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = size;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                f.write_all(&zeros[..n as usize])?;
                left -= n;
            }
            fs::rename(&tmp, &self.path)
        })();
        match made {
            Ok(()) => self.present.store(true, Ordering::Relaxed),
            Err(_) => {
                let _ = fs::remove_file(&tmp);
            }
        }
    }
}
