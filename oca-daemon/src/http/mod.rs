//! HTTP/1.1 for byte-range serving, independent of the I/O engine.

pub mod cors;
pub mod range;
pub mod request;
pub mod response;
pub mod serve;
