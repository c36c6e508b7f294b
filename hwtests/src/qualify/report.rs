//! Check results: a table for people, JSON for machines.

use serde::Serialize;

/// How a check came out.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Met its threshold.
    Pass,
    /// Missed it, or could not be run.
    Fail,
    /// Not asked for by the config (never makes the run fail).
    Skip,
}

/// One check's outcome.
#[derive(Serialize, Debug, Clone)]
pub struct Check {
    /// Dotted name: `disk.seq_read[/srv/oca/disk0]`.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// Measured value, when there is a number.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// The threshold, as text (`>= 1000`).
    pub threshold: String,
    /// What was seen, or why it failed.
    pub detail: String,
}

impl Check {
    /// A check with a number held to `min` (at least) or `max` (at most).
    pub fn measured(
        name: String,
        value: f64,
        unit: &str,
        min: Option<f64>,
        max: Option<f64>,
        detail: String,
    ) -> Check {
        let ok = min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m);
        let threshold = match (min, max) {
            (Some(m), _) => format!(">= {}", fmt_num(m)),
            (_, Some(m)) => format!("<= {}", fmt_num(m)),
            _ => String::new(),
        };
        Check {
            name,
            status: if ok { Status::Pass } else { Status::Fail },
            value: Some(value),
            unit: unit.into(),
            threshold,
            detail,
        }
    }

    /// A yes/no check.
    pub fn verdict(name: String, ok: bool, detail: String) -> Check {
        Check {
            name,
            status: if ok { Status::Pass } else { Status::Fail },
            value: None,
            unit: String::new(),
            threshold: String::new(),
            detail,
        }
    }

    /// A check that could not run: a failure, with the reason.
    pub fn failed(name: String, why: impl std::fmt::Display) -> Check {
        Check::verdict(name, false, why.to_string())
    }

    /// A check the config did not ask for.
    pub fn skipped(name: String, why: impl std::fmt::Display) -> Check {
        Check {
            status: Status::Skip,
            ..Check::verdict(name, true, why.to_string())
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Whether the run passes: no check failed.
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The table printed on stdout.
pub fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 5]> = checks
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                match c.status {
                    Status::Pass => "PASS",
                    Status::Fail => "FAIL",
                    Status::Skip => "SKIP",
                }
                .into(),
                c.value
                    .map_or(String::new(), |v| format!("{} {}", fmt_num(v), c.unit)),
                c.threshold.clone(),
                c.detail.clone(),
            ]
        })
        .collect();
    let head = ["CHECK", "RESULT", "VALUE", "THRESHOLD", "DETAIL"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 4 {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    out.push_str(&if failed == 0 {
        format!("QUALIFIED: all {} checks passed\n", checks.len())
    } else {
        format!(
            "NOT QUALIFIED: {failed} of {} checks failed\n",
            checks.len()
        )
    });
    out
}

/// The JSON report.
pub fn json(checks: &[Check], host: &str, kernel: &str) -> serde_json::Value {
    serde_json::json!({
        "passed": passed(checks),
        "host": host,
        "kernel": kernel,
        "checks": checks,
    })
}
