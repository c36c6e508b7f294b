//! What the kernel's io_uring offers, probed once at start with a small ring: the opcodes the
//! engine needs (without them it is not used, and `engine::choose` falls back to epoll) and the
//! ones it uses when present (splice, zero-copy send, OPENAT2, multishot accept and receive).
//! The result, [`Support`], is what every worker's ring is set up from.

use io_uring::{opcode, IoUring, Probe};

use crate::config::BodyPath;

/// What the kernel's io_uring offers, from the probe at start.
#[derive(Clone, Debug)]
pub struct Support {
    pub(super) multishot_accept: bool,
    pub(super) multishot_recv: bool,
    /// How file bytes reach sockets (sendfile when the kernel has no IORING_OP_SPLICE).
    pub body_path: BodyPath,
    pub(super) splice: bool,
    pub(super) send_zc: bool,
    /// IORING_OP_OPENAT2 (5.6): content files are opened off the worker's thread.
    pub(super) openat2: bool,
}

impl Support {
    /// One line for the startup log.
    pub fn describe(&self) -> String {
        format!(
            "accept({}) recv({}, provided buffers) poll_add timeout async_cancel provide_buffers; bodies by {}; splice={} send_zc={} openat2={}",
            if self.multishot_accept { "multishot" } else { "single-shot" },
            if self.multishot_recv { "multishot" } else { "single-shot" },
            self.body_path.name(),
            self.splice,
            self.send_zc,
            self.openat2
        )
    }
}

/// Creates a small ring and probes the opcodes the engine needs; `Err` says why io_uring is out.
pub fn probe(body_path: BodyPath) -> Result<Support, String> {
    let ring = IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup: permission denied (kernel.io_uring_disabled = {}, or a seccomp filter)",
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or("?".into(), |s| s.trim().to_string())
        ),
        Some(libc::ENOSYS) => "io_uring_setup: not implemented by this kernel (or blocked by seccomp)".to_string(),
        _ => format!("io_uring_setup: {e}"),
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    let required = [
        ("accept", opcode::Accept::CODE),
        ("recv", opcode::Recv::CODE),
        ("poll_add", opcode::PollAdd::CODE),
        ("timeout", opcode::Timeout::CODE),
        ("async_cancel", opcode::AsyncCancel::CODE),
        ("provide_buffers", opcode::ProvideBuffers::CODE),
    ];
    for (name, code) in required {
        if !probe.is_supported(code) {
            return Err(format!(
                "kernel io_uring lacks IORING_OP_{}",
                name.to_uppercase()
            ));
        }
    }
    Ok(Support {
        // Multishot accept arrived in 5.19 with no probe bit of its own; an EINVAL at run time
        // also switches a worker back to single-shot.
        multishot_accept: kernel_at_least(5, 19),
        multishot_recv: kernel_at_least(6, 0)
            && std::env::var_os("OCA_URING_SINGLESHOT_RECV").is_none(),
        body_path: if probe.is_supported(opcode::Splice::CODE) {
            body_path
        } else {
            BodyPath::Sendfile
        },
        splice: probe.is_supported(opcode::Splice::CODE),
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        openat2: probe.is_supported(opcode::OpenAt2::CODE),
    })
}

/// From uname(2), not /proc/sys: the systemd unit's ProcSubset=pid hides /proc/sys.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain bytes, zeroed is a valid value, and uname fills it in place.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: the kernel NUL-terminates release within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}
