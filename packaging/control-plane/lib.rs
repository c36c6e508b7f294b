//! Nothing: this crate holds the metadata of a Debian package (its Cargo.toml; docs/packaging.md).

#![forbid(unsafe_code)]
