//! Per-disk read bandwidth and IOPS: the store's block device read through io_uring with
//! O_DIRECT (so the page cache is out of the picture), sequentially in large blocks and at random
//! in small ones, with a fixed number of reads in flight. Read-only: safe on a disk in service.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use io_uring::{opcode, types, IoUring};

use super::config::DiskLimits;
use super::report::Check;

/// The block device under a store.
#[derive(Debug, Clone)]
pub struct BlockDev {
    /// Kernel name (`nvme0n1p1`, `loop3`).
    pub name: String,
    /// Device node.
    pub node: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: O_DIRECT's alignment.
    pub logical_block: u64,
    /// Whether the kernel calls it rotational.
    pub rotational: bool,
}

/// Finds the block device holding `path` through sysfs.
pub fn block_device(path: &Path) -> Result<BlockDev> {
    let dev = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .dev();
    // SAFETY: major/minor only split the number.
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        bail!(
            "{} is on device {major}:{minor}, which is not a block device (tmpfs, overlay, a network filesystem?)",
            path.display()
        );
    }
    let sys = std::fs::canonicalize(&sys)?;
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    let uevent = read(&sys.join("uevent"))?;
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .context("no DEVNAME in sysfs")?
        .to_string();
    let sectors: u64 = read(&sys.join("size"))?.parse()?;
    // A partition's queue settings are its disk's.
    let queue = if sys.join("partition").exists() {
        sys.parent()
            .context("partition without a disk")?
            .join("queue")
    } else {
        sys.join("queue")
    };
    let logical_block = read(&queue.join("logical_block_size"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let rotational = read(&queue.join("rotational")).is_ok_and(|s| s == "1");
    Ok(BlockDev {
        node: PathBuf::from("/dev").join(&name),
        name,
        size: sectors * 512,
        logical_block,
        rotational,
    })
}

/// What a read run measured.
#[derive(Debug, Clone, Copy)]
pub struct ReadRun {
    /// Bytes read.
    pub bytes: u64,
    /// Reads completed.
    pub ios: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// Buffers aligned for O_DIRECT, freed on drop.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize, align: usize) -> Result<Aligned> {
        let layout = Layout::from_size_align(len, align.max(4096))?;
        // SAFETY: the layout has a non-zero size (checked by the caller's config) and a power-of-two
        // alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory for {len} bytes of read buffers");
        }
        Ok(Aligned { ptr, layout })
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Reads `dev` with `depth` reads of `block` bytes in flight for `secs`, sequentially (wrapping
/// at the end) or at random block-aligned offsets.
pub fn read_run(
    dev: &BlockDev,
    block: usize,
    depth: u32,
    random: bool,
    secs: f64,
) -> Result<ReadRun> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev.node)
        .with_context(|| format!("opening {} with O_DIRECT", dev.node.display()))?;
    let blocks = dev.size / block as u64;
    if blocks == 0 {
        bail!("{} is smaller than one {block}-byte block", dev.name);
    }
    let bufs = Aligned::new(block * depth as usize, dev.logical_block as usize)?;
    let mut ring = IoUring::new(depth.next_power_of_two())?;
    let mut next_seq = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut offset = || {
        let b = if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            let b = next_seq;
            next_seq = (next_seq + 1) % blocks;
            b
        };
        b * block as u64
    };
    let fd = types::Fd(file.as_raw_fd());
    let submit = |ring: &mut IoUring, slot: u32, off: u64| -> Result<()> {
        // SAFETY: slot < depth, so the pointer stays inside `bufs`, which outlives the ring's use
        // of it (every read is reaped before this function returns).
        let ptr = unsafe { bufs.ptr.add(slot as usize * block) };
        let sqe = opcode::Read::new(fd, ptr, block as u32)
            .offset(off)
            .build()
            .user_data(u64::from(slot));
        // SAFETY: the buffer is valid for `block` bytes until the completion is reaped.
        unsafe { ring.submission().push(&sqe) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))?;
        Ok(())
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    for slot in 0..depth {
        submit(&mut ring, slot, offset())?;
    }
    let (mut bytes, mut ios, mut in_flight) = (0u64, 0u64, depth);
    let mut error = None;
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, res) in done {
            in_flight -= 1;
            if res < 0 {
                error.get_or_insert(std::io::Error::from_raw_os_error(-res));
                continue;
            }
            bytes += res as u64;
            ios += 1;
            if error.is_none() && Instant::now() < deadline {
                submit(&mut ring, slot as u32, offset())?;
                in_flight += 1;
            }
        }
    }
    if let Some(e) = error {
        bail!("reading {}: {e}", dev.node.display());
    }
    Ok(ReadRun {
        bytes,
        ios,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// The disk checks of one store: its device, sequential bandwidth and random IOPS.
pub fn checks(store: &Path, limits: &DiskLimits) -> Vec<Check> {
    let at = store.display();
    let dev = match block_device(store) {
        Ok(d) => d,
        Err(e) => {
            return vec![Check::failed(
                format!("disk.device[{at}]"),
                format!("{e:#}"),
            )]
        }
    };
    let mut out = vec![Check::verdict(
        format!("disk.device[{at}]"),
        true,
        format!(
            "{} {:.1} GiB, {}-byte blocks, {}",
            dev.node.display(),
            dev.size as f64 / f64::from(1u32 << 30),
            dev.logical_block,
            if dev.rotational {
                "rotational"
            } else {
                "solid state"
            }
        ),
    )];
    let seq = read_run(
        &dev,
        limits.seq_block_kib << 10,
        limits.seq_queue_depth,
        false,
        limits.seconds,
    );
    out.push(match seq {
        Ok(r) => Check::measured(
            format!("disk.seq_read[{at}]"),
            r.bytes as f64 / r.secs / 1e6,
            "MB/s",
            Some(limits.min_seq_read_mbps),
            None,
            format!(
                "io_uring O_DIRECT, {} KiB x {} in flight, {:.1} s",
                limits.seq_block_kib, limits.seq_queue_depth, r.secs
            ),
        ),
        Err(e) => Check::failed(format!("disk.seq_read[{at}]"), format!("{e:#}")),
    });
    let rand = read_run(
        &dev,
        limits.rand_block_kib << 10,
        limits.rand_queue_depth,
        true,
        limits.seconds,
    );
    out.push(match rand {
        Ok(r) => Check::measured(
            format!("disk.rand_read[{at}]"),
            r.ios as f64 / r.secs,
            "IOPS",
            Some(limits.min_rand_read_iops),
            None,
            format!(
                "io_uring O_DIRECT, {} KiB x {} in flight, {:.1} s",
                limits.rand_block_kib, limits.rand_queue_depth, r.secs
            ),
        ),
        Err(e) => Check::failed(format!("disk.rand_read[{at}]"), format!("{e:#}")),
    });
    out
}
