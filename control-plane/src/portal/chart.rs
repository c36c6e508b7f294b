//! A line chart drawn as SVG on the server: no JavaScript, nothing to build, readable by
//! screen readers. [`render`] is a pure function of a [`Chart`]: the same input gives the same
//! bytes, so pages can cache it and tests compare it.
//!
//! What it draws: a plot area with a y axis from 0 to a round number above the highest value
//! (four or five ticks on a 1-2-2.5-5 scale, labelled in the chart's units) and a time axis in
//! UTC (ticks on round minutes, hours or days, labelled `HH:MM` within a day, `MM-DD` beyond);
//! the mean line, the peak line lighter behind it, and the capacity as a dashed line when
//! given. Points more than one `step` apart are not joined: a missing bucket is a gap in the
//! line, never a drop to zero; a point alone is drawn as a dot.
//!
//! Accessible: `role="img"` with an `aria-label` (the title), a `<title>` and a `<desc>` that
//! says in words what the chart shows (range, highest peak, capacity). Every text is escaped.

use std::fmt::Write;

use oca_protocol::history::Utc;

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// The chart's title (and accessible name).
    pub title: &'a str,
    /// The values' units, e.g. `Gb/s`.
    pub units: &'a str,
    /// Width in pixels (200 to 4000).
    pub width: u32,
    /// Height in pixels (120 to 4000).
    pub height: u32,
    /// First second of the time axis (unix seconds).
    pub from: i64,
    /// Last second of the time axis.
    pub to: i64,
    /// Seconds between consecutive points; points further apart are not joined.
    pub step: i64,
    /// The mean line: (unix seconds, value), oldest first.
    pub mean: &'a [(i64, f64)],
    /// The peak line, same shape.
    pub peak: &'a [(i64, f64)],
    /// The capacity, drawn as a dashed line, in the same units.
    pub capacity: Option<f64>,
}

/// Margins around the plot area: left (y labels), right, top (title), bottom (x labels).
const MARGIN: (f64, f64, f64, f64) = (64.0, 16.0, 36.0, 40.0);

/// Colours with at least 4.5:1 contrast on white, the peak a lighter shade of the mean.
const MEAN: &str = "#1d4f91";
const PEAK: &str = "#7fa3d1";
const CAPACITY: &str = "#a4161a";
const INK: &str = "#222222";
const GRID: &str = "#dddddd";

/// Time-axis tick spacings tried, shortest first.
const TIME_STEPS: [i64; 13] = [
    60, 300, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800, 2_592_000,
];

/// Most ticks on either axis.
const MAX_TICKS: i64 = 6;

/// The chart as an SVG document.
pub fn render(c: &Chart<'_>) -> String {
    let width = f64::from(c.width.clamp(200, 4_000));
    let height = f64::from(c.height.clamp(120, 4_000));
    let (from, to) = (c.from, c.to.max(c.from + 1));
    let plot = Plot {
        left: MARGIN.0,
        top: MARGIN.2,
        width: width - MARGIN.0 - MARGIN.1,
        height: height - MARGIN.2 - MARGIN.3,
        from,
        to,
        top_value: 1.0,
    };
    let highest = c
        .mean
        .iter()
        .chain(c.peak)
        .map(|p| p.1)
        .chain(c.capacity)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_step = nice_step(highest / 4.0);
    let plot = Plot {
        top_value: ((highest / y_step).ceil() * y_step).max(y_step),
        ..plot
    };
    let title = escape(c.title);
    let mut svg = String::with_capacity(4_096);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{title}" font-family="sans-serif" font-size="12">"#,
        w = width,
        h = height,
    );
    let _ = write!(
        svg,
        "<title>{title}</title><desc>{}</desc>",
        escape(&describe(c))
    );
    let _ = write!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{}" y="20" font-size="14" font-weight="bold" fill="{INK}">{title}</text>"#,
        MARGIN.0
    );
    y_axis(&mut svg, &plot, y_step, c.units);
    x_axis(&mut svg, &plot);
    if c.mean.is_empty() && c.peak.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{INK}">no data in this range</text>"#,
            plot.left + plot.width / 2.0,
            plot.top + plot.height / 2.0
        );
    }
    if let Some(cap) = c.capacity.filter(|v| v.is_finite() && *v > 0.0) {
        let y = plot.y(cap);
        let _ = write!(
            svg,
            r#"<line class="capacity" x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{CAPACITY}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            plot.left,
            plot.left + plot.width
        );
    }
    line(&mut svg, &plot, c.peak, c.step, "peak", PEAK, 1.0);
    line(&mut svg, &plot, c.mean, c.step, "mean", MEAN, 2.0);
    legend(&mut svg, width, c.capacity.is_some());
    svg.push_str("</svg>\n");
    svg
}

/// The plot area and the scales that map values into it.
#[derive(Clone, Copy)]
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    from: i64,
    to: i64,
    top_value: f64,
}

