//! The report's charts, drawn with plotters' SVG backend into strings.
//!
//! Each chart takes plain data (series of points, a matrix of counts, groups of bars), not a
//! training state or a metrics report, so that later reports reuse them: per-label bars of a
//! multi-label model are [`GroupedBars`], a regression's predicted-vs-gold plot is a
//! [`Scatter`].

use std::fmt::Display;
use std::ops::Range;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The raw training loss (thin); tests find its polyline by this colour.
pub const RAW: RGBColor = RGBColor(0x9E, 0xC5, 0xE8);
/// A smoothed curve, or the only curve of a chart.
pub const MAIN: RGBColor = RGBColor(0x1F, 0x5F, 0xA8);
/// The marked best point.
pub const BEST: RGBColor = RGBColor(0xD6, 0x27, 0x28);
/// Vertical event lines (the kept model, early stopping).
pub const EVENT: RGBColor = RGBColor(0x70, 0x70, 0x70);
/// Bars of grouped bar charts, in group order (precision, recall, F1).
pub const BAR_COLORS: [RGBColor; 3] = [
    RGBColor(0x4C, 0x72, 0xB0),
    RGBColor(0xDD, 0x84, 0x52),
    RGBColor(0x55, 0xA8, 0x68),
];

const FONT: &str = "sans-serif";

/// How plotters' SVG backend writes a colour (`stroke="#RRGGBB"`).
pub fn svg_color(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

fn plot<T, E: Display>(result: Result<T, E>) -> Result<T> {
    result.map_err(|e| anyhow!("cannot draw a chart: {e}"))
}

/// One curve: points in x order.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub width: u32,
    pub points: Vec<(f64, f64)>,
}

/// A point singled out, drawn as a ring with its label in the legend.
pub struct Marker {
    pub label: String,
    pub at: (f64, f64),
}

/// A vertical line across the chart at an x value (the kept model's step, early stopping).
#[derive(Debug, Clone)]
pub struct Event {
    pub label: String,
    pub x: f64,
}

pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub marker: Option<Marker>,
    pub events: Vec<Event>,
}

/// A range holding every value with a margin, never empty (plotters needs start < end).
fn padded(values: impl Iterator<Item = f64>, margin: f64) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * margin
    } else {
        lo.abs().max(1e-12) * 0.1
    };
    (lo - pad)..(hi + pad)
}

/// Tick labels short enough for the axis: plain decimals, or scientific for tiny or huge
/// values (learning rates).
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        // Enough digits to tell neighbouring ticks apart, no trailing zeros.
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn canvas(svg: &mut String, size: (u32, u32)) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::with_string(svg, size).into_drawing_area();
    plot(root.fill(&WHITE))?;
    Ok(root)
}

type Axes<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled chart of numbers against numbers on `root`, its axes drawn with `titles` (chart,
/// x, y), 8 x ticks and `y_ticks` y ticks, and no light grid.
fn axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    titles: (&str, &str, &str),
    ranges: (Range<f64>, Range<f64>),
    y_ticks: usize,
) -> Result<Axes<'a, 'b>> {
    let (title, x_desc, y_desc) = titles;
    let mut ctx = plot(
        ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(ranges.0, ranges.1),
    )?;
    plot(
        ctx.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(8)
            .y_labels(y_ticks)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(TRANSPARENT)
            .draw(),
    )?;
    Ok(ctx)
}

/// The legend's corner: the lower right when the curves end high (a metric that rises),
/// else the upper right (a loss that falls), so it does not hide where the curves end.
fn legend_corner(chart: &LineChart, y_range: &Range<f64>) -> SeriesLabelPosition {
    let last = chart
        .series
        .iter()
        .filter_map(|s| s.points.iter().rev().find(|p| p.1.is_finite()))
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let marked = chart.marker.as_ref().map_or(last, |m| m.at.1.max(last));
    if marked > (y_range.start + y_range.end) / 2.0 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// Curves against a shared x axis, with an optional marked point and event lines.
pub fn line_chart(chart: &LineChart) -> Result<String> {
    let finite = |s: &Series| {
        s.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect::<Vec<_>>()
    };
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.events.iter().map(|e| e.x));
    let x_range = padded(xs, 0.02);
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let y_range = padded(ys, 0.08);
    let mut svg = String::new();
    {
        let root = canvas(&mut svg, (560, 330))?;
        let titles = (&*chart.title, &*chart.x_desc, &*chart.y_desc);
        let mut ctx = axes(&root, titles, (x_range, y_range.clone()), 6)?;
        for event in &chart.events {
            let line = vec![(event.x, y_range.start), (event.x, y_range.end)];
            let style = EVENT.stroke_width(1);
            plot(ctx.draw_series(DashedLineSeries::new(line, 6, 4, style)))?
                .label(&event.label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 1), (x + 16, y + 1)], EVENT.filled())
                });
        }
        for series in &chart.series {
            let color = series.color;
            plot(ctx.draw_series(LineSeries::new(
                finite(series),
                color.stroke_width(series.width),
            )))?
            .label(&series.name)
            // A filled box, not a path, in the legend: each series is then the only polyline
            // of its colour, which is how tests find it.
            .legend(move |(x, y)| Rectangle::new([(x, y - 3), (x + 16, y + 3)], color.filled()));
        }
        if let Some(marker) = &chart.marker {
            let ring = Circle::new(marker.at, 6, BEST.stroke_width(2));
            plot(ctx.draw_series(std::iter::once(ring)))?
                .label(&marker.label)
                .legend(|(x, y)| Circle::new((x + 8, y), 5, BEST.stroke_width(2)));
        }
        if chart.series.len() > 1 || chart.marker.is_some() || !chart.events.is_empty() {
            plot(
                ctx.configure_series_labels()
                    .position(legend_corner(chart, &y_range))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(0xC0, 0xC0, 0xC0))
                    .label_font((FONT, 13))
                    .draw(),
            )?;
        }
        plot(root.present())?;
    }
    Ok(svg)
}

