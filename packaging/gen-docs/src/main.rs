//! oca-gen-docs: writes the man pages and shell completions of the packaged binaries
//! (`oca-gen-docs --out DIR --ocactl PATH`); `packaging/build-debs.sh` runs it before
//! `cargo deb`, which picks the files up from DIR (docs/packaging.md).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes the man pages and bash, zsh and fish completions of the Open Connect binaries, under
/// OUT/<package>/man and OUT/<package>/completions/<shell>.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Directory to write into (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The built ocactl, whose help output gives its command line.
    #[arg(long, value_name = "FILE")]
    ocactl: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> anyhow::Result<usize> {
        let programs = oca_gen_docs::programs(&cli.ocactl)?;
        Ok(oca_gen_docs::generate(programs, &cli.out)?.len())
    };
    match run() {
        Ok(n) => {
            eprintln!("oca-gen-docs: {n} files in {}", cli.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oca-gen-docs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