impl Plot {
    fn x(&self, t: i64) -> f64 {
        self.left + (t - self.from) as f64 / (self.to - self.from) as f64 * self.width
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.height - (v / self.top_value).clamp(0.0, 1.0) * self.height
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

/// The y axis: grid lines and labels from 0 up in `step`s, the units above.
fn y_axis(svg: &mut String, plot: &Plot, step: f64, units: &str) {
    let ticks = (plot.top_value / step).round() as i64;
    for i in 0..=ticks {
        let v = step * i as f64;
        let y = plot.y(v);
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{INK}">{}</text>"#,
            plot.left,
            plot.left + plot.width,
            plot.left - 6.0,
            y + 4.0,
            number(v, step)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{INK}">{}</text>"#,
        plot.left - 6.0,
        plot.top - 8.0,
        escape(units)
    );
}

/// The time axis: the baseline, ticks on round times, `UTC` at its end.
fn x_axis(svg: &mut String, plot: &Plot) {
    let span = plot.to - plot.from;
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|s| span / s <= MAX_TICKS)
        .unwrap_or(span.max(1));
    let _ = write!(
        svg,
        r#"<line x1="{:.1}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="{INK}"/>"#,
        plot.left,
        plot.left + plot.width,
        b = plot.bottom()
    );
    let mut t = plot.from + (step - plot.from.rem_euclid(step)) % step;
    while t <= plot.to {
        let x = plot.x(t);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{:.1}" stroke="{INK}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="{INK}">{}</text>"#,
            plot.bottom() + 4.0,
            plot.bottom() + 18.0,
            time_label(t, span, step),
            b = plot.bottom()
        );
        t += step;
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{INK}">UTC</text>"#,
        plot.left + plot.width,
        plot.bottom() + 34.0
    );
}

/// One series as paths: a new path after every gap, a dot for a point alone.
fn line(
    svg: &mut String,
    plot: &Plot,
    points: &[(i64, f64)],
    step: i64,
    class: &str,
    colour: &str,
    width: f64,
) {
    for run in runs(points, step) {
        if let [(t, v)] = run {
            let _ = write!(
                svg,
                r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                plot.x(*t),
                plot.y(*v)
            );
            continue;
        }
        let mut d = String::new();
        for (i, (t, v)) in run.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if i == 0 { "M" } else { " L" },
                plot.x(*t),
                plot.y(*v)
            );
        }
        let _ = write!(
            svg,
            r#"<path class="{class}" d="{d}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-linejoin="round"/>"#
        );
    }
}