/// Points drawn as dots against the line y = x: a regression's predictions (y) against the
/// gold values (x), where every dot on the line is exact.
pub struct Scatter {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub points: Vec<(f64, f64)>,
}

pub fn scatter(chart: &Scatter) -> Result<String> {
    let points: Vec<(f64, f64)> = chart
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    // One range for both axes, so that the diagonal is the diagonal.
    let range = padded(points.iter().flat_map(|&(x, y)| [x, y]), 0.04);
    let mut svg = String::new();
    {
        let root = canvas(&mut svg, (560, 460))?;
        let titles = (&*chart.title, &*chart.x_desc, &*chart.y_desc);
        let mut ctx = axes(&root, titles, (range.clone(), range.clone()), 8)?;
        let diagonal = vec![(range.start, range.start), (range.end, range.end)];
        plot(ctx.draw_series(LineSeries::new(diagonal, EVENT.stroke_width(1))))?;
        let dot = MAIN.mix(0.55).filled();
        plot(ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, dot))))?;
        plot(root.present())?;
    }
    Ok(svg)
}

/// A matrix of counts drawn as coloured cells with the count in each: rows are the true
/// classes, columns the predicted ones. A cell's colour is its share of its row.
pub struct Heatmap {
    pub title: String,
    pub row_desc: String,
    pub col_desc: String,
    pub labels: Vec<String>,
    pub counts: Vec<Vec<usize>>,
}

/// Labels cut to a length an axis can hold.
fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let cut: String = label.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Units of a class axis: class `i` spans `[i * UNIT, (i + 1) * UNIT]`. Integer coordinates,
/// because plotters formats the ticks of integer axes with key points given, not of f64 ones.
const UNIT: i32 = 100;

/// Class `i` of `k` has its tick at its centre.
fn class_axis(k: usize) -> Vec<i32> {
    (0..k as i32).map(|i| i * UNIT + UNIT / 2).collect()
}

fn class_name(labels: &[String], v: i32, max: usize) -> String {
    match usize::try_from(v.div_euclid(UNIT)) {
        Ok(i) if i < labels.len() => short(&labels[i], max),
        _ => String::new(),
    }
}

pub fn heatmap(map: &Heatmap) -> Result<String> {
    let k = map.labels.len().max(1);
    let side = (80 + 36 * k as u32).clamp(420, 1100);
    let mut svg = String::new();
    {
        let root = canvas(&mut svg, (side + 40, side))?;
        let ki = k as i32;
        let mut ctx = plot(
            ChartBuilder::on(&root)
                .caption(&map.title, (FONT, 18))
                .margin(12)
                .x_label_area_size(56)
                .y_label_area_size(110)
                .build_cartesian_2d(
                    (0..ki * UNIT).with_key_points(class_axis(k)),
                    // Row 0 at the top: row i is drawn at y = k - 1 - i.
                    (0..ki * UNIT).with_key_points(class_axis(k)),
                ),
        )?;
        let labels = &map.labels;
        plot(
            ctx.configure_mesh()
                .disable_mesh()
                .x_desc(&map.col_desc)
                .y_desc(&map.row_desc)
                .x_label_formatter(&|v| class_name(labels, *v, 14))
                .y_label_formatter(&|v| class_name(labels, (ki - 1) * UNIT - v + UNIT, 14))
                .draw(),
        )?;
        let show_counts = k <= 30;
        for (i, row) in map.counts.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = (ki - 1 - i as i32) * UNIT;
            for (j, &count) in row.iter().enumerate() {
                let share = if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                };
                let x = j as i32 * UNIT;
                let fill = shade(share);
                plot(ctx.draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + UNIT, y + UNIT)],
                    fill.filled(),
                ))))?;
                if show_counts {
                    let ink = if share > 0.55 { WHITE } else { BLACK };
                    let style = TextStyle::from((FONT, 15).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    plot(ctx.draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (x + UNIT / 2, y + UNIT / 2),
                        style,
                    ))))?;
                }
            }
        }
        plot(root.present())?;
    }
    Ok(svg)
}

