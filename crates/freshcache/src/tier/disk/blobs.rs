//! Blob files: random names, the write (temp file, sync, rename beneath the held-open blob
//! directory), removal after a committed delete, and the crash-test write points.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A blob name as stored in the index: `ab/<32 hex>.blob`. Anything else is refused before it
/// is joined to a path, so a tampered row cannot point outside the cache directory.
pub(super) fn valid_blob_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 2 + 1 + 32 + 5
        && b[2] == b'/'
        && name.ends_with(".blob")
        && b[..2] == b[3..5]
        && b[..2]
            .iter()
            .chain(&b[3..35])
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

pub(super) fn new_blob_name() -> String {
    let id = format!("{:032x}", fastrand::u128(..));
    format!("{}/{id}.blob", &id[..2])
}

impl DiskTier {
    /// The blob directory.
    #[must_use]
    pub fn blob_dir(&self) -> &Path {
        &self.blobs
    }

    pub(super) fn blob_path(&self, name: &str) -> PathBuf {
        self.blobs.join(name)
    }

    /// [`Self::remove_blob`] for the files of rows a committed delete removed.
    pub(super) fn remove_blobs(&self, names: &[String]) {
        for name in names {
            self.remove_blob(Some(name));
        }
    }

    /// Deletes a blob whose row is gone. Best effort: a leftover file is an orphan that repair
    /// removes. No read through the index serves it; a process that kept its location (see
    /// `DiskTier::reread`) hears of the change that orphaned it through the change feed.
    pub(super) fn remove_blob(&self, name: Option<&str>) {
        if let Some(name) = name.filter(|n| valid_blob_name(n)) {
            // Never through a blob or shard directory replaced by a link (the blob itself may
            // be one: removing it removes the link, not its target).
            if nofollow::in_real_dirs(&self.blobs, name) {
                let _ = fs::remove_file(self.blob_path(name));
            }
        }
    }

    pub(super) fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp_path = self.tmp.join(format!("{}.tmp", &name[3..35]));
        let final_path = self.blob_path(name);
        let fault = |step| {
            self.faults
                .get()
                .map_or(Ok(()), |f| f.check(step, &tmp_path))
        };
        // A link planted in place of tmp/ would take the write outside the cache directory.
        nofollow::check_dir(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        let write = || -> io::Result<()> {
            fault(fault::BlobStep::Create)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)?;
            fault(fault::BlobStep::Write(bytes.len() as u64))?;
            f.write_all(bytes)?;
            self.reached(fault::WritePoint::TempWritten);
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp_path);
            return Err(Error::io(&tmp_path, e));
        }
        let rename = || -> io::Result<()> {
            nofollow::check_dir(&self.blobs)?;
            if let Some(shard) = final_path.parent() {
                nofollow::check_dir(shard)?;
            }
            match fs::rename(&tmp_path, &final_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(parent) = final_path.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::rename(&tmp_path, &final_path)
                }
                other => other,
            }
        };
        rename().map_err(|e| {
            let _ = fs::remove_file(&tmp_path);
            Error::io(&final_path, e)
        })?;
        self.reached(fault::WritePoint::Renamed);
        Ok(())
    }

    /// Tells injected faults that a write reached `point`.
    pub(super) fn reached(&self, point: fault::WritePoint) {
        if let Some(f) = self.faults.get() {
            f.reached(point);
        }
    }
}