/// The series cut at gaps (points more than `step` apart) and at values that are not numbers.
fn runs(points: &[(i64, f64)], step: i64) -> Vec<&[(i64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..=points.len() {
        let cut = i == points.len()
            || !points[i].1.is_finite()
            || (i > start && points[i].0 - points[i - 1].0 > step);
        if cut {
            if i > start {
                out.push(&points[start..i]);
            }
            start = if i < points.len() && !points[i].1.is_finite() {
                i + 1
            } else {
                i
            };
        }
    }
    out
}

/// The legend, top right.
fn legend(svg: &mut String, width: f64, capacity: bool) {
    let mut x = width - MARGIN.1 - if capacity { 230.0 } else { 130.0 };
    let mut entry = |label: &str, colour: &str, dash: &str| {
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="16" x2="{:.1}" y2="16" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="20" fill="{INK}">{label}</text>"#,
            x + 16.0,
            x + 20.0
        );
        x += 60.0;
    };
    entry("mean", MEAN, "");
    entry("peak", PEAK, "");
    if capacity {
        entry("capacity", CAPACITY, r#" stroke-dasharray="6 4""#);
    }
}

/// The chart in words, for `<desc>`.
fn describe(c: &Chart<'_>) -> String {
    let mut d = format!(
        "{}: mean and peak per {}-second interval, from {} to {} UTC. ",
        c.title,
        c.step,
        Utc::of(c.from),
        Utc::of(c.to)
    );
    if c.mean.is_empty() && c.peak.is_empty() {
        d.push_str("No data in this range.");
    } else {
        let peak = c
            .peak
            .iter()
            .chain(c.mean)
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let _ = write!(
            d,
            "{} intervals with data; highest peak {} {}.",
            c.mean.len().max(c.peak.len()),
            short(peak),
            c.units
        );
    }
    if let Some(cap) = c.capacity {
        let _ = write!(d, " Capacity {} {}.", short(cap), c.units);
    }
    d
}

/// A round step near `raw`: 1, 2, 2.5 or 5 times a power of ten (1 when `raw` is not above 0).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 2.5 {
        2.5
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// `v` with as many decimals as `step` needs (0.25: two; 5: none).
fn number(v: f64, step: f64) -> String {
    let decimals = (0..=6usize)
        .find(|&d| {
            let s = step * 10f64.powi(d as i32);
            (s - s.round()).abs() < 1e-6
        })
        .unwrap_or(6);
    format!("{v:.decimals$}")
}

/// `v` to three decimals at most, without trailing zeros (for sentences).
fn short(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A tick's label: time of day within a day's span, else the date (and time, for ticks
/// closer than a day).
fn time_label(t: i64, span: i64, step: i64) -> String {
    let u = Utc::of(t);
    if span <= 86_400 {
        format!("{:02}:{:02}", u.hour, u.minute)
    } else if step >= 86_400 {
        format!("{:02}-{:02}", u.month, u.day)
    } else {
        format!("{:02}-{:02} {:02}h", u.month, u.day, u.hour)
    }
}

/// `s` safe in SVG text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart<'a>(mean: &'a [(i64, f64)], peak: &'a [(i64, f64)]) -> Chart<'a> {
        Chart {
            title: "Traffic of a1",
            units: "Gb/s",
            width: 600,
            height: 300,
            from: 0,
            to: 3_600,
            step: 300,
            mean,
            peak,
            capacity: None,
        }
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn an_empty_series_draws_axes_and_says_so() {
        let svg = render(&chart(&[], &[]));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"role="img""#) && svg.contains(r#"aria-label="Traffic of a1""#));
        assert!(svg.contains("<title>Traffic of a1</title>"));
        assert!(svg.contains("No data in this range.") && svg.contains(">no data in this range<"));
        assert_eq!(count(&svg, "<path"), 0);
        assert_eq!(count(&svg, "<circle"), 0);
        // Time ticks every 10 minutes over the hour, labelled as times of day.
        assert!(svg.contains(">00:00<") && svg.contains(">01:00<"), "{svg}");
    }

    #[test]
    fn one_point_is_a_dot() {
        let svg = render(&chart(&[(600, 1.0)], &[(600, 2.0)]));
        assert_eq!(count(&svg, "<path"), 0);
        assert_eq!(count(&svg, r#"<circle class="mean""#), 1);
        assert_eq!(count(&svg, r#"<circle class="peak""#), 1);
    }

    #[test]
    fn a_missing_bucket_is_a_gap_not_a_zero() {
        let mean = [(0, 1.0), (300, 1.0), (900, 1.0), (1_200, 1.0), (1_800, 1.0)];
        let svg = render(&chart(&mean, &[]));
        // 0-300 and 900-1200 are lines; 1800 stands alone.
        assert_eq!(count(&svg, r#"<path class="mean""#), 2);
        assert_eq!(count(&svg, r#"<circle class="mean""#), 1);
        for path in svg.split(r#"<path class="mean" d=""#).skip(1) {
            let d = path.split('"').next().unwrap();
            assert_eq!(count(d, "M"), 1, "{d}");
            assert_eq!(count(d, "L"), 1, "{d}");
        }
        // A value that is not a number is a gap too.
        let svg = render(&chart(&[(0, 1.0), (300, f64::NAN), (600, 1.0)], &[]));
        assert_eq!(count(&svg, r#"<circle class="mean""#), 2);
    }

    #[test]
    fn text_is_escaped() {
        let c = Chart {
            title: r#"<script>"a" & 'b'</script>"#,
            units: "<u>",
            ..chart(&[], &[])
        };
        let svg = render(&c);
        assert!(!svg.contains("<script>") && !svg.contains("<u>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"));
        assert!(svg.contains("&lt;u&gt;"));
    }

    #[test]
    fn values_scale_to_a_round_top() {
        // Highest 7.3: ticks of 2, the axis up to 8.
        let mean = [(0, 4.0), (300, 7.3)];
        let c = Chart {
            capacity: Some(6.0),
            ..chart(&mean, &[])
        };
        let svg = render(&c);
        for label in [">0<", ">2<", ">4<", ">6<", ">8<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(!svg.contains(">10<"));
        // 4 of 8 is half way up the plot; 6 (capacity) three quarters.
        let top = MARGIN.2;
        let height = 300.0 - MARGIN.2 - MARGIN.3;
        let half = top + height / 2.0;
        assert!(
            svg.contains(&format!("M{:.1} {half:.1}", MARGIN.0)),
            "{svg}"
        );
        assert!(svg.contains(&format!(r#"y1="{:.1}""#, top + height / 4.0)));
        assert!(svg.contains(r#"class="capacity""#) && svg.contains("Capacity 6 Gb/s."));
        // Small values get decimals.
        let svg = render(&chart(&[(0, 0.03)], &[]));
        assert!(svg.contains(">0.01<") && svg.contains(">0.03<"), "{svg}");
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn long_ranges_are_labelled_by_date() {
        let c = Chart {
            from: 1_714_521_600,
            to: 1_714_521_600 + 7 * 86_400,
            step: 3_600,
            ..chart(&[], &[])
        };
        let svg = render(&c);
        assert!(svg.contains(">05-03<") && svg.contains(">05-07<"), "{svg}");
    }
}
