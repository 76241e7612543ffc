//! File access inside the cache directory that never follows a planted symbolic link.
//!
//! Blob names come from the index and are checked (`ab/<32 hex>.blob`), but the files and
//! directories they name can still be replaced by symbolic links by anyone who can write the
//! cache directory. Following one would serve an outside file's bytes, write a blob outside,
//! or let repair delete outside files. So blobs are opened with `O_NOFOLLOW`, their shard
//! directory is checked to be a directory and not a link, and a link found where a file or
//! directory of the tier belongs is treated as damage: removed (the link, never its target)
//! and counted. A link swapped in between the check and the use is not caught; planted ones
//! are.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// True when `path` is a directory itself, not a symbolic link to one.
pub(super) fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// True when `path` is a regular file in a real directory, neither of them a link.
pub(super) fn is_real_file(path: &Path) -> bool {
    path.parent().is_some_and(is_real_dir) && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// `Ok` when `dir` is a real directory or does not exist; an error naming it when it is a
/// symbolic link or something else.
pub(super) fn check_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "{} is a symbolic link or not a directory; refusing to write through it",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads the blob at `path`: `Ok(None)` when it, or its directory, is a symbolic link or not
/// a regular file (a FIFO is not waited on: it is opened non-blocking and refused).
///
/// # Errors
/// I/O errors, `NotFound` included, as they come.
pub(super) fn read_blob(path: &Path) -> io::Result<Option<Vec<u8>>> {
    if let Some(dir) = path.parent() {
        let m = fs::symlink_metadata(dir)?;
        if !m.is_dir() {
            return Ok(None);
        }
    }
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(path);
    let mut file: File = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_and_regular_files_read() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        let shard = root.path().join("ab");
        fs::create_dir(&shard).unwrap();
        fs::write(shard.join("real"), b"real").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), shard.join("link")).unwrap();
        let linked_shard = root.path().join("cd");
        std::os::unix::fs::symlink(&outside, &linked_shard).unwrap();

        assert_eq!(read_blob(&shard.join("real")).unwrap().unwrap(), b"real");
        assert_eq!(read_blob(&shard.join("link")).unwrap(), None);
        assert_eq!(read_blob(&linked_shard.join("secret")).unwrap(), None);
        assert_eq!(
            read_blob(&shard).unwrap(),
            None,
            "a directory is not a blob"
        );
        assert_eq!(
            read_blob(&shard.join("gone")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(is_real_file(&shard.join("real")));
        assert!(!is_real_file(&shard.join("link")));
        assert!(!is_real_file(&linked_shard.join("secret")));
        assert!(check_dir(&shard).is_ok());
        assert!(check_dir(&root.path().join("missing")).is_ok());
        assert!(check_dir(&linked_shard).is_err());
    }
}
