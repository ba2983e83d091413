//! Datasets and image output (`ember::train::{data, images}`): the loaders on small synthetic
//! files (IDX plain and gzipped, CIFAR-10 batches, PNG folders) and their errors, procedural
//! data, batching with flips, `from_name`, the PNG grid and the loss curve; and, when Debian's
//! `dataset-fashion-mnist` is installed, the real Fashion-MNIST train split.

use std::path::{Path, PathBuf};

use ember::tensor::rng::Rng;
use ember::tensor::{DType, Tensor};
use ember::train::data::*;
use ember::train::images::*;

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ember-data-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn sub(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scale(p: u8) -> f32 {
    p as f32 / 127.5 - 1.0
}

/// A gzip stream of `data` in stored (uncompressed) deflate blocks, written by hand so that the
/// test does not depend on the loader's own gzip library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[]] } else { data.chunks(65535).collect() };
    for (k, chunk) in chunks.iter().enumerate() {
        out.push((k + 1 == chunks.len()) as u8);
        out.extend((chunk.len() as u16).to_le_bytes());
        out.extend((!(chunk.len() as u16)).to_le_bytes());
        out.extend(*chunk);
    }
    out.extend((!crc).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// An IDX3 image file: header (magic, n, rows, cols) + pixels.
fn idx_images(magic: u32, n: usize, rows: usize, cols: usize, pixel: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut bytes: Vec<u8> = [magic, n as u32, rows as u32, cols as u32].iter().flat_map(|w| w.to_be_bytes()).collect();
    for i in 0..n {
        for y in 0..rows {
            bytes.extend((0..cols).map(|x| pixel(i, y, x)));
        }
    }
    bytes
}

fn mnist_pixel(i: usize, y: usize, x: usize) -> u8 {
    ((i * 53 + y * 28 + x) % 256) as u8
}

/// Checks a loaded 28×28-padded-to-32×32 image against `mnist_pixel`.
fn check_padded(dataset: &Dataset, i: usize) {
    let image = dataset.image(i);
    for y in 0..32 {
        for x in 0..32 {
            let inside = (2..30).contains(&y) && (2..30).contains(&x);
            let expected = if inside { scale(mnist_pixel(i, y - 2, x - 2)) } else { -1.0 };
            assert_eq!(image[y * 32 + x], expected, "image {i} at ({y}, {x})");
        }
    }
}

fn assert_mentions(error: &DataError, path: &Path, words: &[&str]) {
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message:?} does not name {}", path.display());
    for word in words {
        assert!(message.contains(word), "{message:?} does not say {word:?}");
    }
}

#[test]
fn idx_images_load_plain_and_gzipped_and_are_padded_to_32() {
    let tmp = TempDir::new("idx-round-trip");
    let bytes = idx_images(0x803, 3, 28, 28, mnist_pixel);
    let plain = tmp.sub("plain");
    std::fs::write(plain.join("train-images-idx3-ubyte"), &bytes).unwrap();
    let gzipped = tmp.sub("gzipped");
    std::fs::write(gzipped.join("train-images-idx3-ubyte.gz"), gzip_stored(&bytes)).unwrap();
    // A gzipped file without the .gz name: detected by its magic bytes.
    std::fs::write(plain.join("t10k-images-idx3-ubyte"), gzip_stored(&idx_images(0x803, 2, 28, 28, mnist_pixel))).unwrap();

    for dir in [&plain, &gzipped] {
        let dataset = load_fashion_mnist(dir, Split::Train).unwrap();
        assert_eq!((dataset.len(), dataset.channels(), dataset.size()), (3, 1, 32));
        (0..3).for_each(|i| check_padded(&dataset, i));
    }
    let test = load_mnist(&plain, Split::Test).unwrap();
    assert_eq!(test.len(), 2);
    check_padded(&test, 1);
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let tmp = TempDir::new("idx-errors");
    let write = |name: &str, bytes: &[u8]| {
        let dir = tmp.sub(name);
        std::fs::write(dir.join("train-images-idx3-ubyte"), bytes).unwrap();
        (dir.clone(), dir.join("train-images-idx3-ubyte"))
    };
    let good = idx_images(0x803, 2, 28, 28, mnist_pixel);

    let (dir, file) = write("labels", &idx_images(0x801, 2, 28, 28, mnist_pixel));
    let error = load_fashion_mnist(&dir, Split::Train).unwrap_err();
    assert!(matches!(error, DataError::Format { .. }), "{error:?}");
    assert_mentions(&error, &file, &["magic", "0x00000801", "labels"]);

    let (dir, file) = write("truncated", &good[..good.len() - 1]);
    let error = load_fashion_mnist(&dir, Split::Train).unwrap_err();
    assert!(matches!(error, DataError::Format { .. }), "{error:?}");
    assert_mentions(&error, &file, &["truncated", "1568"]);

    let (dir, file) = write("header-only", &good[..10]);
    assert_mentions(&load_fashion_mnist(&dir, Split::Train).unwrap_err(), &file, &["truncated", "16-byte header"]);

    let (dir, file) = write("too-long", &[&good[..], &[0]].concat());
    assert_mentions(&load_fashion_mnist(&dir, Split::Train).unwrap_err(), &file, &["too long"]);

    let (dir, file) = write("wrong-dims", &idx_images(0x803, 2, 27, 28, mnist_pixel));
    assert_mentions(&load_fashion_mnist(&dir, Split::Train).unwrap_err(), &file, &["27x28", "28x28"]);

    let (dir, file) = write("bad-gzip", &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let error = load_fashion_mnist(&dir, Split::Train).unwrap_err();
    assert!(matches!(error, DataError::Format { .. }), "{error:?}");
    assert_mentions(&error, &file, &["gzip"]);

    let empty = tmp.sub("missing");
    let error = load_fashion_mnist(&empty, Split::Test).unwrap_err();
    assert!(matches!(error, DataError::Missing { .. }), "{error:?}");
    assert_mentions(&error, &empty.join("t10k-images-idx3-ubyte.gz"), &["apt-get install dataset-fashion-mnist", "not found"]);
}

/// A CIFAR-10 batch file of `n` records whose pixels are `(record, offset) → byte`.
fn cifar_batch(first: usize, n: usize) -> Vec<u8> {
    (first..first + n).flat_map(|r| std::iter::once(7u8).chain((0..3072).map(move |k| ((r * 31 + k) % 251) as u8))).collect()
}

#[test]
fn cifar10_binary_batches_load_and_errors_name_the_file() {
    let tmp = TempDir::new("cifar10");
    let dir = tmp.sub("cifar-10-batches-bin");
    std::fs::write(dir.join("test_batch.bin"), cifar_batch(100, 2)).unwrap();
    for k in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{k}.bin")), cifar_batch(k - 1, 1)).unwrap();
    }
    let test = load_cifar10(&dir, Split::Test).unwrap();
    assert_eq!((test.len(), test.channels(), test.size()), (2, 3, 32));
    let expected: Vec<f32> = (0..3072).map(|k| scale(((101 * 31 + k) % 251) as u8)).collect();
    assert_eq!(test.image(1), &expected[..]);
    // The parent of the extracted folder works too; the train split reads the five batches.
    let train = load_cifar10(&tmp.0, Split::Train).unwrap();
    assert_eq!(train.len(), 5);
    let expected: Vec<f32> = (0..3072).map(|k| scale(((4 * 31 + k) % 251) as u8)).collect();
    assert_eq!(train.image(4), &expected[..]);

    std::fs::write(dir.join("data_batch_3.bin"), &cifar_batch(0, 2)[..5000]).unwrap();
    let error = load_cifar10(&dir, Split::Train).unwrap_err();
    assert!(matches!(error, DataError::Format { .. }), "{error:?}");
    assert_mentions(&error, &dir.join("data_batch_3.bin"), &["5000 bytes", "3073"]);

    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    std::fs::write(dir.join("data_batch_3.bin"), cifar_batch(0, 1)).unwrap();
    let error = load_cifar10(&dir, Split::Train).unwrap_err();
    assert!(matches!(error, DataError::Missing { .. }), "{error:?}");
    assert_mentions(&error, &dir.join("data_batch_5.bin"), &["cifar-10-binary"]);
}

#[test]
fn png_folders_load_sorted_converted_and_reject_other_sizes() {
    let tmp = TempDir::new("png-folder");
    let dir = tmp.sub("images");
    let gray: Vec<u8> = (0..16).map(|k| (k * 16) as u8).collect();
    let rgb: Vec<u8> = (0..16).flat_map(|k| [k as u8 * 10, 100, 255 - k as u8]).collect();
    let rgba: Vec<u8> = (0..16).flat_map(|k| [k as u8, 0, 200, 17]).collect();
    write_png(dir.join("b_rgb.png"), 4, 4, 3, &rgb).unwrap();
    write_png(dir.join("a_gray.png"), 4, 4, 1, &gray).unwrap();
    write_png(dir.join("c_rgba.PNG"), 4, 4, 4, &rgba).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();

    let color = load_png_folder(&dir, 4, 3).unwrap();
    assert_eq!((color.len(), color.channels(), color.size()), (3, 3, 4));
    let gray_values: Vec<f32> = gray.iter().map(|&p| scale(p)).collect();
    assert_eq!(color.image(0), &[&gray_values[..], &gray_values, &gray_values].concat()[..], "gray repeated into RGB");
    let rgb_planes: Vec<f32> = (0..3).flat_map(|c| (0..16).map(move |p| c + 3 * p)).map(|k| scale(rgb[k])).collect();
    assert_eq!(color.image(1), &rgb_planes[..], "RGB as CHW planes");
    let rgba_planes: Vec<f32> = (0..3).flat_map(|c| (0..16).map(move |p| c + 4 * p)).map(|k| scale(rgba[k])).collect();
    assert_eq!(color.image(2), &rgba_planes[..], "alpha dropped");

    let mono = load_png_folder(&dir, 4, 1).unwrap();
    assert_eq!(mono.image(0), &gray_values[..]);
    let luminance = 0.299 * scale(rgb[3]) + 0.587 * scale(rgb[4]) + 0.114 * scale(rgb[5]);
    assert!((mono.image(1)[1] - luminance).abs() < 1e-6);

    let by_name = Dataset::from_name(&format!("png:{}", dir.display()), Split::Train, 3).unwrap();
    assert_eq!(by_name.image(1), color.image(1));

    write_png(dir.join("d_big.png"), 5, 4, 1, &[0; 20]).unwrap();
    let error = load_png_folder(&dir, 4, 1).unwrap_err();
    assert!(matches!(error, DataError::WrongSize { width: 5, height: 4, expected: 4, .. }), "{error:?}");
    assert_mentions(&error, &dir.join("d_big.png"), &["5x4", "4x4"]);

    std::fs::write(dir.join("e_broken.png"), b"\x89PNG but not really").unwrap();
    std::fs::remove_file(dir.join("d_big.png")).unwrap();
    assert_mentions(&load_png_folder(&dir, 4, 1).unwrap_err(), &dir.join("e_broken.png"), &["PNG"]);

    let empty = tmp.sub("empty");
    assert_mentions(&load_png_folder(&empty, 4, 1).unwrap_err(), &empty, &["no .png files"]);
    let missing = tmp.join("absent");
    assert!(matches!(load_png_folder(&missing, 4, 1).unwrap_err(), DataError::Missing { .. }));
    assert!(matches!(load_png_folder(&dir, 4, 2).unwrap_err(), DataError::InvalidArgument { .. }));
}

#[test]
fn procedural_data_is_deterministic_varied_and_in_range() {
    let a = procedural(64, 1, 16, 5).unwrap();
    assert_eq!((a.len(), a.channels(), a.size()), (64, 1, 16));
    let again = procedural(64, 1, 16, 5).unwrap();
    assert!((0..64).all(|i| a.image(i) == again.image(i)));
    let longer = procedural(80, 1, 16, 5).unwrap();
    assert!((0..64).all(|i| a.image(i) == longer.image(i)), "a longer dataset extends a shorter one");
    let other = procedural(64, 1, 16, 6).unwrap();
    assert!((0..64).filter(|&i| a.image(i) != other.image(i)).count() > 60);

    let mut distinct_images = std::collections::BTreeSet::new();
    for i in 0..64 {
        let image = a.image(i);
        assert!(image.iter().all(|v| (-1.0..=1.0).contains(v)));
        let (lo, hi) = image.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(lo <= -0.7 && hi >= 0.2, "image {i} has a dark background and a bright shape");
        distinct_images.insert(image.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    assert_eq!(distinct_images.len(), 64);
    let shape_pixels: f64 = (0..64).map(|i| a.image(i).iter().filter(|&&v| v >= 0.2).count() as f64).sum::<f64>() / (64.0 * 256.0);
    assert!((0.1..0.6).contains(&shape_pixels), "shapes cover {shape_pixels} of the pixels");

    let color = procedural(8, 3, 32, 1).unwrap();
    assert_eq!(color.image(0).len(), 3 * 32 * 32);
    assert!((0..8).any(|i| color.image(i)[..1024] != color.image(i)[1024..2048]), "channels differ");
    assert!(matches!(procedural(0, 1, 16, 0), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(procedural(4, 2, 16, 0), Err(DataError::InvalidArgument { .. })));
}

#[test]
fn batches_gather_images_and_flip_them_left_to_right() {
    // Three 2-channel 3×3 images: value = (i·100 + c·10 + y·3 + x) / 300.
    let values: Vec<f32> = (0..3).flat_map(|i| (0..2).flat_map(move |c| (0..9).map(move |k| (i * 100 + c * 10 + k) as f32 / 300.0))).collect();
    let dataset = Dataset::from_values("toy", values.clone(), 2, 3).unwrap();
    let batch = dataset.batch(&[2, 0, 2], &[true, false, false]).unwrap();
    assert_eq!(batch.shape(), &[3, 2, 3, 3]);
    assert_eq!(batch.dtype(), DType::F32);
    let got = batch.to_vec::<f32>().unwrap();
    let flipped: Vec<f32> = dataset.image(2).chunks(3).flat_map(|row| [row[2], row[1], row[0]]).collect();
    assert_eq!(&got[..18], &flipped[..]);
    assert_eq!(&got[18..36], dataset.image(0));
    assert_eq!(&got[36..], dataset.image(2));
    assert_eq!(dataset.batch(&[1], &[]).unwrap().to_vec::<f32>().unwrap(), dataset.image(1));

    assert!(matches!(dataset.batch(&[3], &[]), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(dataset.batch(&[0, 1], &[true]), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(Dataset::from_values("bad", vec![0.0; 17], 2, 3), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(Dataset::from_values("bad", vec![1.5; 18], 2, 3), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(Dataset::from_values("bad", vec![], 2, 3), Err(DataError::InvalidArgument { .. })));
}

#[test]
fn sample_batch_draws_with_replacement_and_flips_about_half() {
    // Ten 8×8 images, none symmetric left–right, so a flipped image is told from its original.
    let values: Vec<f32> = (0..640).map(|k| ((k * 37) % 97) as f32 / 97.0).collect();
    let dataset = Dataset::from_values("asymmetric", values, 1, 8).unwrap();
    let mut rng = Rng::new(42);
    let batch = dataset.sample_batch(400, &mut rng, true).unwrap();
    assert_eq!(batch.shape(), &[400, 1, 8, 8]);
    assert_eq!(rng.offset, 200, "two draws of 400 uniforms");
    let again = dataset.sample_batch(400, &mut Rng::new(42), true).unwrap();
    assert_eq!(batch.to_vec::<f32>().unwrap(), again.to_vec::<f32>().unwrap());

    let values = batch.to_vec::<f32>().unwrap();
    let (mut counts, mut flipped) = ([0usize; 10], 0);
    for image in values.chunks(64) {
        let mirror: Vec<f32> = image.chunks(8).flat_map(|row| row.iter().rev().copied()).collect();
        let plain = (0..10).find(|&i| dataset.image(i) == image);
        let index = plain.or_else(|| (0..10).find(|&i| dataset.image(i) == &mirror[..])).expect("every row is a dataset image");
        counts[index] += 1;
        flipped += (plain.is_none()) as usize;
    }
    assert!(counts.iter().all(|&c| (15..70).contains(&c)), "uniform indices: {counts:?}");
    assert!((150..250).contains(&flipped), "{flipped} of 400 flipped");

    let mut rng = Rng::new(42);
    let unflipped = dataset.sample_batch(400, &mut rng, false).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rng.offset, 100, "one draw without flips");
    assert!(unflipped.chunks(64).all(|image| (0..10).any(|i| dataset.image(i) == image)));
}

#[test]
fn from_name_parses_specs_and_converts_channels() {
    let d = Dataset::from_name("procedural", Split::Train, 1).unwrap();
    assert_eq!((d.len(), d.channels(), d.size()), (1000, 1, 32));
    let d = Dataset::from_name("procedural:12", Split::Train, 3).unwrap();
    assert_eq!((d.len(), d.channels(), d.size()), (12, 3, 32));
    let test = Dataset::from_name("procedural:12:16", Split::Test, 1).unwrap();
    let train = Dataset::from_name("procedural:12:16", Split::Train, 1).unwrap();
    assert_eq!((test.len(), test.size()), (12, 16));
    assert_ne!(test.image(0), train.image(0), "the splits differ");

    let tmp = TempDir::new("from-name");
    std::fs::write(tmp.join("train-images-idx3-ubyte.gz"), gzip_stored(&idx_images(0x803, 2, 28, 28, mnist_pixel))).unwrap();
    let rgb = Dataset::from_name(&format!("fashion-mnist:{}", tmp.0.display()), Split::Train, 3).unwrap();
    assert_eq!((rgb.len(), rgb.channels(), rgb.size()), (2, 3, 32));
    assert!(rgb.image(1).chunks(1024).all(|plane| plane == &rgb.image(1)[..1024]), "gray repeated into 3 channels");
    let gray = rgb.with_channels(1).unwrap();
    check_padded(&gray, 1);

    for bad in ["imagenet", "cifar10", "png:", "procedural:many", "procedural:1:2:3", "mnist"] {
        let error = Dataset::from_name(bad, Split::Train, 1).unwrap_err();
        assert!(matches!(error, DataError::Spec { .. }), "{bad}: {error:?}");
        assert!(error.to_string().contains(bad), "{error}");
    }
    assert!(Dataset::from_name("imagenet", Split::Train, 1).unwrap_err().to_string().contains("procedural"));
    let missing = tmp.join("nowhere");
    let error = Dataset::from_name(&format!("cifar10:{}", missing.display()), Split::Test, 3).unwrap_err();
    assert!(matches!(error, DataError::Missing { .. }), "{error:?}");
}

#[test]
fn grid_png_has_the_layout_and_the_pixel_values() {
    let tmp = TempDir::new("grid");
    // Three gray 4×5 images: image b is constant except its top-left pixel.
    let mut values = Vec::new();
    for b in 0..3 {
        values.extend((0..20).map(|k| if k == 0 { 1.0 } else { -1.0 + 0.5 * b as f64 }));
    }
    values[20 + 19] = 7.0; // clamped to 1
    values[40 + 19] = f64::NAN; // drawn as 0
    let images = Tensor::from_f64(&values, &[3, 1, 4, 5], DType::F32).unwrap();
    let path = tmp.join("grid.png");
    write_grid_png(&path, &images, 2).unwrap();
    let png = read_png(&path).unwrap();
    assert_eq!((png.width, png.height, png.channels), (2 * 5 + 3 * 2, 2 * 4 + 3 * 2, 1));
    let at = |x: usize, y: usize| png.pixels[y * png.width as usize + x];
    assert_eq!(at(0, 0), 255, "border");
    assert_eq!((at(2, 2), at(3, 2)), (255, 0), "image 0: 1.0 and -1.0");
    assert_eq!((at(9, 2), at(10, 2)), (255, 64), "image 1 right of image 0: round(0.5 · 127.5)");
    assert_eq!(at(13, 5), 255, "clamped");
    assert_eq!((at(3, 8), at(6, 11)), (128, 0), "image 2 starts the second row; NaN → 0");
    assert_eq!(at(10, 8), 255, "the empty cell is border");
    assert_eq!(to_byte(0.0), 128);

    let rgb = Tensor::from_f64(&[-1.0, 0.0, 1.0], &[1, 3, 1, 1], DType::F64).unwrap();
    write_grid_png(tmp.join("rgb.png"), &rgb, 8).unwrap();
    let png = read_png(&tmp.join("rgb.png")).unwrap();
    assert_eq!((png.width, png.height, png.channels), (5, 5, 3));
    assert_eq!(&png.pixels[(2 * 5 + 2) * 3..][..3], &[0, 128, 255]);

    let bad = tmp.join("bad.png");
    for (tensor, columns) in [(Tensor::zeros(&[2, 4, 4], DType::F32), 1), (Tensor::zeros(&[1, 2, 4, 4], DType::F32), 1), (rgb, 0)] {
        let error = write_grid_png(&bad, &tensor, columns).unwrap_err();
        assert!(matches!(error, DataError::Image { .. }), "{error:?}");
        assert_mentions(&error, &bad, &[]);
    }
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}

/// Pixels of `png` (RGB) in the columns `xs` and rows `ys` darker than `level` in every channel.
fn dark_pixels(png: &PngImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>, level: u8) -> usize {
    let mut count = 0;
    for y in ys {
        for x in xs.clone() {
            let at = 3 * (y * png.width + x) as usize;
            count += png.pixels[at..at + 3].iter().all(|&c| c < level) as usize;
        }
    }
    count
}

#[test]
fn plots_have_labelled_axes_and_draw_their_series() {
    use ember::train::report::*;
    let tmp = TempDir::new("plots");
    let many: Vec<(f64, f64)> = (0..2000u64)
        .map(|s| {
            let noise = 1.0 + 0.3 * ((s * 7919 % 13) as f64 / 13.0);
            (s as f64, if s == 700 { f64::NAN } else { 0.02 + noise / (1.0 + s as f64 / 50.0) })
        })
        .collect();
    let average: Vec<(f64, f64)> = many.iter().map(|&(s, _)| (s, 0.02 + 1.15 / (1.0 + s / 50.0))).collect();
    let cases = [
        ("none", vec![]),
        ("one", vec![(5.0, 0.3)]),
        ("flat", vec![(1.0, 0.5), (2.0, 0.5)]),
        ("many", many.clone()),
        ("bad", vec![(1.0, f64::NAN), (2.0, -1.0), (3.0, f64::INFINITY)]),
    ];
    for log_y in [true, false] {
        for (name, points) in &cases {
            let path = tmp.join(&format!("{name}-{log_y}.png"));
            let raw = Series { label: "per step".into(), points: points.clone(), color: RAW_COLOR, width: 1, dots: false };
            let smooth = Series {
                label: "average".into(),
                points: if *name == "many" { average.clone() } else { points.clone() },
                color: MAIN_COLOR,
                width: 2,
                dots: true,
            };
            let plot = Plot { title: "training loss".into(), x_label: "step".into(), y_label: "loss".into(), log_y, series: vec![raw, smooth] };
            write_plot_png(&path, &plot, 480, 300).unwrap();
            let png = read_png(&path).unwrap();
            assert_eq!((png.width, png.height, png.channels), (480, 300, 3), "{name}");
            let has = |color: RGBColor| png.pixels.chunks(3).any(|p| p == [color.0, color.1, color.2]);
            assert!(has(RGBColor(255, 255, 255)), "{name}: background");
            // text: the title at the top, tick labels and axis names at the left and bottom
            assert!(dark_pixels(&png, 150..330, 0..30, 90) > 20, "{name}: the title is drawn");
            assert!(dark_pixels(&png, 0..60, 40..260, 90) > 40, "{name}: the y axis is labelled");
            assert!(dark_pixels(&png, 80..480, 262..300, 90) > 40, "{name}: the x axis is labelled");
            if *name != "none" && *name != "bad" {
                assert!(has(MAIN_COLOR), "{name}: the main series is drawn");
            }
            if *name == "many" {
                assert!(has(RAW_COLOR), "{name}: the raw series is drawn");
            }
        }
    }
    let plot = Plot { title: String::new(), x_label: "x".into(), y_label: "y".into(), log_y: false, series: vec![] };
    let error = write_plot_png(tmp.join("tiny.png"), &plot, 100, 100).unwrap_err();
    assert_mentions(&error, &tmp.join("tiny.png"), &["100x100"]);

    assert_eq!(tick_label(0.0), "0");
    assert_eq!(tick_label(0.05), "0.05");
    assert_eq!(tick_label(2500.0), "2500");
    assert_eq!(tick_label(0.0001), "1e-4");
    let close = |ticks: Vec<f64>, expected: &[f64]| ticks.len() == expected.len() && ticks.iter().zip(expected).all(|(t, e)| (t / e - 1.0).abs() < 1e-12);
    assert!(close(log_ticks(0.004, 2.0), &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]), "1, 2, 5 when decades are too few");
    assert!(close(log_ticks(0.0009, 20000.0), &[0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]), "decades");
    let narrow = log_ticks(0.031, 0.046);
    assert!((4..=10).contains(&narrow.len()) && narrow.iter().all(|t| (0.031..=0.046).contains(t)), "{narrow:?}");
    assert_eq!(moving_average(&[1.0, 2.0, 3.0, 4.0, 5.0], 1), [1.5, 2.0, 3.0, 4.0, 4.5]);
    assert_eq!(metric_plot_file("fid"), "metric_fid.png");
    assert_eq!(metric_plot_file("retrieval/held out"), "metric_retrieval_held_out.png");
}

#[test]
fn the_report_shows_config_speed_measurements_plots_and_samples_of_the_run() {
    use ember::train::report::*;
    let tmp = TempDir::new("report");
    std::fs::create_dir_all(tmp.join("samples")).unwrap();
    let grid = Tensor::zeros(&[4, 1, 8, 8], DType::F32);
    for step in [50u64, 100] {
        write_grid_png(tmp.join(&format!("samples/step_{step:07}.png")), &grid, 2).unwrap();
    }
    let loss_rows: Vec<String> = (1..=100).map(|s| format!("{s},{},{},{}", 1.0 / s as f64, 2.0, 1e-3 * (s as f64 / 100.0).min(1.0))).collect();
    let metric_rows = ["50,fid,12.5", "50,psnr,20.25", "100,fid,7.25", "100,psnr,22"].map(String::from);
    let record = RunRecord::new(&loss_rows, &metric_rows, 100);
    assert_eq!(record.steps.len(), 100);
    assert_eq!(record.metric_names(), ["fid", "psnr"]);
    record.write(&tmp.0, "VAE stage", "{\"note\": \"a <b> & c\"}", 200).unwrap();

    let html = std::fs::read_to_string(tmp.join("report.html")).unwrap();
    for needle in [
        "ember: VAE stage run",
        "step 100 of 200",
        "resident memory",
        "<th>fid</th><th>psnr</th>",
        "<tr><td>100</td><td>7.2500</td><td>22.0000</td></tr>",
        "samples/step_0000050.png",
        "samples/step_0000100.png",
        "&quot;a &lt;b&gt; &amp; c&quot;",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}:\n{html}");
    }
    // every image the page shows is in the folder and is a plot or a grid
    let sources: Vec<&str> = html.split("src=\"").skip(1).map(|rest| &rest[..rest.find('"').unwrap()]).collect();
    for file in ["loss.png", "lr.png", "grad_norm.png", "metric_fid.png", "metric_psnr.png"] {
        assert!(sources.contains(&file), "report.html shows {file}");
    }
    for source in &sources {
        let png = read_png(&tmp.join(source)).unwrap();
        assert!(png.width > 0, "{source}");
    }
    assert_eq!(sources.len(), 7);
}

#[test]
fn real_fashion_mnist_train_split_when_installed() {
    let dir = Path::new(FASHION_MNIST_DEBIAN_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").is_file() && !dir.join("train-images-idx3-ubyte").is_file() {
        eprintln!("skipped: Fashion-MNIST is not installed at {} (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let dataset = Dataset::from_name("fashion-mnist", Split::Train, 1).unwrap();
    assert_eq!((dataset.len(), dataset.channels(), dataset.size()), (60000, 1, 32));
    let mut sum = 0.0f64;
    for i in 0..dataset.len() {
        let image = dataset.image(i);
        assert!(image.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(image[..64].iter().chain(&image[30 * 32..]).all(|&v| v == -1.0), "image {i}: the top and bottom padding");
        assert!(image.chunks(32).all(|row| row[..2] == [-1.0, -1.0] && row[30..] == [-1.0, -1.0]), "image {i}: the side padding");
        sum += image.iter().map(|&v| v as f64).sum::<f64>();
    }
    // Fashion-MNIST's mean pixel is 72.94 / 255 (0.2860); over 32×32 with the padding at -1:
    let mean = sum / (60000.0 * 1024.0);
    let expected = (784.0 * (72.94 / 127.5 - 1.0) - 240.0) / 1024.0;
    assert!((mean - expected).abs() < 2e-3, "mean {mean}, expected {expected}");
    let test = load_fashion_mnist(dir, Split::Test).unwrap();
    assert_eq!(test.len(), 10000);
}

// ---- labels ---------------------------------------------------------------------------------

/// An IDX1 labels file: header (magic, count) + one byte per label.
fn idx_labels(magic: u32, count: usize, labels: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = [magic, count as u32].iter().flat_map(|w| w.to_be_bytes()).collect();
    bytes.extend(labels);
    bytes
}

#[test]
fn idx_labels_load_beside_the_images_and_their_errors_name_the_file() {
    let tmp = TempDir::new("idx-labels");
    std::fs::write(tmp.join("t10k-images-idx3-ubyte"), idx_images(0x0803, 3, 28, 28, mnist_pixel)).unwrap();
    // no labels file: the images load, unlabelled, and the name says so
    let unlabelled = load_fashion_mnist(&tmp.0, Split::Test).unwrap();
    assert!(unlabelled.labels().is_none() && unlabelled.class_names().is_empty());
    assert!(unlabelled.name().contains("no labels file"), "{}", unlabelled.name());
    assert_eq!(unlabelled.batch_labels(&[0, 2]).unwrap(), None);

    // gzipped labels, Fashion-MNIST's class names
    let labels_path = tmp.join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels_path, gzip_stored(&idx_labels(0x0801, 3, &[7, 0, 9]))).unwrap();
    let test = load_fashion_mnist(&tmp.0, Split::Test).unwrap();
    let labels = test.labels().expect("labels");
    assert_eq!(labels.classes(), &[7, 0, 9]);
    assert_eq!(test.class_names()[7], "sneaker");
    assert_eq!(test.class_names().len(), 10);
    assert_eq!(test.batch_labels(&[2, 2, 0]).unwrap(), Some(vec![9, 9, 7]));
    assert!(test.batch_labels(&[3]).is_err(), "an index past the images");
    check_padded(&test, 1);
    // MNIST names its classes by digit
    let mnist = load_mnist(&tmp.0, Split::Test).unwrap();
    assert_eq!(mnist.class_names()[7], "7");

    // each broken labels file is an error naming it and the problem
    let plain = tmp.join("t10k-labels-idx1-ubyte"); // the plain file is read first
    for (bytes, words) in [
        (idx_labels(0x0801, 2, &[1, 2]), vec!["2 labels for 3 images"]),
        (idx_labels(0x0801, 3, &[1, 10, 2]), vec!["image 1", "label 10", "10 classes"]),
        (idx_labels(0x0803, 3, &[1, 2, 3]), vec!["bad magic number"]),
        (idx_labels(0x0801, 4, &[1, 2, 3]), vec!["header says 4 labels", "holds 3"]),
        (vec![0, 0, 8], vec!["truncated"]),
    ] {
        std::fs::write(&plain, bytes).unwrap();
        let error = load_fashion_mnist(&tmp.0, Split::Test).unwrap_err();
        assert!(matches!(error, DataError::Format { .. }), "{error:?}");
        assert_mentions(&error, &plain, &words);
    }
}

#[test]
fn cifar10_labels_come_from_the_records_and_a_bad_label_names_the_file() {
    let tmp = TempDir::new("cifar10-labels");
    let mut batch = cifar_batch(0, 3);
    batch[3073] = 2; // the second record's label byte
    std::fs::write(tmp.join("test_batch.bin"), &batch).unwrap();
    let test = load_cifar10(&tmp.0, Split::Test).unwrap();
    assert_eq!(test.labels().expect("labels").classes(), &[7, 2, 7]);
    assert_eq!(test.class_names()[7], "horse");
    batch[2 * 3073] = 10;
    std::fs::write(tmp.join("test_batch.bin"), &batch).unwrap();
    let error = load_cifar10(&tmp.0, Split::Test).unwrap_err();
    assert_mentions(&error, &tmp.join("test_batch.bin"), &["record 2", "label 10"]);
}

#[test]
fn png_class_subfolders_label_their_images_and_loose_images_beside_them_are_refused() {
    let tmp = TempDir::new("png-classes");
    let dir = tmp.sub("garments");
    let (sneakers, bags) = (tmp.sub("garments/sneaker"), tmp.sub("garments/bag"));
    let plain: Vec<u8> = (0..16).map(|k| (k * 3) as u8).collect();
    write_png(sneakers.join("b.png"), 4, 4, 1, &plain).unwrap();
    write_png(sneakers.join("a.png"), 4, 4, 1, &[255; 16]).unwrap();
    write_png(bags.join("only.png"), 4, 4, 1, &[0; 16]).unwrap();
    tmp.sub("garments/empty-folder"); // a folder without images is no class
    let data = Dataset::from_name(&format!("png:{}", dir.display()), Split::Train, 1).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.class_names(), &["bag".to_string(), "sneaker".to_string()], "classes in folder-name order");
    assert_eq!(data.labels().unwrap().classes(), &[0, 1, 1]);
    assert_eq!(data.image(0), &[-1.0f32; 16][..], "bag/only.png first");
    assert_eq!(data.image(1), &[1.0f32; 16][..], "then sneaker/a.png");

    write_png(dir.join("loose.png"), 4, 4, 1, &plain).unwrap();
    let error = load_png_folder(&dir, 4, 1).unwrap_err();
    assert_mentions(&error, &dir, &["class subfolders", "loose"]);
}

/// The CRC-32 of PNG chunks (and gzip), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_png_announcing_a_huge_image_is_an_error_naming_it_not_an_abort() {
    let tmp = TempDir::new("png-bomb");
    let dir = tmp.sub("images");
    let path = dir.join("bomb.png");
    write_png(&path, 1, 1, 1, &[0]).unwrap();
    // IHDR: 8 signature bytes, then length (4), "IHDR" (4), width (4), height (4), …, CRC
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = read_png(&path).unwrap_err();
    assert_mentions(&error, &path, &["100000x100000"]);
    let error = Dataset::from_name(&format!("png:{}", dir.display()), Split::Train, 1).unwrap_err();
    assert_mentions(&error, &path, &["100000x100000"]);
}

#[test]
fn procedural_images_are_labelled_by_their_shape() {
    let data = procedural(40, 1, 16, 3).unwrap();
    let labels = data.labels().expect("labels");
    assert_eq!(data.class_names(), &["disc".to_string(), "square".to_string(), "stripes".to_string()]);
    for class in 0..3 {
        assert!(labels.classes().contains(&class), "40 images hold every shape");
    }
    // the labels are as deterministic as the images, and a longer dataset extends a shorter one
    let longer = procedural(50, 1, 16, 3).unwrap();
    assert_eq!(&longer.labels().unwrap().classes()[..40], labels.classes());
    // a stripes image holds background and shape in every row or every column; a disc never
    // reaches all four edges of the image
    for i in 0..data.len() {
        let image = data.image(i);
        let background = image.iter().copied().fold(f32::INFINITY, f32::min);
        let edges = [&image[..16], &image[240..]];
        if labels.classes()[i] == 0 {
            assert!(edges.iter().any(|edge| edge.iter().all(|&v| v == background)), "disc image {i} fills a whole edge");
        }
    }
}

#[test]
fn labels_are_checked_when_attached() {
    assert!(Labels::new(vec![0, 1, 2], vec!["a".into(), "b".into()]).is_err(), "label 2 of 2 classes");
    assert!(Labels::new(vec![0], vec![]).is_err(), "no classes");
    assert!(Labels::new(vec![0], vec!["a".into(), "a".into()]).is_err(), "a name twice");
    let labels = Labels::new(vec![0, 1], vec!["a".into(), "b".into()]).unwrap();
    let data = procedural(3, 1, 8, 0).unwrap();
    let error = data.with_labels(labels).unwrap_err();
    assert!(error.to_string().contains("2 labels for the 3 images"), "{error}");
}
