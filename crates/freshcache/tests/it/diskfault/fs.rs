//! The filesystems the disk-fault tests fill: a real tmpfs or ext4 image mounted for one test,
//! or the fault seam standing in for one, and the filler that takes their room.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

/// A filesystem mounted for one test; unmounted on drop (lazily if it is still busy).
pub(super) struct Mount {
    pub(super) dir: PathBuf,
    /// The image file of a loop mount.
    pub(super) image: Option<PathBuf>,
    _root: TempDir,
}

impl Mount {
    /// A tmpfs of `size` bytes and `inodes` inodes, or `None` (said loudly) when mounting is
    /// not permitted here.
    pub(super) fn tmpfs(size: u64, inodes: u64) -> Option<Self> {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let opts = format!("size={size},nr_inodes={inodes},mode=700");
        match run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&dir))
        {
            Ok(()) => Some(Self {
                dir,
                image: None,
                _root: root,
            }),
            Err(e) => {
                eprintln!("{LOUD} ({e})");
                None
            }
        }
    }

    /// An ext4 image of `mib` MiB on a loop device, mounted `errors=remount-ro`.
    pub(super) fn ext4(mib: u64) -> Option<Self> {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mnt");
        let image = root.path().join("fs.img");
        std::fs::create_dir(&dir).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let made = run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)).and_then(|()| {
            run(Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(&image)
                .arg(&dir))
        });
        match made {
            Ok(()) => Some(Self {
                dir,
                image: Some(image),
                _root: root,
            }),
            Err(e) => {
                eprintln!("{LOUD} ({e})");
                None
            }
        }
    }

    pub(super) fn mount_options(&self) -> String {
        Command::new("findmnt")
            .args(["-n", "-o", "OPTIONS"])
            .arg(&self.dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    pub(super) fn source(&self) -> String {
        Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.dir)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
        }
    }
}

/// The fault seam as a small filesystem for blobs: it counts the real bytes and files of blobs,
/// temp files and filler under the test's root, refuses creations past `inodes` and writes past
/// `bytes` with `ENOSPC`, and everything with `EROFS` while read-only. Deleting entries or
/// filler files frees room, as on a real filesystem. (The index is not behind the seam.)
pub(super) struct SeamFs {
    root: PathBuf,
    bytes: AtomicU64,
    inodes: AtomicU64,
    pub(super) read_only: AtomicBool,
    pub(super) faults: AtomicU64,
}

impl SeamFs {
    pub(super) fn new(root: &Path, bytes: u64, inodes: u64) -> Arc<Self> {
        Arc::new(Self {
            root: root.to_path_buf(),
            bytes: AtomicU64::new(bytes),
            inodes: AtomicU64::new(inodes),
            read_only: AtomicBool::new(false),
            faults: AtomicU64::new(0),
        })
    }

    fn fail(&self, errno: i32) -> io::Result<()> {
        self.faults.fetch_add(1, Ordering::Relaxed);
        Err(io::Error::from_raw_os_error(errno))
    }
}

impl FsFaults for SeamFs {
    fn check(&self, step: BlobStep, _path: &Path) -> io::Result<()> {
        if self.read_only.load(Ordering::Relaxed) {
            return self.fail(EROFS);
        }
        let files: Vec<PathBuf> = ["cache/blobs", "cache/tmp", "filler"]
            .iter()
            .flat_map(|d| files_under(&self.root.join(d)))
            .collect();
        match step {
            BlobStep::Create if files.len() as u64 >= self.inodes.load(Ordering::Relaxed) => {
                self.fail(ENOSPC)
            }
            BlobStep::Write(n) => {
                let used: u64 = files
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                if used + n > self.bytes.load(Ordering::Relaxed) {
                    self.fail(ENOSPC)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// What is used up to fill the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exhaust {
    Space,
    Inodes,
}

/// Takes a share of the filesystem up front (one large file, or many empty ones) so that
/// removing it later is "space returns".
pub(super) fn make_filler(root: &Path, what: Exhaust) {
    let dir = root.join("filler");
    std::fs::create_dir_all(&dir).unwrap();
    match what {
        Exhaust::Space => std::fs::write(dir.join("big"), noise(7, 256 * 1024)).unwrap(),
        Exhaust::Inodes => {
            for i in 0..8 {
                std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
            }
        }
    }
}

/// Takes whatever room the failed write left behind, so that every later blob write fails for
/// sure: a write can fail for want of two inodes (a new shard directory and its blob) or of a
/// large blob's blocks while one inode, or a smaller blob's blocks, are still free. Goes in
/// the filler directory, so [`remove_filler`] gives it back.
pub(super) fn top_up(root: &Path, what: Exhaust) {
    use std::io::Write;
    let dir = root.join("filler");
    match what {
        Exhaust::Inodes => {
            for i in 0.. {
                assert!(i < 100_000, "top-up never ran out of inodes");
                if std::fs::File::create_new(dir.join(format!("t{i}"))).is_err() {
                    break;
                }
            }
        }
        Exhaust::Space => {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("big"))
                .unwrap();
            let page = vec![0x5a; 4096];
            for i in 0.. {
                assert!(i < 1_000_000, "top-up never ran out of space");
                if f.write_all(&page).and_then(|()| f.sync_data()).is_err() {
                    break;
                }
            }
        }
    }
}

/// Removes the filler; returns the bytes freed.
pub(super) fn remove_filler(root: &Path) -> u64 {
    let dir = root.join("filler");
    let freed = files_under(&dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    std::fs::remove_dir_all(&dir).unwrap();
    freed
}
