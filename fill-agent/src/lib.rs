//! fill-agent as a library: only its command line and configuration ([`config`]), which the
//! `fill-agent` binary (`main.rs`, the agent itself) and the packaging's man page and shell
//! completion generator (`packaging/gen-docs`) share.

#![forbid(unsafe_code)]

pub mod config;
