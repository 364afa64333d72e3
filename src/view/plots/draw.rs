//! The drawings, with plotters' bitmap backend and the bundled DejaVu Sans (no system fonts): a scatter of points in
//! 2-D coloured by group with some points named, the PCA scree, training curves. The same data gives the same PNG.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("font/DejaVuSans.ttf");

/// Registers the bundled font once.
fn font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Internal("the bundled font did not load".into()))
    }
}

fn drawn<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::output(path, "cannot draw", std::io::Error::other(e.to_string()))
}

/// Tableau's ten colours, then grey for what has no group.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const OTHER: RGBColor = RGBColor(190, 190, 190);

/// A padded range around values.
fn range(v: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.06).max(1e-9);
    lo - pad..hi + pad
}

/// A scatter plot: `groups[i]` indexes `names` (`None`: grey, "other"); `named` points get their text beside them.
pub struct Scatter<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub points: &'a [(f64, f64)],
    pub groups: &'a [Option<usize>],
    pub names: &'a [String],
    pub named: &'a [(usize, String)],
}

pub fn scatter(path: &Path, s: &Scatter<'_>) -> Result<()> {
    font()?;
    // Headroom for the legend (upper right), a line per entry, so it covers no point.
    let mut ys = range(s.points.iter().map(|p| p.1));
    ys.end += (ys.end - ys.start) * 0.06 * s.names.len().min(PALETTE.len() + 1) as f64;
    let e = drawn(path);
    let root = BitMapBackend::new(path, (960, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(s.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(range(s.points.iter().map(|p| p.0)), ys)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(s.x_desc)
        .y_desc(s.y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(&e)?;
    // Ungrouped points first (underneath), then each group with its legend entry; groups past the palette share
    // the last colour's legend as "other".
    if s.names.is_empty() {
        // No categories: every point in the first colour, no legend.
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, PALETTE[0].mix(0.6).filled()))).map_err(&e)?;
    }
    let ungrouped: Vec<(f64, f64)> = s
        .points
        .iter()
        .zip(s.groups)
        .filter(|(_, g)| g.is_none_or(|g| g >= PALETTE.len() || g >= s.names.len()))
        .map(|(p, _)| *p)
        .collect();
    if !ungrouped.is_empty() && !s.names.is_empty() {
        let series = chart.draw_series(ungrouped.iter().map(|&p| Circle::new(p, 3, OTHER.filled()))).map_err(&e)?;
        if !s.names.is_empty() {
            series.label("other").legend(|(x, y)| Circle::new((x, y), 4, OTHER.filled()));
        }
    }
    for (g, name) in s.names.iter().enumerate().take(PALETTE.len()) {
        let color = PALETTE[g];
        let pts: Vec<(f64, f64)> =
            s.points.iter().zip(s.groups).filter(|(_, gr)| **gr == Some(g)).map(|(p, _)| *p).collect();
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.mix(0.85).filled())))
            .map_err(&e)?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart
        .draw_series(s.named.iter().map(|(i, text)| {
            let (x, y) = s.points[*i];
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 3, BLACK.filled())
                + Text::new(text.clone(), (5, -7), (FONT, 12))
        }))
        .map_err(&e)?;
    if !s.names.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)
}

/// The scree: each component's explained-variance ratio as a bar, the cumulative ratio as a line.
pub fn scree(path: &Path, title: &str, ratios: &[f64]) -> Result<()> {
    font()?;
    let e = drawn(path);
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let cumulative: Vec<f64> = ratios
        .iter()
        .scan(0.0, |acc, r| {
            *acc += r;
            Some(*acc)
        })
        .collect();
    let top = cumulative.last().copied().unwrap_or(1.0).max(1e-9) * 1.08;
    let k = ratios.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..k + 0.5, 0.0..top)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("component")
        .y_desc("explained-variance ratio")
        .x_labels(ratios.len().min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(ratios.iter().enumerate().map(|(i, &r)| {
            let x = i as f64 + 1.0;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, r)], PALETTE[0].filled())
        }))
        .map_err(&e)?
        .label("per component")
        .legend(|(x, y)| Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], PALETTE[0].filled()));
    chart
        .draw_series(LineSeries::new(
            cumulative.iter().enumerate().map(|(i, &c)| (i as f64 + 1.0, c)),
            PALETTE[1].stroke_width(2),
        ))
        .map_err(&e)?
        .label("cumulative")
        .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], PALETTE[1].stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)
}

/// A line of a curve panel: its name and (x, y) points.
pub type Curve = (String, Vec<(f64, f64)>);

/// Panels of curves side by side, each with its title and y description.
pub fn curves(path: &Path, title: &str, panels: &[(String, String, Vec<Curve>)]) -> Result<()> {
    font()?;
    let e = drawn(path);
    let width = 560 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root.titled(title, (FONT, 20)).map_err(&e)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, (panel, y_desc, lines)) in areas.iter().zip(panels) {
        let xs = range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)));
        let ys = range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(panel, (FONT, 16))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(60)
            .build_cartesian_2d(xs, ys)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc.as_str())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(&e)?;
        for (i, (name, pts)) in lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)).point_size(3))
                .map_err(&e)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)
}
