//! A `clap::Command` rebuilt from a program's `--help` output, for programs whose command line
//! is not reachable from a library: today `ocactl`, whose `Cli` lives in its binary
//! (`control-plane/src/bin/ocactl.rs`). The man page and the completions of such a program are
//! then made exactly as those of the others (`clap_mangen`, `clap_complete`), from what the
//! program itself prints, so they follow it without a copy kept by hand.
//!
//! Reads clap's help layouts, the two-column one and the long one (each entry's text on its own
//! indented lines), with their `[default: ..]`, `[env: ..]`, `[possible values: ..]` and
//! `Possible values:` lists; the `Commands:` section is followed recursively (`PROG SUB --help`).
//! What it cannot see: hidden arguments (not printed), argument groups and conflicts
//! (usage only), value parsers. The tests rebuild the other binaries' commands, whose real
//! definitions are at hand, and compare.

use anyhow::{bail, Result};
use clap::{Arg, ArgAction, Command, ValueHint};

/// One option or positional argument as the help shows it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Entry {
    pub short: Option<char>,
    pub long: Option<String>,
    /// Value names (`<FILE>`); empty for a flag.
    pub values: Vec<String>,
    /// `...`: repeatable or several values.
    pub multiple: bool,
    /// A positional argument written `<X>` (an optional one is `[X]`).
    pub required_positional: bool,
    pub help: String,
    pub default: Option<String>,
    pub env: Option<String>,
    pub possible: Vec<(String, String)>,
}

