//! `oca-fleetsim`: see docs/fleetsim.md and `oca-fleetsim --help`.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let opts = oca_fleetsim::run::Options::parse();
    std::process::exit(oca_fleetsim::run::main_with(opts));
}
