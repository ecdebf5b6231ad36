//! The chart `cargo xtask bench` writes beside its table: an SVG (plotters) with one panel
//! of grouped bars per scenario kind: the VM-to-VM rates (Mpps) of vnetd's modes and of
//! the anchors per scenario and frame size, and the round-trip latency percentiles (µs) of
//! the latency scenario.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One panel: groups of bars, one bar per series in each group (a missing value leaves a
/// gap).
#[derive(Debug, Clone, Default)]
pub(super) struct Panel {
    pub(super) title: String,
    pub(super) unit: String,
    pub(super) series: Vec<String>,
    /// (group label, one value per series).
    pub(super) groups: Vec<(String, Vec<Option<f64>>)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes `panels` (empty ones left out) one above the other to `path`.
pub(super) fn write_svg(path: &Path, panels: &[Panel]) -> Result<()> {
    let panels: Vec<&Panel> = panels.iter().filter(|p| !p.groups.is_empty()).collect();
    if panels.is_empty() {
        return Ok(());
    }
    let height = 420 * u32::try_from(panels.len()).unwrap_or(1);
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw(panel, area).map_err(|e| anyhow!("chart {}: {e}", panel.title))?;
    }
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    p: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = p.groups.len();
    let top = p
        .groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..(top * 1.15).max(1e-9))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(&p.unit)
        .draw()?;
    // Group labels under the axis, centred on each group, two lines when long.
    let style = ("sans-serif", 11).into_font().color(&BLACK);
    chart.draw_series(p.groups.iter().enumerate().map(|(g, (label, _))| {
        let (first, second) = split_label(label);
        let w = i32::try_from(6 * first.len().max(second.len()) / 2).unwrap_or(0);
        EmptyElement::at((g as f64 + 0.5, 0.0))
            + Text::new(first, (-w, 8), style.clone())
            + Text::new(second, (-w, 22), style.clone())
    }))?;
    let k = p.series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s, name) in p.series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let bars = p.groups.iter().enumerate().filter_map(|(g, (_, v))| {
            let value = (*v.get(s)?)?;
            let x0 = g as f64 + 0.1 + width * s as f64;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, value)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// A label in two halves at the space nearest its middle (the second empty when short).
fn split_label(label: &str) -> (String, String) {
    if label.len() <= 18 {
        return (label.to_string(), String::new());
    }
    let mid = label.len() / 2;
    let at = label
        .char_indices()
        .filter(|(_, c)| *c == ' ')
        .map(|(i, _)| i)
        .min_by_key(|i| i.abs_diff(mid));
    match at {
        Some(i) => (label[..i].to_string(), label[i + 1..].to_string()),
        None => (label.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_group_and_series() {
        let dir = std::env::temp_dir().join(format!("vnet-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let panel = Panel {
            title: "VM-to-VM".into(),
            unit: "Mpps".into(),
            series: vec!["vnetd poll".into(), "DPDK".into()],
            groups: vec![
                ("default 64".into(), vec![Some(12.5), Some(14.0)]),
                ("default 1514".into(), vec![Some(7.6), None]),
            ],
        };
        write_svg(&path, &[panel, Panel::default()]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for text in [
            "VM-to-VM",
            "default 64",
            "default 1514",
            "vnetd poll",
            "DPDK",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // The background, three bars (one value missing), the legend's box (fill and
        // border) and its two swatches.
        assert_eq!(svg.matches("<rect").count(), 1 + 3 + 2 + 2, "{svg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
