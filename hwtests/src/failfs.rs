//! The `failfs` test disk from a test: a FUSE passthrough of a directory whose reads start
//! returning EIO, or hanging, on demand (see `src/bin/failfs.rs`). Unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A mounted failfs.
pub struct FailFs {
    child: Child,
    /// Where it is mounted.
    pub mount: PathBuf,
}

impl FailFs {
    /// Builds failfs and mounts `backing` at `mount` (root only); returns once mounted.
    pub fn start(backing: &Path, mount: &Path) -> FailFs {
        let bins = crate::cargo_bins(false, &[("hwtests", "failfs")]);
        std::fs::create_dir_all(mount).expect("creating the mount point");
        let mut child = Command::new(&bins["failfs"])
            .arg(backing)
            .arg(mount)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting failfs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("reading failfs");
        assert!(line.contains("mounted"), "failfs: {line}");
        FailFs {
            child,
            mount: mount.to_path_buf(),
        }
    }

    /// From now on every read fails with EIO (`on`), or works again.
    pub fn fail(&self, on: bool) {
        self.signal(if on { libc::SIGUSR1 } else { libc::SIGUSR2 });
    }

    /// From now on every read hangs until [`FailFs::fail`]`(false)` or the unmount (a disk that
    /// stops answering rather than failing).
    pub fn hang(&self) {
        self.signal(libc::SIGHUP);
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for FailFs {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
