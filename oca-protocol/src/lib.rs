//! What the parts of the system say to each other (DESIGN.md): URL signing and the signing
//! keyring shared by the control plane, oca-daemon and the fill agent.

pub mod keys;
pub mod signing;
