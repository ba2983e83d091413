//! Image output for the trainer: grids of samples (and, through `write_png`, the plots of
//! `report`), as 8-bit PNG files
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