/// One help page, parsed.
#[derive(Debug, Default)]
pub struct Page {
    /// The text before `Usage:`: first paragraph, then the rest.
    pub about: String,
    pub long_about: String,
    pub usage: String,
    pub options: Vec<Entry>,
    pub positionals: Vec<Entry>,
    /// `Commands:` entries (name, about), `help` left out.
    pub commands: Vec<(String, String)>,
    /// Text after the sections (clap's `after_help`).
    pub after: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Parses one page of clap's help output.
pub fn parse(text: &str) -> Result<Page> {
    let mut page = Page::default();
    let lines: Vec<&str> = text.lines().collect();
    let Some(u) = lines.iter().position(|l| l.starts_with("Usage: ")) else {
        bail!("no Usage: line in the help text");
    };
    let head = lines[..u].join("\n");
    let head = head.trim();
    match head.split_once("\n\n") {
        Some((first, _)) => {
            page.about = first.replace('\n', " ");
            page.long_about = head.to_string();
        }
        None => page.about = head.replace('\n', " "),
    }
    let mut i = u;
    page.usage = lines[i].trim_start_matches("Usage: ").to_string();
    i += 1;
    while i < lines.len() && !lines[i].trim().is_empty() && indent(lines[i]) > 0 {
        page.usage.push(' ');
        page.usage.push_str(lines[i].trim());
        i += 1;
    }
    // Sections: a heading at column 0 ending in ':', then indented entries.
    let mut section = String::new();
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut after = Vec::new();
    for line in &lines[i..] {
        if line.trim().is_empty() {
            if let Some((_, body)) = entries.last_mut() {
                body.push(String::new());
            }
            continue;
        }
        let ind = indent(line);
        if ind == 0 {
            if line.ends_with(':') && !line.contains(' ') || line == &"Options:" {
                section = line.trim_end_matches(':').to_string();
                continue;
            }
            // Text after the sections.
            section = "after".into();
            after.push(line.to_string());
            continue;
        }
        if section == "after" {
            after.push(line.to_string());
            continue;
        }
        let t = line.trim_start();
        let is_entry = if section == "Commands" {
            ind == 2
        } else {
            ind <= 6 && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
        };
        if is_entry {
            entries.push((format!("{section}\u{0}{t}"), Vec::new()));
        } else if let Some((_, body)) = entries.last_mut() {
            body.push(t.to_string());
        }
    }
    page.after = after.join("\n").trim().to_string();
    for (first, body) in entries {
        let (section, first) = first.split_once('\u{0}').unwrap();
        // Two-column layout: the entry's text starts after two spaces on its first line.
        let (spec, help0) = match first.find("  ") {
            Some(p) => (first[..p].trim(), first[p..].trim()),
            None => (first.trim(), ""),
        };
        if section == "Commands" {
            if spec != "help" {
                let about = std::iter::once(help0.to_string())
                    .chain(body.iter().cloned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                page.commands.push((spec.to_string(), about));
            }
            continue;
        }
        let mut e = entry(spec);
        help_text(&mut e, help0, &body);
        if e.long.is_some() || e.short.is_some() {
            if !matches!(e.long.as_deref(), Some("help" | "version")) {
                page.options.push(e);
            }
        } else {
            page.positionals.push(e);
        }
    }
    Ok(page)
}

/// `-s, --long <VALUE>...`, `<NAME>`, `[NAME]...`
fn entry(spec: &str) -> Entry {
    let mut e = Entry::default();
    for tok in spec.split_whitespace() {
        let tok = tok.trim_end_matches(',');
        let (tok, many) = match tok.strip_suffix("...") {
            Some(t) => (t, true),
            None => (tok, false),
        };
        e.multiple |= many;
        if let Some(l) = tok.strip_prefix("--") {
            let (l, v) = l.split_once('=').unwrap_or((l, ""));
            e.long = Some(l.to_string());
            if !v.is_empty() {
                e.values
                    .push(v.trim_matches(['[', ']', '<', '>']).to_string());
            }
        } else if let Some(s) = tok.strip_prefix('-') {
            e.short = s.chars().next();
        } else if let Some(v) = tok.strip_prefix('<') {
            let v = v.trim_end_matches('>').to_string();
            if e.long.is_none() && e.short.is_none() {
                e.required_positional = true;
            }
            e.values.push(v);
        } else if let Some(v) = tok.strip_prefix('[') {
            e.values
                .push(v.trim_end_matches(']').trim_matches(['<', '>']).to_string());
        }
    }
    e
}

/// The entry's text, without clap's bracketed notes, which become fields.
fn help_text(e: &mut Entry, first: &str, body: &[String]) {
    let mut paras: Vec<String> = vec![String::new()];
    let mut in_possible = false;
    for line in std::iter::once(first.to_string()).chain(body.iter().cloned()) {
        if line.is_empty() {
            paras.push(String::new());
            in_possible = false;
            continue;
        }
        if line == "Possible values:" {
            in_possible = true;
            continue;
        }
        if in_possible {
            if let Some(item) = line.strip_prefix("- ") {
                let (name, help) = item.split_once(':').unwrap_or((item, ""));
                e.possible
                    .push((name.trim().to_string(), help.trim().to_string()));
            } else if let Some(last) = e.possible.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        let p = paras.last_mut().unwrap();
        if !p.is_empty() {
            p.push(' ');
        }
        p.push_str(&line);
    }
    let mut text = paras
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    // Bracketed notes, last first: `[env: X=]`, `[default: v]`, `[possible values: a, b]`.
    while let Some(start) = text
        .rfind('[')
        .filter(|&p| p == 0 || text[..p].ends_with(char::is_whitespace))
    {
        let Some(end) = text[start..].find(']').map(|p| start + p) else {
            break;
        };
        if !text[end + 1..].trim().is_empty() {
            break;
        }
        let note = text[start..=end]
            .trim()
            .trim_matches(['[', ']'])
            .to_string();
        let Some((key, value)) = note.split_once(": ") else {
            break;
        };
        match key {
            "env" => e.env = Some(value.split('=').next().unwrap_or(value).to_string()),
            "default" => e.default = Some(value.to_string()),
            "possible values" => {
                e.possible = value
                    .split(", ")
                    .map(|v| (v.to_string(), String::new()))
                    .collect()
            }
            "aliases" | "alias" | "short aliases" => {}
            _ => break,
        }
        text.truncate(start);
        text = text.trim_end().to_string();
    }
    e.help = text.trim().to_string();
}

/// clap keeps `&'static str`s (its `string` feature, which takes `String`s, is off in the
/// workspace: turning it on would rebuild every binary); a generator runs once and exits.
fn leak(s: String) -> &'static str {
    s.leak()
}

/// Shell completion hints from the value name, as the derive's `value_hint` would have given.
fn hint(value: &str) -> ValueHint {
    match value {
        "FILE" | "PEM" | "PATH" | "FILE|URL" => ValueHint::FilePath,
        "DIR" => ValueHint::DirPath,
        "URL" => ValueHint::Url,
        _ => ValueHint::Unknown,
    }
}

/// Turns a parsed page (and its subcommands' pages) into a `clap::Command`.
fn build(name: &str, page: &Page, subs: Vec<Command>) -> Command {
    let mut cmd = Command::new(leak(name.to_string()))
        .about(page.about.clone())
        .subcommands(subs)
        .disable_help_subcommand(true);
    if page.long_about != page.about && !page.long_about.is_empty() {
        cmd = cmd.long_about(page.long_about.clone());
    }
    if !page.after.is_empty() {
        cmd = cmd.after_help(page.after.clone());
    }
    let usage: Vec<&str> = page.usage.split_whitespace().collect();
    for e in &page.options {
        let id = e
            .long
            .clone()
            .unwrap_or_else(|| e.short.unwrap().to_string());
        let mut a = Arg::new(leak(id)).help(e.help.clone());
        if let Some(l) = &e.long {
            a = a.long(leak(l.clone()));
            a = a.required(usage.contains(&format!("--{l}").as_str()));
        }
        if let Some(s) = e.short {
            a = a.short(s);
        }
        a = if e.values.is_empty() {
            a.action(ArgAction::SetTrue)
        } else {
            a.value_names(e.values.iter().map(|v| leak(v.clone())))
                .value_hint(hint(&e.values[0]))
                .action(if e.multiple {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                })
        };
        a = with_notes(a, e);
        cmd = cmd.arg(a);
    }
    for e in &page.positionals {
        let v = e.values.first().cloned().unwrap_or_else(|| "ARG".into());
        let mut a = Arg::new(leak(v.to_lowercase()))
            .value_name(leak(v.clone()))
            .help(e.help.clone())
            .required(e.required_positional)
            .value_hint(hint(&v));
        if e.multiple {
            a = a.num_args(1..).action(ArgAction::Append);
        }
        cmd = cmd.arg(with_notes(a, e));
    }
    cmd
}

fn with_notes(mut a: Arg, e: &Entry) -> Arg {
    if let Some(d) = &e.default {
        a = a.default_value(leak(d.clone()));
    }
    if let Some(env) = &e.env {
        a = a.env(leak(env.clone()));
    }
    if !e.possible.is_empty() {
        a = a.value_parser(
            e.possible
                .iter()
                .map(|(n, h)| {
                    let v = clap::builder::PossibleValue::new(leak(n.clone()));
                    if h.is_empty() {
                        v
                    } else {
                        v.help(h.clone())
                    }
                })
                .collect::<Vec<_>>(),
        );
    }
    a
}

/// The whole command tree of `name`: `help(path)` returns the long help of `name PATH... --help`.
pub fn command(
    name: &str,
    version: &str,
    help: &mut dyn FnMut(&[String]) -> Result<String>,
) -> Result<Command> {
    fn walk(
        name: &str,
        path: &mut Vec<String>,
        help: &mut dyn FnMut(&[String]) -> Result<String>,
    ) -> Result<Command> {
        let page = parse(&help(path)?)?;
        let mut subs = Vec::new();
        for (sub, about) in &page.commands {
            path.push(sub.clone());
            let mut c = walk(sub, path, help)?;
            path.pop();
            if c.get_about().is_none_or(|a| a.to_string().is_empty()) {
                c = c.about(about.clone());
            }
            subs.push(c);
        }
        Ok(build(name, &page, subs))
    }
    Ok(walk(name, &mut Vec::new(), help)?.version(leak(version.to_string())))
}

/// `command` for a program on disk: runs `PROGRAM [SUB...] --help`.
pub fn command_of_program(name: &str, program: &std::path::Path) -> Result<Command> {
    use anyhow::Context;
    let run = |args: &[String]| -> Result<String> {
        let out = std::process::Command::new(program)
            .args(args)
            // A fixed width: clap wraps to the terminal's, else 100 columns.
            .env("COLUMNS", "100")
            .env_remove("OCA_CP_URL")
            .env_remove("OCA_CP_TOKEN")
            .env_remove("OCA_CP_CA")
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{} {}: exit {}: {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let version = run(&["--version".to_string()])?;
    let version = version.split_whitespace().nth(1).unwrap_or("").to_string();
    command(name, &version, &mut |path| {
        let mut args = path.to_vec();
        args.push("--help".into());
        run(&args)
    })
}
