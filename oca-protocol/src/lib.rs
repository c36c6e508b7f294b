//! What the parts of the system say to each other (docs/architecture.md): URL signing and its keyring, the
//! health report, steering, playback, fill-manifest and admin-API wire types, oca-daemon's admin
//! status, and IP prefixes. Shared by the control plane, oca-daemon, the fill agent, `ocactl` and
//! oca-lab.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod health;
pub mod history;
pub mod keys;
pub mod live;
pub mod manifest;
pub mod playback;
pub mod prefix;
pub mod signing;
pub mod status;
pub mod steering;
pub mod utc;
