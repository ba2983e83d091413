//! Image output for the trainer: grids of samples and the loss curve, as 8-bit PNG files
//! encoded with the `png` crate and written atomically (a temporary file in the same folder,
//! then a rename), so a reader never sees a half-written image.

use std::path::Path;

use ember_tensor::{Tensor, TensorError};

use crate::data::{DataError, Result};

/// The pixel value between the images of a grid (white, so that dark images stay apart).
pub const GRID_BORDER_VALUE: u8 = 255;
/// The border around and between the images of a grid, in pixels.
pub const GRID_BORDER: usize = 2;

fn image_error(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Image { path: path.to_path_buf(), msg: msg.into() }
}

/// Maps a value in [-1, 1] to a byte: `round((x + 1) · 127.5)`, clamped first; NaN gives 0.
pub fn to_byte(x: f64) -> u8 {
    if x.is_nan() { 0 } else { ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8 }
}

/// Writes an 8-bit PNG atomically. `channels` is 1 (gray), 2 (gray + alpha), 3 (RGB) or 4
/// (RGBA); `pixels` holds `height` rows of `width · channels` bytes.
pub fn write_png(path: impl AsRef<Path>, width: u32, height: u32, channels: usize, pixels: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(image_error(path, format!("a PNG has 1 to 4 channels, not {channels}"))),
    };
    if width == 0 || height == 0 {
        return Err(image_error(path, format!("a PNG cannot be {width}x{height}")));
    }
    let expected = width as usize * height as usize * channels;
    if pixels.len() != expected {
        let msg = format!("{} bytes for a {width}x{height} image of {channels} channels ({expected} needed)", pixels.len());
        return Err(image_error(path, msg));
    }
    let mut bytes = Vec::new();
    let encode = |bytes: &mut Vec<u8>| -> std::result::Result<(), png::EncodingError> {
        let mut encoder = png::Encoder::new(bytes, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
        writer.finish()
    };
    encode(&mut bytes).map_err(|e| image_error(path, format!("PNG encoding failed: {e}")))?;
    ember_tensor::io::write_atomically(path, &bytes).map_err(|e| match e {
        TensorError::Io { source, .. } => DataError::Io { path: path.to_path_buf(), source },
        other => image_error(path, other.to_string()),
    })
}

/// Writes `images` (`[B, C, H, W]`, C = 1 for gray or 3 for RGB, values in [-1, 1], any float
/// dtype) as one PNG grid of `columns` images per row (fewer if B is smaller), in row-major
/// order, with a [`GRID_BORDER`]-pixel white border around and between the images. Values are
/// clamped to [-1, 1] and mapped with [`to_byte`].
pub fn write_grid_png(path: impl AsRef<Path>, images: &Tensor, columns: usize) -> Result<()> {
    let path = path.as_ref();
    let &[count, channels, height, width] = images.shape() else {
        return Err(image_error(path, format!("expected images of shape [B, C, H, W], got {:?}", images.shape())));
    };
    if count == 0 || height == 0 || width == 0 || columns == 0 {
        return Err(image_error(path, format!("nothing to draw: images {:?}, {columns} columns", images.shape())));
    }
    if channels != 1 && channels != 3 {
        return Err(image_error(path, format!("images have {channels} channels; a grid needs 1 (gray) or 3 (RGB)")));
    }
    let columns = columns.min(count);
    let rows = count.div_ceil(columns);
    let grid_width = columns * width + (columns + 1) * GRID_BORDER;
    let grid_height = rows * height + (rows + 1) * GRID_BORDER;
    let too_big = || image_error(path, format!("a {grid_width}x{grid_height} grid is too large for a PNG"));
    let (png_width, png_height) = (u32::try_from(grid_width).map_err(|_| too_big())?, u32::try_from(grid_height).map_err(|_| too_big())?);

    let values = images.to_vec_f64();
    let mut pixels = vec![GRID_BORDER_VALUE; grid_width * grid_height * channels];
    for b in 0..count {
        let (left, top) = (GRID_BORDER + (b % columns) * (width + GRID_BORDER), GRID_BORDER + (b / columns) * (height + GRID_BORDER));
        for c in 0..channels {
            let plane = &values[(b * channels + c) * height * width..][..height * width];
            for y in 0..height {
                for x in 0..width {
                    pixels[((top + y) * grid_width + left + x) * channels + c] = to_byte(plane[y * width + x]);
                }
            }
        }
    }
    write_png(path, png_width, png_height, channels, &pixels)
}