/// White to dark blue as `share` goes from 0 to 1.
fn shade(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |from: u8, to: u8| (from as f64 + (to as f64 - from as f64) * s).round() as u8;
    RGBColor(mix(0xF7, 0x08), mix(0xFB, 0x30), mix(0xFF, 0x6B))
}

/// Bars in groups: one group of bars per category (a class), one bar per measure (precision,
/// recall, F1), each category captioned with a note (its support).
pub struct GroupedBars {
    pub title: String,
    pub y_desc: String,
    pub categories: Vec<String>,
    pub notes: Vec<String>,
    /// Per measure: its name and one value per category.
    pub measures: Vec<(String, Vec<f64>)>,
    pub y_max: f64,
}

pub fn grouped_bars(bars: &GroupedBars) -> Result<String> {
    let k = bars.categories.len().max(1);
    let width = (140 + 70 * k as u32).clamp(560, 1400);
    let captions: Vec<String> = (0..k)
        .map(|i| {
            let name = bars.categories.get(i).map_or("", String::as_str);
            match bars.notes.get(i) {
                Some(note) => format!("{} ({note})", short(name, 14)),
                None => short(name, 14),
            }
        })
        .collect();
    let mut svg = String::new();
    {
        let root = canvas(&mut svg, (width, 340))?;
        let mut ctx = plot(
            ChartBuilder::on(&root)
                .caption(&bars.title, (FONT, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(
                    (0..k as i32 * UNIT).with_key_points(class_axis(k)),
                    0.0..bars.y_max,
                ),
        )?;
        plot(
            ctx.configure_mesh()
                .disable_x_mesh()
                .y_desc(&bars.y_desc)
                .y_labels(6)
                .x_label_formatter(&|v| match usize::try_from(v.div_euclid(UNIT)) {
                    Ok(i) if i < captions.len() => captions[i].clone(),
                    _ => String::new(),
                })
                .y_label_formatter(&|v| tick(*v))
                .light_line_style(TRANSPARENT)
                .draw(),
        )?;
        // The bars of a class fill its middle 80%, with a gap between bars.
        let slot = UNIT * 8 / 10 / bars.measures.len().max(1) as i32;
        for (m, (name, values)) in bars.measures.iter().enumerate() {
            let color = BAR_COLORS[m % BAR_COLORS.len()];
            let rects = values.iter().enumerate().map(|(i, v)| {
                let x = i as i32 * UNIT + UNIT / 10 + m as i32 * slot;
                let v = if v.is_finite() { *v } else { 0.0 };
                Rectangle::new([(x, 0.0), (x + slot * 9 / 10, v)], color.filled())
            });
            plot(ctx.draw_series(rects))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 14, y + 4)], color.filled())
                });
        }
        plot(
            ctx.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(0xC0, 0xC0, 0xC0))
                .label_font((FONT, 13))
                .draw(),
        )?;
        plot(root.present())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(padded(std::iter::empty(), 0.1), 0.0..1.0);
        let r = padded([2.0, 2.0].into_iter(), 0.1);
        assert!(r.start < 2.0 && r.end > 2.0);
        let r = padded([f64::NAN, 1.0, 3.0].into_iter(), 0.0);
        assert_eq!(r, 1.0..3.0);
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(5e-5), "5.0e-5");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1500.0), "1500");
    }

    #[test]
    fn a_line_chart_is_svg_with_one_polyline_per_series() {
        let svg = line_chart(&LineChart {
            title: "t".into(),
            x_desc: "step".into(),
            y_desc: "loss".into(),
            series: vec![Series {
                name: "loss".into(),
                color: RAW,
                width: 1,
                points: vec![(1.0, 0.7), (2.0, 0.5), (3.0, f64::NAN), (4.0, 0.1)],
            }],
            marker: None,
            events: vec![],
        })
        .unwrap();
        assert!(svg.starts_with("<svg"));
        let raw = format!("stroke=\"{}\"", svg_color(RAW));
        let lines: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&raw))
            .collect();
        assert_eq!(lines.len(), 1, "{svg}");
        // The NaN point is left out, not drawn off the chart.
        assert_eq!(lines[0].matches(',').count(), 3);
    }
}
