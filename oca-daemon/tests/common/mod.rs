//! Test harness: the real oca-daemon binary on ephemeral loopback ports over temporary stores.
#![allow(dead_code)]

pub mod cold;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Both engines; every behaviour test runs against each.
/// "uring" is the default io_uring setup (body path auto: splice for large parts, sendfile for
/// small); "uring-<path>" forces one body path. "uring-sendfile" also uses single-shot receives,
/// which is what kernels before 6.0 run.
pub const ENGINES: [&str; 4] = ["uring", "epoll", "uring-splice", "uring-sendfile"];

/// The body path label the daemon reports for an entry of [`ENGINES`].
pub fn body_path_of(engine: &str) -> (&str, &str) {
    match engine.split_once('-') {
        Some(split) => split,
        None if engine == "uring" => (engine, "auto"),
        None => (engine, "sendfile"),
    }
}

/// A running daemon, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Puts a plain file into a store directory, the way an operator would.
pub fn put(store: &Path, id: &str, body: &[u8]) -> PathBuf {
    let dir = store.join("objects").join(&id[..id.len().min(2)]);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(id);
    std::fs::write(&p, body).unwrap();
    p
}

pub fn daemon_cmd(engine: &str, stores: &[&Path], extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oca-daemon"));
    if engine == "uring-sendfile" {
        cmd.env("OCA_URING_SINGLESHOT_RECV", "1");
    }
    let (engine, body) = body_path_of(engine);
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(["--admin-listen", "127.0.0.1:0"]);
    cmd.args(["--engine", engine, "--body-path", body]);
    if !extra.contains(&"--workers") {
        cmd.args(["--workers", "2"]);
    }
    for s in stores {
        cmd.arg("--store").arg(s);
    }
    cmd.args(extra);
    // Behaviour tests fetch unsigned URLs; the signature tests pass their own --keys.
    if !extra.contains(&"--keys") && !extra.contains(&"--allow-unsigned") {
        cmd.arg("--allow-unsigned");
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

impl Server {
    pub fn start(engine: &str, stores: &[&Path], extra: &[&str]) -> Server {
        Server::spawn(daemon_cmd(engine, stores, extra))
    }

    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("spawn oca-daemon");
        reap_at_exit(child.id());
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged first, so whoever hears of the line finds it in the log.
                log2.lock().push_str(&(line.clone() + "\n"));
                if line.contains(" listening ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("daemon did not start; log:\n{}", log.lock());
            }
        };
        let field = |name: &str| test_support::addr_field(&line, name);
        Server {
            child,
            addr: field("addr"),
            admin: field("admin"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().clone()
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://{}/metrics", self.admin))
            .unwrap()
            .text()
            .unwrap()
    }

    /// The metrics text once `ready` holds for it (or after 3 s, for the caller's asserts).
    /// Waits up to 5 s for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) {
        let end = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(needle) {
            assert!(Instant::now() < end, "no {needle:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let m = self.metrics();
            if ready(&m) || Instant::now() > end {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one metric line (name with labels, exactly as rendered).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{series} not in metrics:\n{text}"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Servers held in statics are never dropped; kill them when the test process exits.
fn reap_at_exit(pid: u32) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn kill_all() {
        // Never wait at exit: a lock held now belongs to a thread that will not run again.
        if let Some(pids) = LIVE.try_lock() {
            for &pid in pids.iter() {
                // SAFETY: signalling our own children.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
    // SAFETY: registering a plain extern "C" function with no captured state.
    ONCE.call_once(|| unsafe {
        libc::atexit(kill_all);
    });
    LIVE.lock().push(pid);
}

impl Drop for Server {
    fn drop(&mut self) {
        LIVE.lock().retain(|&p| p != self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A raw response read off a socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A client with a tiny receive window, so a large response stays in flight.
pub fn slow_client(addr: std::net::SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head, then Content-Length body unless `head_only`); None on EOF first.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Option<RawResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading response head: {e} (got {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let mut r = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    if !head_only && status != 304 {
        let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
        r.body = vec![0; len];
        s.read_exact(&mut r.body).unwrap();
    }
    Some(r)
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, req: &[u8]) -> Option<RawResponse> {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    read_response(&mut s, req.starts_with(b"HEAD"))
}

#[allow(unused_imports)]
pub use test_support::closed_within;

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
pub fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim();
    let delim = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    loop {
        let at = find(rest, delim.as_bytes()).expect("delimiter");
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            assert_eq!(&rest[..4], b"--\r\n", "closing delimiter");
            assert_eq!(rest.len(), 4, "nothing after the closing delimiter");
            return parts;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8(rest[2..head_end].to_vec()).unwrap();
        let cr = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_string();
        rest = &rest[head_end + 4..];
        let (a, b) = cr
            .strip_prefix("bytes ")
            .unwrap()
            .split_once('/')
            .unwrap()
            .0
            .split_once('-')
            .unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        parts.push((cr, rest[..len].to_vec()));
        rest = &rest[len..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A filesystem on a loop device, mounted; unmounted and detached on drop.
pub struct LoopDisk {
    pub mount: PathBuf,
    pub device: String,
}

pub fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopDisk {
    pub fn new(dir: &Path, name: &str, fs: &str) -> Result<LoopDisk, String> {
        let image = dir.join(format!("{name}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(512 << 20))
            .map_err(|e| e.to_string())?;
        let device = sh("losetup", &["--find", "--show", image.to_str().unwrap()])?;
        let mount = dir.join(name);
        std::fs::create_dir_all(&mount).unwrap();
        let disk = LoopDisk { mount, device };
        sh(&format!("mkfs.{fs}"), &["-q", &disk.device])?;
        sh("mount", &[&disk.device, disk.mount.to_str().unwrap()])?;
        Ok(disk)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = sh("umount", &[self.mount.to_str().unwrap()]);
        let _ = sh("losetup", &["-d", &self.device]);
    }
}

pub fn loop_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: loop devices and mount need root".into());
    }
    for tool in ["losetup", "mkfs.ext4", "mkfs.xfs", "mount"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!(
                "{tool} not installed (apt-get install util-linux e2fsprogs xfsprogs)"
            ));
        }
    }
    None
}

pub mod tls;

/// The thread id of the daemon's thread named `name`.
pub fn thread_id(pid: u32, name: &str) -> i32 {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return t.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("no thread {name} in {pid}");
}

/// One thread of the daemon stopped with ptrace (as root), as a thread busy elsewhere or blocked
/// in the kernel would be; it runs again when this is dropped. Only the thread that froze it may
/// thaw it (ptrace's rule).
pub struct Frozen(i32);

impl Frozen {
    pub fn thread(pid: u32, name: &str) -> Frozen {
        let tid = thread_id(pid, name);
        // SAFETY: ptrace on a thread of our own child, as root; detached on drop.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        }
        Frozen(tid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: detaching the thread seized in `thread`; it resumes.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// Whether this process may stop the daemon's threads (ptrace needs root here).
pub fn can_freeze() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
