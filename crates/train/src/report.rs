//! What a run folder shows a person: plots of the training curves (drawn with `plotters`,
//! labelled in an embedded font) and `report.html`, one offline page with the run's config,
//! speed, memory, measurements, plots and sample grids over training.
//!
//! ```text
//! OUT/loss.png          the loss per step (raw, and its centered moving average), log scale
//! OUT/lr.png            the learning rate per step
//! OUT/grad_norm.png     the global gradient norm before clipping, log scale
//! OUT/metric_NAME.png   each measurement of metrics.csv over the steps (FID, PSNR, ...)
//! OUT/report.html       the page; it links the images above and samples/*.png by relative path
//! ```
//!
//! All of it is redrawn at each checkpoint from what the run has logged (`loss.csv`,
//! `metrics.csv`), so it is as current as the checkpoint beside it.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;
use std::time::Instant;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
/// The colors of a [`Series`].
pub use plotters::style::RGBColor;

use crate::data::{DataError, Result};
use crate::images::write_png;
use crate::trainer::StepStats;

/// The font family name plots are labelled in (the embedded DejaVu Sans subset).
const FONT: &str = "sans-serif";
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
        // The font is ours and checked by the tests; a failure here would only leave plots unlabelled.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// One line of a plot.
pub struct Series {
    pub label: String,
    /// `(x, y)` points in drawing order; points with a non-finite coordinate (or y ≤ 0 on a
    /// log axis) are left out.
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Line width in pixels.
    pub width: u32,
    /// Marks each point with a dot (for sparse measurements).
    pub dots: bool,
}

/// A line plot with labelled axes.
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis.
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Dark blue: the smoothed loss, and single-series plots.
pub const MAIN_COLOR: RGBColor = RGBColor(25, 60, 170);
/// Light gray-blue: the raw losses behind their average.
pub const RAW_COLOR: RGBColor = RGBColor(170, 180, 205);
/// The color of axis text and lines.
pub const INK: RGBColor = RGBColor(30, 30, 30);

fn plot_error(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Image { path: path.to_path_buf(), msg: msg.into() }
}

/// A short label for a tick: plain decimals from 0.001 to 99999, scientific notation outside.
pub fn tick_label(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&magnitude) {
        format!("{value:.0e}")
    } else {
        let text = format!("{value:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        text.to_string()
    }
}

/// The centered moving average of `values` over `2·half + 1` points (fewer at the ends).
pub fn moving_average(values: &[f64], half: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0);
    for v in values {
        prefix.push(prefix.last().unwrap() + v);
    }
    (0..values.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(values.len()));
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// `[lo, hi]` padded by 5% on each side (in log10 on a log axis); a single value gets a
/// window around it; no values give `[0, 1]` (`[0.1, 1]` on a log axis).
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return if log { 0.1..1.0 } else { 0.0..1.0 };
    }
    if log {
        let (lo, hi) = (lo.log10(), hi.log10());
        let pad = ((hi - lo) * 0.05).max(0.05);
        10f64.powf(lo - pad)..10f64.powf(hi + pad)
    } else {
        let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
        lo - pad..hi + pad
    }
}

/// Tick values for a log axis over `[lo, hi]` (0 < lo < hi): the sparsest of the series
/// 1·10^k; 1, 2, 5·10^k; 1..9·10^k that puts at least 4 ticks on the axis, or, on an axis
/// narrower than that, 4 to 10 evenly spaced round values.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]] {
        let ticks: Vec<f64> = ((lo.log10().floor() as i32)..=(hi.log10().ceil() as i32))
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|t| (lo..=hi).contains(t))
            .collect();
        if ticks.len() >= 4 {
            return ticks;
        }
    }
    // round steps 1, 2 or 5 · 10^k, the largest that gives at least 4 ticks
    let span = hi - lo;
    let mut step = 10f64.powf(span.log10().ceil());
    for divisor in [2.0, 2.5, 2.0].iter().cycle().take(12) {
        if ((hi / step).floor() - (lo / step).ceil()) as i64 + 1 >= 4 {
            break;
        }
        step /= divisor;
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Draws `plot` as a `width`×`height` RGB PNG (at least 160×120), written atomically.
pub fn write_plot_png(path: impl AsRef<Path>, plot: &Plot, width: u32, height: u32) -> Result<()> {
    let path = path.as_ref();
    if width < 160 || height < 120 {
        return Err(plot_error(path, format!("a plot needs at least 160x120 pixels, not {width}x{height}")));
    }
    register_font();
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!plot.log_y || y > 0.0);
    let series: Vec<Series> =
        plot.series.iter().map(|s| Series { points: s.points.iter().copied().filter(keep).collect(), label: s.label.clone(), ..*s }).collect();
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_range = padded_range(all().map(|(x, _)| x), false);
    let y_range = padded_range(all().map(|(_, y)| y), plot.log_y);

    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let drawn = if plot.log_y {
            let ticks = log_ticks(y_range.start, y_range.end);
            draw(&area, plot, &series, x_range, y_range.log_scale().with_key_points(ticks))
        } else {
            draw(&area, plot, &series, x_range, y_range)
        };
        drawn.map_err(|e| plot_error(path, format!("drawing the plot failed: {e}")))?;
    }
    write_png(path, width, height, 3, &rgb)
}

