//! Appliance qualification helpers. [`vm`] boots Debian's kernel under QEMU with a small
//! initramfs, for what this machine's kernel cannot show (kTLS).

pub mod vm;
