//! The report's charts, drawn by plotters' SVG backend into strings that the page embeds
//! inline: stacked horizontal bars (statuses, providers, domains, categories, TLS) and the
//! timeline (deliveries per time bucket and group, throttling replies and provider state
//! changes marked). plotters escapes every text it writes (`<`, `&`, quotes), so labels that
//! come from the results (domains, MX host names) stay text.

use plotters::coord::Shift;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The Okabe–Ito palette (distinguishable with the common colour-vision deficiencies), then
/// grey for "other".
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(230, 159, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(136, 136, 136),
];
/// Delivered.
pub const GREEN: RGBColor = RGBColor(0, 158, 115);
/// Bounced.
pub const VERMILLION: RGBColor = RGBColor(213, 94, 0);
/// Deferred.
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
/// Invalid, duplicate, other.
pub const GREY: RGBColor = RGBColor(136, 136, 136);
/// Suppressed.
pub const SKY: RGBColor = RGBColor(86, 180, 233);
/// Throttling marks and suspensions.
pub const ALERT: RGBColor = RGBColor(200, 30, 30);
const INK: RGBColor = RGBColor(34, 34, 34);

/// Width of every chart (the page scales it to the screen).
const WIDTH: u32 = 760;
/// Longest label shown (characters); longer ones end in `…`.
const LABEL_CHARS: usize = 30;

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("chart {chart}: {reason}")]
pub struct ChartError {
    /// Which chart.
    pub chart: &'static str,
    /// plotters' error.
    pub reason: String,
}

/// One bar: its label and its stacked parts (value, colour).
#[derive(Clone, Debug)]
pub struct Bar {
    /// Shown left of the bar.
    pub label: String,
    /// Parts from left to right.
    pub parts: Vec<(f64, RGBColor)>,
}

/// `label` cut to [`LABEL_CHARS`].
fn short(label: &str) -> String {
    if label.chars().count() > LABEL_CHARS {
        label.chars().take(LABEL_CHARS - 1).collect::<String>() + "…"
    } else {
        label.to_string()
    }
}

/// Makes plotters' root `<svg>` scale with the page and names it for assistive technology
/// (`name` is escaped here: it is our own text, but may hold a domain).
fn finish_svg(svg: String, id: &str, name: &str) -> String {
    let name = name
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;");
    svg.replacen(
        "<svg ",
        &format!("<svg class=\"chart\" data-chart=\"{id}\" role=\"img\" aria-label=\"{name}\" "),
        1,
    )
}

fn err(chart: &'static str) -> impl Fn(String) -> ChartError {
    move |reason| ChartError { chart, reason }
}

/// Horizontal stacked bars, one per [`Bar`], the total written after each, and a legend of
/// the part colours when `legend` names them.
pub fn bars(
    id: &'static str,
    name: &str,
    bars: &[Bar],
    legend: &[(&str, RGBColor)],
) -> Result<String, ChartError> {
    let rows = bars.len().max(1);
    let legend_h = if legend.is_empty() { 0 } else { 28 };
    let height = 34 + legend_h + 30 * rows as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw_bars(&root, bars, legend, legend_h).map_err(err(id))?;
        root.present().map_err(|e| err(id)(e.to_string()))?;
    }
    Ok(finish_svg(svg, id, name))
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bars: &[Bar],
    legend: &[(&str, RGBColor)],
    legend_h: u32,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(legend_h);
    draw_legend(&top, legend).map_err(e)?;
    let max = bars
        .iter()
        .map(|b| b.parts.iter().map(|p| p.0).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1.0);
    let labels: Vec<String> = bars.iter().map(|b| short(&b.label)).collect();
    let n = bars.len().max(1) as i32;
    let mut chart = ChartBuilder::on(&body)
        .margin_right(70)
        .margin_top(4)
        .x_label_area_size(24)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(bars.len().max(1))
        .x_labels((max.ceil() as usize).clamp(2, 10))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| thousands(*v))
        .label_style(("sans-serif", 16).into_font().color(&INK))
        .draw()
        .map_err(e)?;
    for (i, bar) in bars.iter().enumerate() {
        draw_bar(&mut chart, i as i32, bar).map_err(e)?;
    }
    Ok(())
}

