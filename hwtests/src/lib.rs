//! Appliance qualification (`oca-qualify`, [`qualify`]) and the tests that need a whole machine:
//! [`vm`] boots Debian's kernel under QEMU with a small initramfs, for what this machine's kernel
//! cannot show (kTLS); [`tls_round_trip`] checks every byte of an HTTPS exchange. Helpers shared
//! with other crates' tests live in `test-support`.

pub mod qualify;
pub mod tls_round_trip;
pub mod vm;
