//! Appliance qualification (turn-up): disks, filesystems, kernel TLS, network and an end-to-end
//! load run, each a check with a value and a threshold from the config file.

pub mod cli;
pub mod config;
pub mod disk;
pub mod fs;
pub mod ktls;
pub mod load;
pub mod net;
pub mod report;

pub use config::Config;
pub use report::{Check, Status};
