//! Valid image datasets (IDX, CIFAR-10, PNG) and their structural mutations, with the
//! checksums and stored (uncompressed) zlib and gzip streams that build them.

use std::path::Path;

use super::{Input, Rng, mutate_bytes};

// ---- checksums and stored compression (to build valid files and fix mutated ones) -------------

/// CRC-32 (IEEE), as PNG chunks and gzip use it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// DEFLATE stored blocks (no compression): valid input for any inflater.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 65535 + 1));
    let blocks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(65535).collect() };
    for (k, block) in blocks.iter().enumerate() {
        out.push(u8::from(k + 1 == blocks.len()));
        let n = block.len() as u16;
        out.extend(n.to_le_bytes());
        out.extend((!n).to_le_bytes());
        out.extend_from_slice(block);
    }
    out
}

pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend(deflate_stored(data));
    out.extend(adler32(data).to_be_bytes());
    out
}

pub(super) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_stored(data));
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

// ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------

pub(super) fn idx_seeds() -> Vec<Input> {
    let images = |n: u32| {
        let mut bytes = [0x803u32, n, 28, 28].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        bytes.extend((0..n as usize * 784).map(|k| (k * 7 % 256) as u8));
        bytes
    };
    let labels = |values: &[u8]| {
        let mut bytes = [0x801u32, values.len() as u32].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        bytes.extend(values);
        bytes
    };
    vec![vec![images(3), labels(&[0, 9, 5])], vec![images(1), labels(&[7])]]
}

