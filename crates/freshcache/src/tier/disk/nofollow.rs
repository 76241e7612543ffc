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
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// True when `path` is a directory itself, not a symbolic link to one.
pub(super) fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// True when the blob directory `root` and the shard directory of blob `name` (`ab/<hex>.blob`)
/// are both real directories: a link in place of either would take a path built from them
/// outside the cache directory.
pub(super) fn in_real_dirs(root: &Path, name: &str) -> bool {
    is_real_dir(root)
        && Path::new(name)
            .parent()
            .is_some_and(|shard| is_real_dir(&root.join(shard)))
}

/// True when blob `name` of the blob directory `root` is a regular file, with neither it nor
/// a directory on the way a link.
pub(super) fn is_real_file(root: &Path, name: &str) -> bool {
    in_real_dirs(root, name) && fs::symlink_metadata(root.join(name)).is_ok_and(|m| m.is_file())
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

/// Reads blob `name` of the blob directory `root`: `Ok(None)` when it, its shard directory or
/// `root` itself is a symbolic link or not what it should be (a FIFO is not waited on: it is
/// opened non-blocking and refused).
///
/// # Errors
/// I/O errors, `NotFound` included, as they come.
pub(super) fn read_blob(root: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let path = root.join(name);
    for dir in [Some(root), path.parent()].into_iter().flatten() {
        let m = fs::symlink_metadata(dir)?;
        if !m.is_dir() {
            return Ok(None);
        }
    }
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(&path);
    match opened {
        Ok(f) => read_regular(&f),
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole of `file` if it is a regular file. Reads the length `fstat` gave into spare
/// capacity, so a blob costs one `fstat` and, as a rule, one `read` (the standard
/// `read_to_end` adds a second `fstat`, a seek, reads capped at 8 KiB at first and a read to
/// find the end). Blobs are never written in place once renamed; a file that changed meanwhile
/// fails its checksum.
fn read_regular(file: &File) -> io::Result<Option<Vec<u8>>> {
    // `fstat` itself: `File::metadata` asks `statx` for more than is needed here, at a cost.
    let stat = rustix::fs::fstat(file)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    // Nothing stored is larger than the largest value plus its envelope: a bigger file (a
    // sparse one planted over a blob, say) is damage, not something to allocate for.
    let Ok(size) = u64::try_from(stat.st_size) else {
        return Ok(None);
    };
    if size > crate::codec::MAX_VALUE_LEN + (1 << 20) {
        return Ok(None);
    }
    let len = usize::try_from(size).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        match rustix::io::read(file, rustix::buffer::spare_capacity(&mut buf)) {
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(buf))
}

/// The blob directory, held open: a blob is opened beneath it by one `openat2` that refuses a
/// symbolic link anywhere on the way (shard directory or file) and any escape from it, so a
/// read needs no separate check of its shard directory, and a link swapped in between a check
/// and the use is refused as well. Where the kernel has no `openat2` (before Linux 5.6, or a
/// filter refusing it), reads fall back to [`read_blob`].
#[derive(Debug)]
pub(super) struct BlobDir {
    fd: Option<rustix::fd::OwnedFd>,
}

impl BlobDir {
    /// Opens `dir` (a directory, never through a link) for reads beneath it.
    pub(super) fn open(dir: &Path) -> Self {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .filter(|fd| {
            // Probe once: an `openat2` refused here is refused for every blob.
            rustix::fs::openat2(
                fd,
                ".",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                beneath(),
            )
            .is_ok()
        });
        Self { fd }
    }

    /// Reads blob `name` (`ab/<hex>.blob`) of `dir`, the directory this was opened on; as
    /// [`read_blob`].
    ///
    /// # Errors
    /// I/O errors, `NotFound` included, as they come.
    pub(super) fn read(&self, dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(dirfd) = &self.fd else {
            return read_blob(dir, name);
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let mut attempts = 0;
        let fd = loop {
            match rustix::fs::openat2(dirfd, name, flags, Mode::empty(), beneath()) {
                Ok(fd) => break fd,
                // A rename elsewhere on the filesystem raced the lookup; the kernel asks for a retry.
                Err(Errno::AGAIN) if attempts < 3 => attempts += 1,
                // A link on the way, an escape, or a shard that is not a directory.
                Err(Errno::LOOP | Errno::XDEV | Errno::NOTDIR) => return Ok(None),
                // The directory held open may no longer be the one at `dir` (removed and made
                // again while this process ran): then the path decides, as other processes see it.
                Err(Errno::NOENT) if !same_file(dirfd, dir) => return read_blob(dir, name),
                Err(e) => return Err(e.into()),
            }
        };
        read_regular(&File::from(fd))
    }
}

/// True when `fd` is the directory at `path` (same device and inode, `path` not followed).
fn same_file(fd: &rustix::fd::OwnedFd, path: &Path) -> bool {
    match (rustix::fs::fstat(fd), rustix::fs::lstat(path)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

fn beneath() -> rustix::fs::ResolveFlags {
    rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::BENEATH
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

        let top = root.path();
        assert_eq!(read_blob(top, "ab/real").unwrap().unwrap(), b"real");
        assert_eq!(read_blob(top, "ab/link").unwrap(), None);
        assert_eq!(read_blob(top, "cd/secret").unwrap(), None);
        assert_eq!(
            read_blob(top, "ab").unwrap(),
            None,
            "a directory is not a blob"
        );
        assert_eq!(
            read_blob(top, "ab/gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // The blob directory itself replaced by a link: nothing beneath it is read.
        let linked_root = root.path().join("linked-root");
        std::os::unix::fs::symlink(top, &linked_root).unwrap();
        assert_eq!(read_blob(&linked_root, "ab/real").unwrap(), None);
        assert!(!in_real_dirs(&linked_root, "ab/real"));
        assert!(!is_real_file(&linked_root, "ab/real"));
        assert!(in_real_dirs(top, "ab/real"));
        // The same answers through the held-open directory.
        let held = BlobDir::open(root.path());
        assert!(held.fd.is_some(), "openat2 is available on this kernel");
        assert_eq!(held.read(root.path(), "ab/real").unwrap().unwrap(), b"real");
        assert_eq!(held.read(root.path(), "ab/link").unwrap(), None);
        assert_eq!(held.read(root.path(), "cd/secret").unwrap(), None);
        assert_eq!(held.read(root.path(), "../outside/secret").unwrap(), None);
        assert_eq!(held.read(root.path(), "ab").unwrap(), None);
        assert_eq!(
            held.read(root.path(), "ab/gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // The directory held open is removed and made again: reads follow the path.
        let fresh = tempfile::tempdir().unwrap();
        let blobs = fresh.path().join("blobs");
        fs::create_dir_all(blobs.join("ab")).unwrap();
        let held_blobs = BlobDir::open(&blobs);
        fs::remove_dir_all(&blobs).unwrap();
        fs::create_dir_all(blobs.join("ab")).unwrap();
        fs::write(blobs.join("ab/new"), b"new").unwrap();
        assert_eq!(held_blobs.read(&blobs, "ab/new").unwrap().unwrap(), b"new");
        fs::write(root.path().join("plain"), b"x").unwrap();
        assert_eq!(
            held.read(root.path(), "plain/x").unwrap(),
            None,
            "a shard that is a file"
        );
        assert!(is_real_file(top, "ab/real"));
        assert!(!is_real_file(top, "ab/link"));
        assert!(!is_real_file(top, "cd/secret"));
        assert!(check_dir(&shard).is_ok());
        assert!(check_dir(&root.path().join("missing")).is_ok());
        assert!(check_dir(&linked_shard).is_err());
    }
}