fn draw<Y>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    plot: &Plot,
    series: &[Series],
    x: Range<f64>,
    y: Y,
) -> std::result::Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64> + plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    let failed = |e: &dyn std::fmt::Display| e.to_string();
    area.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(area)
        .caption(&plot.title, (FONT, 18).into_font().color(&INK))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d::<RangedCoordf64, Y::CoordDescType>(x.into(), y.into())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .axis_desc_style((FONT, 14).into_font().color(&INK))
        .label_style((FONT, 12).into_font().color(&INK))
        .axis_style(INK)
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(243, 243, 243))
        .draw()
        .map_err(|e| failed(&e))?;
    for s in series {
        let style = ShapeStyle { color: s.color.to_rgba(), filled: false, stroke_width: s.width };
        let legend_color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| failed(&e))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], ShapeStyle { color: legend_color.to_rgba(), filled: true, stroke_width: 3 }));
        if s.dots {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, s.color.filled()))).map_err(|e| failed(&e))?;
        }
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 13).into_font().color(&INK))
            .background_style(WHITE.mix(0.9))
            .border_style(INK)
            .draw()
            .map_err(|e| failed(&e))?;
    }
    area.present().map_err(|e| failed(&e))
}

/// What a run has logged, kept in memory for its plots and report.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// One per step: step, loss, gradient norm, learning rate.
    pub steps: Vec<StepStats>,
    /// `(step, name, value)` measurements.
    pub metrics: Vec<(u64, String, f64)>,
    /// When this process started training, and at which step (for the speed).
    session: (Instant, u64),
}

impl RunRecord {
    /// A record holding the `loss.csv` and `metrics.csv` rows a run resumed at `step` kept.
    pub fn new(loss_rows: &[String], metric_rows: &[String], step: u64) -> RunRecord {
        let steps = loss_rows
            .iter()
            .filter_map(|row| {
                let fields: Vec<&str> = row.split(',').collect();
                let [step, loss, grad_norm, lr] = fields[..] else { return None };
                Some(StepStats { step: step.parse().ok()?, loss: loss.parse().ok()?, grad_norm: grad_norm.parse().ok()?, lr: lr.parse().ok()? })
            })
            .collect();
        let metrics = metric_rows
            .iter()
            .filter_map(|row| {
                let fields: Vec<&str> = row.split(',').collect();
                let [step, name, value] = fields[..] else { return None };
                Some((step.parse().ok()?, name.to_string(), value.parse().ok()?))
            })
            .collect();
        RunRecord { steps, metrics, session: (Instant::now(), step) }
    }

    /// The names of the measurements, in order of first appearance.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, name, _) in &self.metrics {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The plots of the run: `(file name, plot)`.
    pub fn plots(&self) -> Vec<(String, Plot)> {
        let steps = |f: fn(&StepStats) -> f64| self.steps.iter().map(|s| (s.step as f64, f(s))).collect::<Vec<_>>();
        let losses: Vec<f64> = self.steps.iter().map(|s| s.loss).collect();
        let average = moving_average(&losses, losses.len() / 50);
        let smoothed = self.steps.iter().zip(average).map(|(s, avg)| (s.step as f64, avg)).collect();
        let one = |label: &str, points, log_y, dots| Plot {
            title: String::new(),
            x_label: "step".into(),
            y_label: label.to_string(),
            log_y,
            series: vec![Series { label: label.to_string(), points, color: MAIN_COLOR, width: 2, dots }],
        };
        let mut plots = vec![
            (
                "loss.png".to_string(),
                Plot {
                    title: "training loss".into(),
                    x_label: "step".into(),
                    y_label: "loss (log scale)".into(),
                    log_y: true,
                    series: vec![
                        Series { label: "per step".into(), points: steps(|s| s.loss), color: RAW_COLOR, width: 1, dots: false },
                        Series {
                            label: format!("moving average ({} steps)", 2 * (losses.len() / 50) + 1),
                            points: smoothed,
                            color: MAIN_COLOR,
                            width: 2,
                            dots: false,
                        },
                    ],
                },
            ),
            ("lr.png".to_string(), Plot { title: "learning rate".into(), ..one("learning rate", steps(|s| s.lr), false, false) }),
            (
                "grad_norm.png".to_string(),
                Plot { title: "gradient norm before clipping".into(), ..one("global gradient norm (log scale)", steps(|s| s.grad_norm), true, false) },
            ),
        ];
        for name in self.metric_names() {
            let points = self.metrics.iter().filter(|(_, n, _)| *n == name).map(|(step, _, value)| (*step as f64, *value)).collect();
            plots.push((metric_plot_file(&name), Plot { title: format!("{name} over training"), ..one(&name, points, false, true) }));
        }
        plots
    }