/// The bar chart's plotting area: x in counts, y one segment per bar.
type BarChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedSegment>>;
type RangedSegment = plotters::coord::ranged1d::SegmentedCoord<RangedCoordi32>;

/// Bar `i`: its parts side by side, then its total.
fn draw_bar<DB: DrawingBackend>(
    chart: &mut BarChart<'_, DB>,
    i: i32,
    bar: &Bar,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut x = 0.0;
    for (value, color) in bar.parts.iter().filter(|p| p.0 > 0.0) {
        let mut r = Rectangle::new(
            [
                (x, SegmentValue::Exact(i)),
                (x + value, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        r.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(r))?;
        x += value;
    }
    let total = Text::new(
        thousands(x),
        (x, SegmentValue::CenterOf(i)),
        ("sans-serif", 16)
            .into_font()
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    );
    chart.draw_series(std::iter::once(total))?;
    Ok(())
}

/// Coloured squares with names, left to right.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    legend: &[(&str, RGBColor)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut x = 230;
    for (name, color) in legend {
        area.draw(&Rectangle::new([(x, 8), (x + 12, 20)], color.filled()))?;
        area.draw(&Text::new(
            short(name),
            (x + 16, 14),
            ("sans-serif", 16)
                .into_font()
                .color(&INK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += 30 + 9 * name.chars().count().min(LABEL_CHARS) as i32;
    }
    Ok(())
}

/// `1234567` → `1,234,567` (whole numbers; the axes' fractions are dropped).
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the timeline chart shows.
#[derive(Clone, Debug, Default)]
pub struct TimelineData {
    /// Label of each bucket (`09:30`).
    pub buckets: Vec<String>,
    /// Per group (name, colour): deliveries per bucket.
    pub series: Vec<(String, RGBColor, Vec<u32>)>,
    /// Throttling replies per bucket.
    pub throttles: Vec<u32>,
    /// Suspensions: from, to (in buckets, fractional).
    pub suspensions: Vec<(f64, f64)>,
    /// Other state changes (slowed, a limit lowered): where (in buckets).
    pub changes: Vec<f64>,
    /// The y axis' name (`deliveries per minute`).
    pub unit: String,
}

/// Columns of deliveries per bucket stacked by group; throttling replies as red crosses with
/// their count above the column, suspensions as red bands, other state changes as orange
/// triangles on the time axis.
pub fn timeline(name: &str, data: &TimelineData) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 340)).into_drawing_area();
        draw_timeline(&root, data).map_err(err("timeline"))?;
        root.present().map_err(|e| err("timeline")(e.to_string()))?;
    }
    Ok(finish_svg(svg, "timeline", name))
}

