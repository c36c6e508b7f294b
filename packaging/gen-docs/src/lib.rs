//! The packages' generated files: a man page and bash, zsh and fish completions for every binary
//! the Debian packages ship (docs/packaging.md). `oca-gen-docs` writes them at package-build
//! time (`packaging/build-debs.sh`), from the same clap definitions the binaries parse their
//! command lines with, so they cannot drift from `--help`.

#![forbid(unsafe_code)]

pub mod help_cli;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// One binary: its clap command, man section, and the package that ships it.
pub struct Program {
    pub name: &'static str,
    /// 8 for daemons and the tool run as root on the appliance, 1 for the admin CLI anyone runs.
    pub section: &'static str,
    pub package: &'static str,
    pub command: Command,
}

/// Every packaged binary. `ocactl`'s command line is in its binary, not a library: its command
/// is rebuilt from its own `--help` output ([`help_cli`]), so the built `ocactl` is needed.
pub fn programs(ocactl: &Path) -> Result<Vec<Program>> {
    Ok(vec![
        Program {
            name: "oca-daemon",
            section: "8",
            package: "oca-appliance",
            command: oca_daemon::config::Cli::command(),
        },
        Program {
            name: "fill-agent",
            section: "8",
            package: "oca-appliance",
            command: fill_agent::config::Cli::command(),
        },
        Program {
            name: "oca-qualify",
            section: "8",
            package: "oca-appliance",
            command: hwtests::qualify::cli::Cli::command(),
        },
        Program {
            name: "control-plane",
            section: "8",
            package: "oca-control-plane",
            command: control_plane::settings::Cli::command(),
        },
        Program {
            name: "ocactl",
            section: "1",
            package: "oca-control-plane",
            command: help_cli::command_of_program("ocactl", ocactl)
                .with_context(|| format!("reading ocactl's help from {}", ocactl.display()))?,
        },
    ])
}

/// The man pages' footer: `Open Connect <version>`, and the date from `SOURCE_DATE_EPOCH`
/// when set (reproducible builds), else none.
fn man(cmd: Command, section: &str) -> clap_mangen::Man {
    let m = clap_mangen::Man::new(cmd)
        .section(section)
        .source(format!("Open Connect {}", env!("CARGO_PKG_VERSION")))
        .manual("Open Connect");
    match std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(secs) => m.date(civil_date(secs)),
        None => m,
    }
}

/// YYYY-MM-DD of a Unix time (UTC), Howard Hinnant's days-to-civil.
fn civil_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Writes `<out>/<package>/man/<name>.<section>` (and one page per subcommand,
/// `ocactl-site-add.1`, as git does) and `<out>/<package>/completions/{bash,zsh,fish}/…`
/// under the names each shell's completion loader looks for. Returns the files written.
pub fn generate(programs: Vec<Program>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for p in programs {
        let base = out.join(p.package);
        let man_dir = base.join("man");
        std::fs::create_dir_all(&man_dir)?;
        let mut cmd = p.command.name(p.name).disable_help_subcommand(true);
        cmd.build();
        written.extend(man_pages(&cmd, p.section, &man_dir)?);
        for (shell, dir, file) in [
            (Shell::Bash, "bash", p.name.to_string()),
            (Shell::Zsh, "zsh", format!("_{}", p.name)),
            (Shell::Fish, "fish", format!("{}.fish", p.name)),
        ] {
            let d = base.join("completions").join(dir);
            std::fs::create_dir_all(&d)?;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, p.name, &mut buf);
            let path = d.join(file);
            std::fs::write(&path, buf)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn man_pages(cmd: &Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(man_pages(sub, section, dir)?);
    }
    let page = man(cmd.clone(), section);
    let path = dir.join(page.get_filename());
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(1_764_633_600), "2025-12-02");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
    }

    /// What a rebuilt command must keep of a real one: every visible option's name, short
    /// form, whether it takes a value, its possible values, default and env; the positionals;
    /// the subcommands, recursively.
    fn shape(cmd: &Command) -> Vec<String> {
        let mut out = Vec::new();
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let long = a.get_long().map(str::to_string);
            if matches!(long.as_deref(), Some("help" | "version")) {
                continue;
            }
            let takes = a.get_num_args().is_none_or(|n| n.takes_values())
                && !matches!(
                    a.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
                );
            let possible: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            out.push(format!(
                "{} {long:?} {:?} takes={takes} possible={possible:?} default={:?} env={:?} required={}",
                cmd.get_name(),
                a.get_short(),
                // Shown in the help only for options that take a value, unless hidden.
                if takes && !a.is_hide_default_value_set() {
                    a.get_default_values()
                } else {
                    &[]
                },
                a.get_env(),
                a.is_required_set(),
            ));
        }
        out.sort();
        for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            out.extend(shape(s));
        }
        out
    }

    fn rebuilt(real: Command) -> Command {
        let mut real = real.term_width(100);
        real.build();
        let name = real.get_name().to_string();
        help_cli::command(&name, "0", &mut |path| {
            let mut c = real.clone();
            for p in path {
                c = c.find_subcommand(p).unwrap().clone();
            }
            Ok(c.render_long_help().to_string())
        })
        .unwrap()
    }

    #[test]
    fn help_output_gives_back_the_real_commands() {
        for real in [
            oca_daemon::config::Cli::command(),
            fill_agent::config::Cli::command(),
            hwtests::qualify::cli::Cli::command(),
            control_plane::settings::Cli::command(),
        ] {
            let mut r = real.clone();
            r.build();
            let back = rebuilt(real);
            let (want, got) = (shape(&r), shape(&back));
            assert!(want.len() > 3, "{want:?}");
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(w, g);
            }
            assert_eq!(want.len(), got.len());
        }
    }

    #[test]
    fn subcommands_both_layouts_and_notes() {
        #[derive(clap::Parser)]
        #[command(name = "t", about = "First line.\n\nMore about t.")]
        struct T {
            /// The URL.
            #[arg(long, env = "T_URL", default_value = "http://x")]
            url: String,
            /// Verbose.
            #[arg(short, long)]
            verbose: bool,
            #[command(subcommand)]
            cmd: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            /// Adds one.
            Add {
                id: String,
                /// Kind.
                #[arg(long, value_parser = ["isp", "ixp"])]
                kind: String,
                /// Extra prefixes (repeat).
                #[arg(long = "prefix", value_name = "CIDR")]
                prefixes: Vec<String>,
            },
            /// Lists.
            #[command(subcommand)]
            List(Inner),
        }
        #[derive(clap::Subcommand)]
        enum Inner {
            /// All of them, with a long
            /// explanation.
            ///
            /// A second paragraph makes the help long.
            All {
                #[arg(long)]
                json: bool,
            },
        }
        let real = T::command();
        let mut r = real.clone();
        r.build();
        let back = rebuilt(real);
        assert_eq!(shape(&r), shape(&back));
        assert_eq!(back.get_about().unwrap().to_string(), "First line.");
        let add = back.find_subcommand("add").unwrap();
        assert_eq!(add.get_about().unwrap().to_string(), "Adds one");
        let kind = add.get_arguments().find(|a| a.get_id() == "kind").unwrap();
        assert!(kind.is_required_set());
        let list = back.find_subcommand("list").unwrap();
        assert!(list.find_subcommand("all").is_some());
    }
}
