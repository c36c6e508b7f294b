//! The `failfs` test disk from a test: a FUSE passthrough of a directory whose reads start
//! returning EIO, or hanging, on demand (see `src/bin/failfs.rs`). Unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A mounted failfs.
pub struct FailFs {
    child: Child,
    /// Where failfs writes the mode in force.
    state: PathBuf,
    /// Where it is mounted.
    pub mount: PathBuf,
}

impl FailFs {
    /// Builds failfs and mounts `backing` at `mount` (root only); returns once mounted.
    pub fn start(backing: &Path, mount: &Path) -> FailFs {
        let bins = crate::cargo_bins(false, &[("test-support", "failfs")]);
        std::fs::create_dir_all(mount).expect("creating the mount point");
        let mut name = mount.file_name().expect("a mount point's name").to_owned();
        name.push(".failfs-state");
        let state = mount.with_file_name(name);
        let mut child = Command::new(&bins["failfs"])
            .arg(backing)
            .arg(mount)
            .arg(&state)
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
            state,
            mount: mount.to_path_buf(),
        }
    }

    /// From now on every read fails with EIO (`on`), or works again.
    /// Returns once failfs has it in force.
    pub fn fail(&self, on: bool) {
        self.signal(if on { libc::SIGUSR1 } else { libc::SIGUSR2 });
        self.wait_for(if on { "failing" } else { "ok" });
    }

    /// From now on every read hangs until [`FailFs::fail`]`(false)` or the unmount (a disk that
    /// stops answering rather than failing). Returns once failfs has it in force.
    pub fn hang(&self) {
        self.signal(libc::SIGHUP);
        self.wait_for("hanging");
    }

    /// Waits (up to 10 s) until failfs says `mode` is in force: a signal is handled when the
    /// process next runs, and a read sent before then would see the mode before it.
    fn wait_for(&self, mode: &str) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&self.state).ok().as_deref() != Some(mode) {
            if std::thread::panicking() && std::time::Instant::now() >= end {
                return; // already failing: no panic inside a panic
            }
            assert!(
                std::time::Instant::now() < end,
                "failfs at {} never reported {mode}",
                self.mount.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
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
