//! ocactl's tables: what every listing prints unless `--json` is given. Plain text, one header
//! row in capitals, then one row per item, columns left-aligned and padded to their widest
//! cell, two spaces apart; the last column is not padded (no trailing blanks), and an empty
//! cell is `-`, so a missing value reads as one and `grep`/`sort -k` see no gaps.
//!
//! Decision: written by hand rather than with `comfy-table` (8.0: crossterm for its default
//! `tty` feature, Rust 1.88) or `tabled` (papergrid and a derive macro). Borderless, uncoloured,
//! unwrapped columns are the forty lines below; either crate would add several crates to the
//! build for borders, colours and wrapping this output deliberately goes without (a wrapped or
//! boxed row no longer greps as one line). Widths count `char`s, so a row with double-width
//! characters (CJK titles) is shifted by them: rare in ids, and still one row a line.

use std::fmt;

/// A table: a header and rows of cells.
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print as `-`, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.head.len(), String::new());
        for c in &mut cells {
            if c.is_empty() {
                *c = "-".into();
            }
        }
        self.rows.push(cells);
    }

    /// A table of `items`, each made a row by `row`.
    pub fn of<T>(
        head: &[&'static str],
        items: impl IntoIterator<Item = T>,
        row: impl Fn(T) -> Vec<String>,
    ) -> Table {
        let mut t = Table::new(head);
        for item in items {
            t.row(row(item));
        }
        t
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let last = widths.len().saturating_sub(1);
        let head = self.head.iter().map(|h| h.to_string());
        for cells in std::iter::once(head.collect::<Vec<_>>()).chain(self.rows.iter().cloned()) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    // Pad by chars, as the widths were counted (`{:<w$}` would agree; explicit
                    // so the two cannot drift).
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(
                        ' ',
                        widths[i] - cell.chars().count() + 2,
                    ));
                }
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// How long ago `then` was at `now` (unix seconds), to the largest unit: `12s ago`, `5m ago`,
/// `3h ago`, `2d ago`; `in 5m` for a time ahead; `never` for none.
pub fn age(now: i64, then: Option<i64>) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let d = now - then;
    let span = span(d.unsigned_abs());
    if d >= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A duration to the largest unit: `12s`, `5m`, `3h`, `2d` (whole hours as hours: `1h`).
pub fn span(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 86_400 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Bytes in binary units, one decimal: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    scaled(n, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

/// Bits per second in decimal units: `800 bit/s`, `10.0 Gbit/s`.
pub fn bits_per_sec(n: u64) -> String {
    scaled(
        n,
        1000.0,
        &["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s", "Pbit/s"],
    )
}

fn scaled(n: u64, step: f64, units: &[&str]) -> String {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= step && unit + 1 < units.len() {
        v /= step;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} {}", units[0])
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// `name  value` lines, the names padded to the longest: one item shown whole.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let value = if value.is_empty() { "-" } else { value };
        out.push_str(&format!("{name:<w$}  {value}\n"));
    }
    out
}

/// `items` joined with commas.
pub fn list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The value, or an empty cell (`-`).
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_empty_cells_are_dashes() {
        let mut t = Table::new(&["ID", "SITE", "STATE"]);
        t.row(vec!["a1".into(), "isp-a".into(), "ok".into()]);
        t.row(vec!["appliance-2".into(), String::new(), "unknown".into()]);
        assert_eq!(
            t.to_string(),
            "ID           SITE   STATE\n\
             a1           isp-a  ok\n\
             appliance-2  -      unknown\n"
        );
        assert_eq!(Table::new(&["ID"]).to_string(), "ID\n");
    }

    #[test]
    fn units_and_ages_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bits_per_sec(10_000_000_000), "10.0 Gbit/s");
        assert_eq!(age(100, Some(88)), "12s ago");
        assert_eq!(age(10_000, Some(10_000 - 3 * 3600)), "3h ago");
        assert_eq!(age(0, Some(300)), "in 5m");
        assert_eq!(age(0, None), "never");
        assert_eq!(span(3 * 86_400), "3d");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(5400), "90m");
    }
}