/// The timeline's plotting area: x in buckets, y in deliveries.
type TimeChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &TimelineData,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut legend: Vec<(&str, RGBColor)> =
        d.series.iter().map(|(n, c, _)| (n.as_str(), *c)).collect();
    if d.throttles.iter().any(|&t| t > 0) {
        legend.push(("throttling replies", ALERT));
    }
    let (top, body) = root.split_vertically(28);
    draw_legend(&top, &legend).map_err(e)?;
    let n = d.buckets.len().max(1);
    let totals: Vec<u32> = (0..n)
        .map(|i| {
            d.series
                .iter()
                .map(|s| s.2.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let ymax = f64::from(totals.iter().copied().max().unwrap_or(0)).max(1.0) * 1.2;
    let mut chart = ChartBuilder::on(&body)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..ymax)
        .map_err(e)?;
    timeline_mesh(&mut chart, d, ymax).map_err(e)?;
    let band = ALERT.mix(0.15).filled();
    let bands = d
        .suspensions
        .iter()
        .map(|(a, b)| Rectangle::new([(*a, 0.0), (b.max(a + 0.05), ymax)], band));
    chart.draw_series(bands).map_err(e)?;
    timeline_columns(&mut chart, d).map_err(e)?;
    timeline_marks(&mut chart, d, &totals, ymax).map_err(e)
}

/// Axes: bucket start times below, deliveries left.
fn timeline_mesh<DB: DrawingBackend>(
    chart: &mut TimeChart<'_, DB>,
    d: &TimelineData,
    ymax: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let buckets = &d.buckets;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Labels at bucket starts only: asking for one per bucket (up to 12) makes plotters
        // step by whole buckets.
        .x_labels((buckets.len() + 1).min(12))
        .x_label_formatter(&|v| {
            let whole = v.fract() == 0.0;
            let label = buckets.get(*v as usize).filter(|_| whole);
            label.cloned().unwrap_or_default()
        })
        .y_labels((ymax.ceil() as usize).clamp(2, 8))
        .y_label_formatter(&|v| thousands(*v))
        .y_desc(d.unit.as_str())
        .label_style(("sans-serif", 16).into_font().color(&INK))
        .draw()
}

/// One column per bucket, its groups stacked.
fn timeline_columns<DB: DrawingBackend>(
    chart: &mut TimeChart<'_, DB>,
    d: &TimelineData,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = d.buckets.len();
    let gap = if n > 60 { 0.0 } else { 0.1 };
    let mut base = vec![0u32; n];
    for (_, color, values) in &d.series {
        let columns = values
            .iter()
            .zip(&base)
            .enumerate()
            .filter(|(_, (v, _))| **v > 0)
            .map(|(i, (v, b))| {
                let (x, y0) = (i as f64, f64::from(*b));
                Rectangle::new(
                    [(x + gap, y0), (x + 1.0 - gap, y0 + f64::from(*v))],
                    color.filled(),
                )
            });
        chart.draw_series(columns)?;
        for (b, v) in base.iter_mut().zip(values) {
            *b += v;
        }
    }
    Ok(())
}

/// Throttling replies (a cross and its count over the column) and state changes (a triangle
/// on the time axis).
fn timeline_marks<DB: DrawingBackend>(
    chart: &mut TimeChart<'_, DB>,
    d: &TimelineData,
    totals: &[u32],
    ymax: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, t) in d.throttles.iter().enumerate().filter(|(_, t)| **t > 0) {
        let top = totals.get(i).copied().unwrap_or(0);
        let at = (i as f64 + 0.5, f64::from(top) + ymax * 0.04);
        let style = ("sans-serif", 15)
            .into_font()
            .color(&ALERT)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        let mark = EmptyElement::at(at)
            + Cross::new((0, 0), 5, ALERT.stroke_width(2))
            + Text::new(thousands(f64::from(*t)), (0, -8), style);
        chart.draw_series(std::iter::once(mark))?;
    }
    let marks = d
        .changes
        .iter()
        .map(|x| TriangleMarker::new((*x, 0.0), 7, ORANGE.filled()));
    chart.draw_series(marks)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_draw_every_part_and_keep_hostile_labels_as_text() {
        let svg = bars(
            "statuses",
            "Rows by status",
            &[
                Bar {
                    label: "<script>alert(1)</script>".into(),
                    parts: vec![(3.0, GREEN), (2.0, VERMILLION)],
                },
                Bar {
                    label: "b.test".into(),
                    parts: vec![(1234.0, GREEN)],
                },
            ],
            &[("delivered", GREEN), ("bounced", VERMILLION)],
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg class=\"chart\" data-chart=\"statuses\""),
            "{svg}"
        );
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(
            svg.contains("1,234"),
            "the total, with its separator: {svg}"
        );
        let filled = |c: RGBColor| format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        assert_eq!(
            svg.matches(&filled(VERMILLION)).count(),
            2,
            "one bar part and one legend square"
        );
    }

    #[test]
    fn the_timeline_marks_throttles_and_suspensions() {
        let data = TimelineData {
            buckets: vec!["09:30".into(), "09:31".into(), "09:32".into()],
            series: vec![("google".into(), PALETTE[0], vec![5, 0, 7])],
            throttles: vec![0, 3, 0],
            suspensions: vec![(1.2, 1.9)],
            changes: vec![1.0],
            unit: "deliveries per minute".into(),
        };
        let svg = timeline("Timeline", &data).unwrap();
        assert!(svg.contains("throttling replies"), "legend");
        assert!(svg.contains("09:31"), "time labels: {svg}");
        assert!(svg.contains("<polygon"), "the state change's triangle");
        assert!(svg.contains("opacity=\"0.15\""), "the suspension band");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