/// An RGB drawing surface with clipped pixel writes.
struct Canvas {
    width: i64,
    height: i64,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32, color: [u8; 3]) -> Canvas {
        Canvas { width: width as i64, height: height as i64, rgb: color.repeat(width as usize * height as usize) }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            let at = 3 * (y * self.width + x) as usize;
            self.rgb[at..at + 3].copy_from_slice(&color);
        }
    }

    /// A straight line (Bresenham), `thickness` pixels tall.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3], thickness: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thickness {
                self.set(x, y + t, color);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A polyline through `points`; a single point is drawn as a 3×3 dot.
    fn polyline(&mut self, points: &[(i64, i64)], color: [u8; 3], thickness: i64) {
        if let [(x, y)] = points {
            for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
                self.set(x + dx, y + dy, color);
            }
        }
        for pair in points.windows(2) {
            self.line(pair[0], pair[1], color, thickness);
        }
    }
}

const WHITE: [u8; 3] = [255, 255, 255];
const AXIS: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [228, 228, 228];
const RAW: [u8; 3] = [185, 185, 185];
const AVERAGE: [u8; 3] = [25, 60, 170];
/// Empty pixels around the plot area.
const MARGIN: i64 = 12;

/// Draws the training loss against the step as a `width`×`height` RGB PNG (at least 48×48),
/// without a plotting library: white background, axes, a light horizontal line and an axis tick
/// at every power of ten, the raw losses in light gray and their centered moving average (over
/// `2·⌊n/50⌋ + 1` points, fewer at the ends) in dark blue, on a log-scale y axis. Points whose loss is NaN, infinite
/// or not positive (no logarithm) are skipped; with no points left only the axes are drawn.
/// There is no text (no font): the decade lines give the scale.
pub fn write_loss_curve_png(path: impl AsRef<Path>, losses: &[(u64, f64)], width: u32, height: u32) -> Result<()> {
    let path = path.as_ref();
    if width < 48 || height < 48 {
        return Err(image_error(path, format!("a loss curve needs at least 48x48 pixels, not {width}x{height}")));
    }
    let mut canvas = Canvas::new(width, height, WHITE);
    let (left, right, top, bottom) = (MARGIN, width as i64 - MARGIN, MARGIN, height as i64 - MARGIN);

    let mut points: Vec<(u64, f64)> = losses.iter().copied().filter(|(_, loss)| loss.is_finite() && *loss > 0.0).collect();
    points.sort_by_key(|(step, _)| *step);
    if !points.is_empty() {
        // Centered moving average of `2·half + 1` points (fewer at the ends), via prefix sums.
        let half = points.len() / 50;
        let mut sum = 0.0;
        let prefix: Vec<f64> = std::iter::once(0.0)
            .chain(points.iter().map(|(_, loss)| {
                sum += loss;
                sum
            }))
            .collect();
        let average: Vec<f64> = (0..points.len())
            .map(|i| {
                let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
                (prefix[hi] - prefix[lo]) / (hi - lo) as f64
            })
            .collect();

        let (first, last) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
        let (x_lo, x_hi) = if last > first { (first, last) } else { (first - 1.0, first + 1.0) };
        let logs = points.iter().map(|(_, loss)| loss.log10());
        let (lo, hi) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.05).max(0.05);
        let (y_lo, y_hi) = (lo - pad, hi + pad);
        let to_x = |step: f64| left + 2 + ((step - x_lo) / (x_hi - x_lo) * (right - left - 4) as f64).round() as i64;
        let to_y = |log: f64| bottom - 2 - ((log - y_lo) / (y_hi - y_lo) * (bottom - top - 4) as f64).round() as i64;

        for decade in (y_lo.ceil() as i64)..=(y_hi.floor() as i64) {
            let y = to_y(decade as f64);
            canvas.line((left + 1, y), (right, y), GRID, 1);
            canvas.line((left - 4, y), (left, y), AXIS, 1);
        }
        let raw: Vec<(i64, i64)> = points.iter().map(|&(step, loss)| (to_x(step as f64), to_y(loss.log10()))).collect();
        let smooth: Vec<(i64, i64)> = points.iter().zip(&average).map(|(&(step, _), avg)| (to_x(step as f64), to_y(avg.log10()))).collect();
        canvas.polyline(&raw, RAW, 1);
        canvas.polyline(&smooth, AVERAGE, 2);
    }
    canvas.line((left, top), (left, bottom), AXIS, 1);
    canvas.line((left, bottom), (right, bottom), AXIS, 1);
    write_png(path, width, height, 3, &canvas.rgb)
}