/// One structural mutation of an IDX file (`labels`: a labels file): a dimension or the magic
/// number set to an interesting value, the data resized to what a new header announces, or a
/// label out of range.
pub(super) fn mutate_idx(bytes: &mut Vec<u8>, rng: &mut Rng, labels: bool) {
    let words = if labels { 2 } else { 4 };
    if bytes.len() < 4 * words {
        return mutate_bytes(bytes, rng);
    }
    let set_word = |bytes: &mut Vec<u8>, k: usize, value: u32| bytes[4 * k..4 * k + 4].copy_from_slice(&value.to_be_bytes());
    let dims = [0u32, 1, 2, 3, 27, 28, 29, 255, 256, 784, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
    match rng.below(6) {
        0 | 1 => {
            let k = 1 + rng.below(words - 1);
            set_word(bytes, k, *rng.pick(&dims));
        }
        2 => {
            // a consistent header for other dimensions: the loader gets past the length check
            let (n, rows, cols) = (1 + rng.below(4) as u32, *rng.pick(&[1u32, 2, 27, 28, 29]), *rng.pick(&[1u32, 28, 30]));
            if labels {
                set_word(bytes, 1, n);
                bytes.resize(8 + n as usize, 1);
            } else {
                for (k, v) in [(1, n), (2, rows), (3, cols)] {
                    set_word(bytes, k, v);
                }
                bytes.resize(16 + (n * rows * cols) as usize, 0x80);
            }
        }
        3 => {
            // another magic number: another element type or number of dimensions
            let magic = [0x801u32, 0x802, 0x803, 0x804, 0x800, 0x8ff, 0x903, 0xb03, 0xc03, 0xd03, 0xe03, 0x0100_0803];
            set_word(bytes, 0, *rng.pick(&magic));
        }
        4 if labels && bytes.len() > 8 => {
            let at = 8 + rng.below(bytes.len() - 8);
            bytes[at] = *rng.pick(&[10, 11, 127, 128, 255]);
        }
        _ => mutate_bytes(bytes, rng),
    }
}

// ---- CIFAR-10 -----------------------------------------------------------------------------------

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

pub(super) fn cifar_seeds() -> Vec<Input> {
    let records = |labels: &[u8]| {
        let mut bytes = Vec::new();
        for (r, &label) in labels.iter().enumerate() {
            bytes.push(label);
            bytes.extend((0..CIFAR_RECORD - 1).map(|k| ((k + r) * 13 % 256) as u8));
        }
        bytes
    };
    vec![vec![records(&[3, 9])], vec![records(&[0])]]
}

/// One structural mutation of a CIFAR-10 batch: a label out of range, a record repeated or cut.
pub(super) fn mutate_cifar(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let records = bytes.len() / CIFAR_RECORD;
    match rng.below(4) {
        0 if records > 0 => bytes[rng.below(records) * CIFAR_RECORD] = *rng.pick(&[10, 11, 128, 255]),
        1 if records > 0 => {
            let r = rng.below(records);
            let record = bytes[r * CIFAR_RECORD..(r + 1) * CIFAR_RECORD].to_vec();
            bytes.extend(record);
        }
        2 => {
            let cut = *rng.pick(&[1, CIFAR_RECORD - 1, CIFAR_RECORD, CIFAR_RECORD + 1]);
            bytes.truncate(bytes.len().saturating_sub(cut));
        }
        _ => mutate_bytes(bytes, rng),
    }
}

// ---- PNG ----------------------------------------------------------------------------------------

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// A PNG taken apart into chunks `(type, data)`; written back with each CRC computed.
struct Png {
    chunks: Vec<([u8; 4], Vec<u8>)>,
}

impl Png {
    fn parse(bytes: &[u8]) -> Option<Png> {
        let mut rest = bytes.strip_prefix(&PNG_SIGNATURE[..])?;
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
            chunks.push((kind, rest.get(8..8 + n)?.to_vec()));
            rest = rest.get(12 + n..)?;
        }
        Some(Png { chunks })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = PNG_SIGNATURE.to_vec();
        for (kind, data) in &self.chunks {
            out.extend((data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend(kind);
            out.extend(data);
            let crc = crc32(&out[start..]);
            out.extend(crc.to_be_bytes());
        }
        out
    }

    fn find(&mut self, kind: &[u8; 4]) -> Option<&mut Vec<u8>> {
        self.chunks.iter_mut().find(|(k, _)| k == kind).map(|(_, d)| d)
    }
}

/// Bytes of image data (filter bytes included) a PNG of this header decodes from.
fn png_data_len(width: u64, height: u64, bit_depth: u64, color_type: u8, interlaced: bool) -> u64 {
    let samples = match color_type {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let rows = |w: u64, h: u64| if w == 0 || h == 0 { 0 } else { h.saturating_mul(1 + w.saturating_mul(samples * bit_depth).div_ceil(8)) };
    if !interlaced {
        return rows(width, height);
    }
    // Adam7: (x0, y0, dx, dy) of the seven passes
    [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        .iter()
        .map(|&(x0, y0, dx, dy)| rows(width.saturating_sub(x0).div_ceil(dx), height.saturating_sub(y0).div_ceil(dy)))
        .fold(0, u64::saturating_add)
}

/// A PNG of any header, its image data uncompressed in stored zlib blocks.
pub fn png_file(width: u32, height: u32, bit_depth: u8, color_type: u8, interlaced: bool, extra: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([bit_depth, color_type, 0, 0, u8::from(interlaced)]);
    let n = png_data_len(width as u64, height as u64, bit_depth as u64, color_type, interlaced) as usize;
    let row = 1 + (width as usize * [1, 0, 3, 1, 2, 0, 4][color_type as usize] * bit_depth as usize).div_ceil(8);
    // filter type 0 at the start of each row (for interlaced data the bytes are a pattern)
    let data: Vec<u8> = (0..n).map(|k| if !interlaced && k % row == 0 { 0 } else { (k * 11 % 4) as u8 }).collect();
    let mut chunks = vec![(*b"IHDR", header)];
    chunks.extend(extra.iter().cloned());
    chunks.push((*b"IDAT", zlib_stored(&data)));
    chunks.push((*b"IEND", Vec::new()));
    Png { chunks }.to_bytes()
}

pub(super) fn png_seeds(work: &Path) -> Result<Vec<Input>, String> {
    let palette = (*b"PLTE", vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255]);
    let mut seeds = vec![
        png_file(4, 4, 8, 0, false, &[]),
        png_file(9, 9, 1, 0, false, &[]),
        png_file(3, 3, 16, 0, false, &[(*b"tRNS", vec![0, 7])]),
        png_file(5, 5, 8, 2, false, &[(*b"tEXt", b"Comment\0fuzz".to_vec())]),
        png_file(2, 2, 16, 2, false, &[]),
        png_file(3, 3, 8, 6, false, &[]),
        png_file(2, 2, 8, 4, false, &[]),
        png_file(4, 4, 8, 3, false, &[palette.clone(), (*b"tRNS", vec![0, 128])]),
        png_file(5, 5, 2, 3, false, &[palette]),
        png_file(8, 8, 8, 0, true, &[]),
        png_file(7, 7, 8, 2, true, &[]),
    ];
    // and one compressed by the png crate, as ember writes its sample grids
    let path = work.join("seed.png");
    let pixels: Vec<u8> = (0..8 * 8 * 3).map(|k| (k * 5 % 256) as u8).collect();
    ember_train::images::write_png(&path, 8, 8, 3, &pixels).map_err(|e| e.to_string())?;
    seeds.push(std::fs::read(&path).map_err(|e| e.to_string())?);
    let _ = std::fs::remove_file(&path);
    Ok(seeds.into_iter().map(|s| vec![s]).collect())
}

/// One structural mutation of a PNG, its CRCs recomputed so that the decoder looks further:
/// the header's size, depth, color type or interlacing; the image data replaced by stored
/// zlib data of about the right size, or bit-flipped; chunks removed, repeated or added.
pub(super) fn mutate_png(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let Some(mut png) = Png::parse(bytes) else { return mutate_bytes(bytes, rng) };
    let sizes = [0u32, 1, 2, 7, 8, 9, 32, 8192, 8193, 100_000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 16, 1 << 13];
    match rng.below(12) {
        0..=2 => {
            if let Some(header) = png.find(b"IHDR").filter(|h| h.len() >= 8) {
                let at = if rng.percent(50) { 0 } else { 4 };
                header[at..at + 4].copy_from_slice(&rng.pick(&sizes).to_be_bytes());
                if rng.percent(30) {
                    let other = 4 - at;
                    header[other..other + 4].copy_from_slice(&rng.pick(&sizes).to_be_bytes());
                }
            }
        }
        3 => {
            if let Some(header) = png.find(b"IHDR").filter(|h| h.len() >= 13) {
                let at = 8 + rng.below(5);
                header[at] = *rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255]);
            }
        }
        4 | 5 => {
            // image data of about the size the header announces, with any filter bytes
            let Some(header) = png.find(b"IHDR").filter(|h| h.len() >= 13).cloned() else { return mutate_bytes(bytes, rng) };
            let word = |k: usize| u32::from_be_bytes(header[k..k + 4].try_into().expect("4 bytes")) as u64;
            let n = png_data_len(word(0), word(4), header[8] as u64, header[9], header[12] == 1).min(1 << 20) as usize;
            let n = match rng.below(3) {
                0 => n,
                1 => n.saturating_sub(1 + rng.below(8)),
                _ => n + 1 + rng.below(8),
            };
            let data = rng.bytes(n);
            png.chunks.retain(|(k, _)| k != b"IDAT");
            let at = png.chunks.len().saturating_sub(1);
            png.chunks.insert(at, (*b"IDAT", zlib_stored(&data)));
        }
        6 => {
            // the compressed data damaged, its CRC still right
            if let Some(data) = png.find(b"IDAT") {
                mutate_bytes(data, rng);
            }
        }
        7 => {
            // split the image data in two chunks
            if let Some(k) = png.chunks.iter().position(|(k, _)| k == b"IDAT") {
                let data = std::mem::take(&mut png.chunks[k].1);
                let cut = rng.below(data.len() + 1);
                png.chunks[k].1 = data[..cut].to_vec();
                png.chunks.insert(k + 1, (*b"IDAT", data[cut..].to_vec()));
            }
        }
        8 if !png.chunks.is_empty() => {
            let k = rng.below(png.chunks.len());
            png.chunks.remove(k);
        }
        9 if !png.chunks.is_empty() => {
            let k = rng.below(png.chunks.len());
            let chunk = png.chunks[k].clone();
            let at = rng.below(png.chunks.len() + 1);
            png.chunks.insert(at, chunk);
        }
        10 => {
            // UNKN: an unknown chunk marked critical (upper-case first letter), which a reader must refuse
            let kind = *rng.pick(&[*b"PLTE", *b"tRNS", *b"gAMA", *b"iCCP", *b"zTXt", *b"acTL", *b"fcTL", *b"UNKN", *b"sBIT", *b"bKGD"]);
            let n = *rng.pick(&[0usize, 1, 2, 3, 6, 12, 13, 26, 256 * 3, 256 * 3 + 1, 257 * 3]);
            let data = rng.bytes(n);
            let at = rng.below(png.chunks.len() + 1).clamp(1, png.chunks.len().max(1));
            png.chunks.insert(at.min(png.chunks.len()), (kind, data));
        }
        _ => {
            // a chunk's length field lies (the only mutation that leaves CRCs wrong)
            let mut out = png.to_bytes();
            if out.len() >= 12 {
                let lie = rng.pick(&[0u32, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff]).to_be_bytes();
                out[8..12].copy_from_slice(&lie);
            }
            *bytes = out;
            return;
        }
    }
    *bytes = png.to_bytes();
}