    /// Draws the plots and writes `report.html` into `dir` (see the module doc). `title` names
    /// the run ("DDPM", "VAE stage"), `config_json` is its config, `total_steps` its last step.
    pub fn write(&self, dir: &Path, title: &str, config_json: &str, total_steps: u64) -> Result<()> {
        let plots = self.plots();
        for (file, plot) in &plots {
            write_plot_png(dir.join(file), plot, 800, 400)?;
        }
        let html = self.html(dir, title, config_json, total_steps, &plots.iter().map(|(file, _)| file.as_str()).collect::<Vec<_>>());
        let path = dir.join("report.html");
        ember_tensor::io::write_atomically(&path, html.as_bytes()).map_err(|e| plot_error(&path, e.to_string()))
    }

    fn html(&self, dir: &Path, title: &str, config_json: &str, total_steps: u64, plot_files: &[&str]) -> String {
        let step = self.steps.last().map_or(self.session.1, |s| s.step);
        let mut page = String::new();
        let _ = write!(
            page,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ember: {title} run</title>\n<style>\
             body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1e1e1e}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 10px;text-align:right}}\
             th{{background:#f3f3f3}}img{{max-width:100%}}figure{{display:inline-block;margin:0 1em 1em 0}}\
             figure img{{height:240px;image-rendering:pixelated}}\
             pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body>\n\
             <h1>ember: {title} run</h1>\n<p>Folder <code>{}</code>, written at step {step} of {total_steps} (the checkpoint beside it).</p>\n",
            escape(&dir.display().to_string())
        );

        page.push_str("<h2>Speed and memory</h2>\n<table>\n");
        let (started, first) = self.session;
        let done = step.saturating_sub(first);
        let seconds = started.elapsed().as_secs_f64();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(page, "<tr><th>{name}</th><td>{value}</td></tr>");
        };
        row("steps this session", format!("{done} (from step {first})"));
        row("wall time this session", format!("{seconds:.1} s"));
        if done > 0 {
            row("time per step", format!("{:.1} ms (including checkpoints and previews)", 1000.0 * seconds / done as f64));
            row("steps per second", format!("{:.3}", done as f64 / seconds));
        }
        if let Some((now, peak)) = resident_memory() {
            row("resident memory (now / peak)", format!("{:.1} / {:.1} MiB", now as f64 / 1048576.0, peak as f64 / 1048576.0));
        }
        if let Some(last) = self.steps.last() {
            row("last loss", format!("{:.6}", last.loss));
        }
        page.push_str("</table>\n");

        let names = self.metric_names();
        if !names.is_empty() {
            page.push_str("<h2>Measurements</h2>\n<table>\n<tr><th>step</th>");
            for name in &names {
                let _ = write!(page, "<th>{}</th>", escape(name));
            }
            page.push_str("</tr>\n");
            let mut measured_steps: Vec<u64> = self.metrics.iter().map(|(step, _, _)| *step).collect();
            measured_steps.dedup();
            for step in measured_steps {
                let _ = write!(page, "<tr><td>{step}</td>");
                for name in &names {
                    let value = self.metrics.iter().rev().find(|(s, n, _)| *s == step && n == name).map_or(String::new(), |(_, _, v)| format!("{v:.4}"));
                    let _ = write!(page, "<td>{value}</td>");
                }
                page.push_str("</tr>\n");
            }
            page.push_str("</table>\n");
        }

        page.push_str("<h2>Plots</h2>\n");
        for file in plot_files {
            let _ = writeln!(page, "<p><img src=\"{file}\" alt=\"{file}\" width=\"800\" height=\"400\"></p>");
        }

        let samples = sample_grids(&dir.join("samples"));
        if !samples.is_empty() {
            page.push_str("<h2>Samples over training</h2>\n");
            for (step, file) in samples {
                let _ = writeln!(page, "<figure><img src=\"samples/{file}\" alt=\"step {step}\"><figcaption>step {step}</figcaption></figure>");
            }
        }
        let _ = write!(page, "\n<h2>Config</h2>\n<pre>{}</pre>\n", escape(config_json));
        let _ = writeln!(
            page,
            "<p>Logs: <a href=\"loss.csv\">loss.csv</a> (step, loss, grad_norm, lr), <a href=\"metrics.csv\">metrics.csv</a> (step, name, value).</p>\n</body></html>"
        );
        page
    }
}

/// The file a measurement's plot goes to: `metric_NAME.png`, with anything but ASCII letters,
/// digits, `-` and `_` in the name replaced by `_`.
pub fn metric_plot_file(name: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("metric_{safe}.png")
}

/// `(step, file name)` of the `step_NNNNNNN.png` grids in `samples`, by step.
fn sample_grids(samples: &Path) -> Vec<(u64, String)> {
    let Ok(entries) = std::fs::read_dir(samples) else { return Vec::new() };
    let mut grids: Vec<(u64, String)> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let step = name.strip_prefix("step_")?.strip_suffix(".png")?.parse().ok()?;
            Some((step, name))
        })
        .collect();
    grids.sort();
    grids
}

/// `(resident, peak resident)` bytes of this process (Linux: `/proc/self/status`).
pub fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        Some(line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `text` with `&`, `<`, `>` and `"` escaped for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
