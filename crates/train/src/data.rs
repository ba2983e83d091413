//! Datasets for the DDPM trainer: images held in memory as f32 values in [-1, 1] (the DDPM
//! convention, `pixel / 127.5 − 1`), batched into `[B, C, H, W]` tensors with optional random
//! horizontal flips, and, when the data has them, the images' class labels ([`Labels`]: one
//! class index per image and the classes' names), checked when loaded.
//!
//! Loaders (each error names the file and what is wrong with it):
//! - [`load_fashion_mnist`] / [`load_mnist`]: IDX files, gzipped or not (detected by the gzip
//!   magic bytes `1f 8b`, not by the name), 28×28 padded with the background to 32×32; the
//!   labels from the IDX labels file beside them when it is there;
//! - [`load_cifar10`]: the CIFAR-10 binary batches (`data_batch_N.bin`, `test_batch.bin`),
//!   labels included;
//! - [`load_png_folder`]: every `.png` in a folder, in file-name order, no resizing; or, when
//!   the folder holds one subfolder per class, their images labelled by subfolder;
//! - [`procedural`]: simple shapes drawn from a seed, for tests and machines without data.
//!
//! [`Dataset::from_name`] turns a spec such as `"fashion-mnist"` or `"png:DIR"` into a dataset.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ember_tensor::rng::Rng;
use ember_tensor::{Device, Tensor};

/// Where Debian's `dataset-fashion-mnist` package installs the (gzipped) IDX files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How many images `"procedural"` (without `:N`) makes, and their default size.
pub const PROCEDURAL_DEFAULT_LEN: usize = 1000;
pub const PROCEDURAL_DEFAULT_SIZE: usize = 32;

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Everything that can go wrong reading a dataset or writing an image. Each variant names the
/// file (or the spec, or the operation) and says what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder the loader needs is not there; `hint` says how to get it.
    #[error("{}: not found; {hint}", .path.display())]
    Missing { path: PathBuf, hint: String },

    #[error("I/O error on {}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// The file is there but its contents are not what its format says (bad magic number,
    /// wrong dimensions, truncated, corrupt compression, undecodable PNG).
    #[error("{}: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },

    /// An image of a PNG folder is not `expected`×`expected` (ember does not resize).
    #[error("{}: image is {width}x{height}, expected {expected}x{expected} (images are not resized)", .path.display())]
    WrongSize { path: PathBuf, width: u32, height: u32, expected: usize },

    /// A dataset spec that [`Dataset::from_name`] cannot parse.
    #[error("dataset spec {spec:?}: {msg}")]
    Spec { spec: String, msg: String },

    /// A bad argument to a dataset function (index out of range, unsupported channel count…).
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// An image file could not be written (bad tensor shape, PNG encoding failure).
    #[error("{}: {msg}", .path.display())]
    Image { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(DataError::InvalidArgument { op, msg: msg.into() })
}

fn format_error(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Format { path: path.to_path_buf(), msg: msg.into() }
}

/// The DDPM scaling of an 8-bit pixel: 0 → −1, 255 → 1.
pub fn scale_pixel(pixel: u8) -> f32 {
    pixel as f32 / 127.5 - 1.0
}

/// The class names of Fashion-MNIST's labels 0–9 (one word each, so that they can be typed
/// on a command line: `--class sneaker`).
pub const FASHION_MNIST_CLASSES: [&str; 10] = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];
/// The class names of MNIST's labels: the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// The class names of [`procedural`] images: their shape.
pub const PROCEDURAL_CLASSES: [&str; 3] = ["disc", "square", "stripes"];
/// The class names of CIFAR-10's labels 0–9.
pub const CIFAR10_CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The class of each image of a dataset and the classes' names: `classes[i] < names.len()`
/// for every image `i` (checked by [`Labels::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    classes: Vec<usize>,
    names: Vec<String>,
}

impl Labels {
    /// Labels from one class index per image and the names of the classes. Errors: no class,
    /// two classes of one name, or a label outside `0..names.len()` (naming its image).
    pub fn new(classes: Vec<usize>, names: Vec<String>) -> Result<Labels> {
        if names.is_empty() {
            return invalid("Labels::new", "no class names");
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return invalid("Labels::new", format!("class name {name:?} appears twice"));
            }
        }
        if let Some((image, &class)) = classes.iter().enumerate().find(|(_, c)| **c >= names.len()) {
            return invalid("Labels::new", format!("image {image} has label {class}, but there are {} classes (0..{})", names.len(), names.len()));
        }
        Ok(Labels { classes, names })
    }
    /// One class index per image.
    pub fn classes(&self) -> &[usize] {
        &self.classes
    }
    /// The classes' names, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// N square images of C channels, stored image after image in CHW order as f32 in [-1, 1], and
/// their labels when the data has them.
#[derive(Clone)]
pub struct Dataset {
    name: String,
    values: Vec<f32>,
    len: usize,
    channels: usize,
    size: usize,
    labels: Option<Labels>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dataset({:?}: {} images of {}x{}x{}", self.name, self.len, self.channels, self.size, self.size)?;
        match &self.labels {
            Some(labels) => write!(f, ", {} classes)", labels.names.len()),
            None => write!(f, ", unlabelled)"),
        }
    }
}

impl Dataset {
    /// A dataset from values laid out `[N, C, size, size]`. Checks that the values fill whole
    /// images (at least one) and all lie in [-1, 1] (NaN is rejected).
    pub fn from_values(name: impl Into<String>, values: Vec<f32>, channels: usize, size: usize) -> Result<Dataset> {
        let per_image = channels * size * size;
        if per_image == 0 {
            return invalid("Dataset::from_values", format!("channels ({channels}) and size ({size}) must be positive"));
        }
        let len = values.len() / per_image;
        if len == 0 || len * per_image != values.len() {
            return invalid("Dataset::from_values", format!("{} values are not a positive whole number of {channels}x{size}x{size} images", values.len()));
        }
        if let Some(bad) = values.iter().position(|v| !(-1.0..=1.0).contains(v)) {
            return invalid("Dataset::from_values", format!("value {} at index {bad} is outside [-1, 1]", values[bad]));
        }
        Ok(Dataset { name: name.into(), len, values, channels, size, labels: None })
    }

    /// The same images labelled by `labels` (one class per image; see [`Labels::new`]).
    pub fn with_labels(self, labels: Labels) -> Result<Dataset> {
        if labels.classes.len() != self.len {
            return invalid("Dataset::with_labels", format!("{} labels for the {} images of {}", labels.classes.len(), self.len, self.name));
        }
        Ok(Dataset { labels: Some(labels), ..self })
    }

    /// The labels, if the data has them.
    pub fn labels(&self) -> Option<&Labels> {
        self.labels.as_ref()
    }

    /// The classes' names (empty for unlabelled data).
    pub fn class_names(&self) -> &[String] {
        self.labels.as_ref().map_or(&[], |l| &l.names)
    }

    /// The classes of the images `indices` (one per index), or `None` for unlabelled data.
    pub fn batch_labels(&self, indices: &[usize]) -> Result<Option<Vec<usize>>> {
        let Some(labels) = &self.labels else { return Ok(None) };
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return invalid("Dataset::batch_labels", format!("index {bad} is out of range for {} ({} images)", self.name, self.len));
        }
        Ok(Some(indices.iter().map(|&i| labels.classes[i]).collect()))
    }

    /// A dataset from 8-bit pixels laid out `[N, C, size, size]`, scaled with [`scale_pixel`].
    pub fn from_pixels(name: impl Into<String>, pixels: &[u8], channels: usize, size: usize) -> Result<Dataset> {
        Dataset::from_values(name, pixels.iter().map(|&p| scale_pixel(p)).collect(), channels, size)
    }

    /// Parses a dataset spec and loads it, converted to `channels` (see [`Dataset::with_channels`]):
    ///
    /// | spec | dataset |
    /// |---|---|
    /// | `fashion-mnist` | [`load_fashion_mnist`] from [`FASHION_MNIST_DEBIAN_DIR`] |
    /// | `fashion-mnist:DIR`, `mnist:DIR` | [`load_fashion_mnist`] / [`load_mnist`] from `DIR` |
    /// | `cifar10:DIR` | [`load_cifar10`] |
    /// | `png:DIR` | [`load_png_folder`] (one subfolder per class for labels), the size taken from the first image (`split` is ignored) |
    /// | `procedural`, `procedural:N`, `procedural:N:SIZE` | [`procedural`]: N images (default 1000), SIZE×SIZE (default 32) |
    ///
    /// Procedural data uses seed 0 for the train split and 1 for the test split.
    pub fn from_name(spec: &str, split: Split, channels: usize) -> Result<Dataset> {
        let (name, arg) = match spec.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (spec, None),
        };
        let spec_error = |msg: String| DataError::Spec { spec: spec.to_string(), msg };
        let need_dir = |arg: Option<&str>| match arg {
            Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
            _ => Err(spec_error(format!("{name} needs a folder: {name}:DIR"))),
        };
        let dataset = match name {
            "fashion-mnist" => {
                let dir = match arg {
                    None => PathBuf::from(FASHION_MNIST_DEBIAN_DIR),
                    Some(_) => need_dir(arg)?,
                };
                load_fashion_mnist(&dir, split)?
            }
            "mnist" => load_mnist(&need_dir(arg)?, split)?,
            "cifar10" => load_cifar10(&need_dir(arg)?, split)?,
            "png" => {
                let dir = need_dir(arg)?;
                let image = read_png(&png_layout(&dir)?.0[0])?; // at least one image, or an error
                load_png_folder(&dir, image.width as usize, channels)?
            }
            "procedural" => {
                let mut fields = arg.map(|a| a.split(':').collect::<Vec<_>>()).unwrap_or_default();
                if fields.len() > 2 {
                    return Err(spec_error("expected procedural, procedural:N or procedural:N:SIZE".into()));
                }
                fields.resize(2, "");
                let number = |text: &str, default: usize, what: &str| match text {
                    "" => Ok(default),
                    _ => text.parse::<usize>().map_err(|_| spec_error(format!("{what} {text:?} is not a whole number"))),
                };
                let n = number(fields[0], PROCEDURAL_DEFAULT_LEN, "N")?;
                let size = number(fields[1], PROCEDURAL_DEFAULT_SIZE, "SIZE")?;
                let seed = match split {
                    Split::Train => 0,
                    Split::Test => 1,
                };
                procedural(n, channels, size, seed)?
            }
            _ => {
                return Err(spec_error(format!(
                    "unknown dataset {name:?}; expected one of: fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, png:DIR, procedural[:N[:SIZE]]"
                )));
            }
        };
        dataset.with_channels(channels)
    }

    /// A name for logs, e.g. `fashion-mnist train (/usr/share/datasets/fashion-mnist)`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The number of images.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: every constructor requires at least one image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn channels(&self) -> usize {
        self.channels
    }
    /// The side of the (square) images.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Values per image: `channels · size · size`.
    pub fn image_numel(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Image `i` as `[C, H, W]` values in [-1, 1].
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing; [`Dataset::batch`] is the checked way.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_numel();
        &self.values[i * n..(i + 1) * n]
    }

    /// The same images with `channels` channels: gray → RGB repeats the gray value; RGB → gray
    /// is the luminance `0.299 R + 0.587 G + 0.114 B` (ITU-R 601, as PIL's "L").
    pub fn with_channels(self, channels: usize) -> Result<Dataset> {
        let plane = self.size * self.size;
        let values: Vec<f32> = match (self.channels, channels) {
            (from, to) if from == to => return Ok(self),
            (1, 3) => self.values.chunks_exact(plane).flat_map(|gray| gray.iter().chain(gray).chain(gray)).copied().collect(),
            (3, 1) => {
                self.values.chunks_exact(3 * plane).flat_map(|rgb| (0..plane).map(move |p| luminance(rgb[p], rgb[plane + p], rgb[2 * plane + p]))).collect()
            }
            (from, to) => return invalid("Dataset::with_channels", format!("cannot convert {from} channels to {to} (only 1 ↔ 3)")),
        };
        Ok(Dataset { values, channels, ..self })
    }

    /// The images `indices` as one `[B, C, H, W]` f32 tensor, image `b` flipped left–right when
    /// `flip[b]`. `flip` is either empty (no flips) or one flag per index.
    pub fn batch(&self, indices: &[usize], flip: &[bool]) -> Result<Tensor> {
        if !flip.is_empty() && flip.len() != indices.len() {
            let msg = format!("{} flip flags for {} indices (give one per index, or none)", flip.len(), indices.len());
            return invalid("Dataset::batch", msg);
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return invalid("Dataset::batch", format!("index {bad} is out of range for {} ({} images)", self.name, self.len));
        }
        let (n, size) = (self.image_numel(), self.size);
        let mut out = Vec::with_capacity(indices.len() * n);
        for (b, &i) in indices.iter().enumerate() {
            let image = self.image(i);
            if flip.get(b).copied().unwrap_or(false) {
                out.extend(image.chunks_exact(size).flat_map(|row| row.iter().rev()));
            } else {
                out.extend_from_slice(image);
            }
        }
        Tensor::from_vec(out, &[indices.len(), self.channels, size, size], Device::Cpu)
            .map_err(|e| DataError::InvalidArgument { op: "Dataset::batch", msg: e.to_string() })
    }

    /// A random batch of `batch_size` images, drawn uniformly **with replacement** (an image can
    /// appear twice in one batch), each flipped left–right with probability ½ if `random_flip`.
    ///
    /// Draws from `rng`, in this order: `rng.uniform_values(batch_size)` for the indices
    /// (`⌊u · len⌋`), then, only if `random_flip`, `rng.uniform_values(batch_size)` for the flips
    /// (`u < ½`). The uniforms have 24 bits, so for datasets far beyond 2²⁴ images some indices
    /// would be unreachable; every dataset here is much smaller.
    pub fn sample_batch(&self, batch_size: usize, rng: &mut Rng, random_flip: bool) -> Result<Tensor> {
        let (indices, flips) = self.sample_indices(batch_size, rng, random_flip);
        self.batch(&indices, &flips)
    }

    /// The draws of [`Dataset::sample_batch`] (the same, from `rng` in the same order): the
    /// images' indices and their flip flags (empty without `random_flip`), so that a caller can
    /// take the batch and its labels ([`Dataset::batch_labels`]).
    pub fn sample_indices(&self, batch_size: usize, rng: &mut Rng, random_flip: bool) -> (Vec<usize>, Vec<bool>) {
        let indices: Vec<usize> = rng.uniform_values(batch_size).into_iter().map(|u| ((u * self.len as f64) as usize).min(self.len - 1)).collect();
        let flips: Vec<bool> = if random_flip { rng.uniform_values(batch_size).into_iter().map(|u| u < 0.5).collect() } else { vec![] };
        (indices, flips)
    }
}

/// ITU-R 601 luminance; a gray pixel (R = G = B) keeps its value exactly (the weighted sum
/// could be off by an f32 rounding), so gray → RGB → gray is the identity.
fn luminance(r: f32, g: f32, b: f32) -> f32 {
    if r == g && g == b { r } else { (0.299 * r + 0.587 * g + 0.114 * b).clamp(-1.0, 1.0) }
}

// ---- files ----------------------------------------------------------------------------------

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

/// The file's bytes, gunzipped if they start with the gzip magic bytes `1f 8b`.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).map_err(|e| format_error(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

// ---- MNIST / Fashion-MNIST (IDX) --------------------------------------------------------------

/// The magic number of an IDX file of unsigned bytes with 3 dimensions (images × rows × cols).
const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;

/// Parses an IDX image file: `(count, rows, cols, pixels)`. Checks the magic number, that the
/// dimensions are positive, and that the file holds exactly the pixels its header announces.
fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        return Err(format_error(path, format!("truncated: {} bytes, but an IDX image file starts with a 16-byte header", bytes.len())));
    }
    let word = |k: usize| u32::from_be_bytes([bytes[4 * k], bytes[4 * k + 1], bytes[4 * k + 2], bytes[4 * k + 3]]);
    let magic = word(0);
    if magic != IDX_IMAGES_MAGIC {
        let labels = if magic == 0x0000_0801 { " (this is a labels file: use the *-images-idx3-ubyte one)" } else { "" };
        return Err(format_error(
            path,
            format!("bad magic number 0x{magic:08x}, expected 0x{IDX_IMAGES_MAGIC:08x} (IDX unsigned bytes, 3 dimensions){labels}"),
        ));
    }
    let (n, rows, cols) = (word(1) as usize, word(2) as usize, word(3) as usize);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(format_error(path, format!("empty: the header says {n} images of {rows}x{cols}")));
    }
    // three u32 dimensions: their product can pass u64::MAX, not u128::MAX
    let expected = n as u128 * rows as u128 * cols as u128;
    let found = (bytes.len() - 16) as u128;
    if found != expected {
        let what = if found < expected { "truncated" } else { "too long" };
        return Err(format_error(path, format!("{what}: the header says {n} images of {rows}x{cols} = {expected} pixel bytes, the file has {found}")));
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// The IDX images file of `split` in `dir`, plain or `.gz` (the plain one first).
fn find_idx_images(dir: &Path, split: Split, hint: &str) -> Result<PathBuf> {
    let stem = match split {
        Split::Train => "train-images-idx3-ubyte",
        Split::Test => "t10k-images-idx3-ubyte",
    };
    let plain = dir.join(stem);
    let gzipped = dir.join(format!("{stem}.gz"));
    [&plain, &gzipped]
        .into_iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| DataError::Missing { path: gzipped.clone(), hint: format!("looked for {} and {}; {hint}", plain.display(), gzipped.display()) })
}

/// The magic number of an IDX file of unsigned bytes with 1 dimension (the labels).
const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The IDX labels file of `split` in `dir`, plain or `.gz`, if there is one.
fn find_idx_labels(dir: &Path, split: Split) -> Option<PathBuf> {
    let stem = match split {
        Split::Train => "train-labels-idx1-ubyte",
        Split::Test => "t10k-labels-idx1-ubyte",
    };
    [dir.join(stem), dir.join(format!("{stem}.gz"))].into_iter().find(|p| p.is_file())
}

/// Parses an IDX labels file: one byte per image after an 8-byte header (magic, count).
/// Checks the magic number, that the count matches both the file's length and `images` (the
/// images file's count), and that every label is below `classes`.
fn parse_idx_labels(path: &Path, bytes: &[u8], images: usize, classes: usize) -> Result<Vec<usize>> {
    if bytes.len() < 8 {
        return Err(format_error(path, format!("truncated: {} bytes, but an IDX labels file starts with an 8-byte header", bytes.len())));
    }
    let word = |k: usize| u32::from_be_bytes([bytes[4 * k], bytes[4 * k + 1], bytes[4 * k + 2], bytes[4 * k + 3]]);
    let magic = word(0);
    if magic != IDX_LABELS_MAGIC {
        return Err(format_error(path, format!("bad magic number 0x{magic:08x}, expected 0x{IDX_LABELS_MAGIC:08x} (IDX unsigned bytes, 1 dimension)")));
    }
    let count = word(1) as usize;
    if count != bytes.len() - 8 {
        return Err(format_error(path, format!("the header says {count} labels, the file holds {}", bytes.len() - 8)));
    }
    if count != images {
        return Err(format_error(path, format!("{count} labels for {images} images (the images file beside it)")));
    }
    let labels: Vec<usize> = bytes[8..].iter().map(|&b| b as usize).collect();
    if let Some((image, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(format_error(path, format!("image {image} has label {label}, but there are {classes} classes (0..{classes})")));
    }
    Ok(labels)
}

/// 28×28 IDX images padded by 2 pixels of background (pixel 0, i.e. −1) on each side to 32×32,
/// labelled by the labels file of the split when it is there (`classes` names them).
fn load_idx_28(dir: &Path, split: Split, dataset: &str, hint: &str, class_names: &[&str]) -> Result<Dataset> {
    let path = find_idx_images(dir, split, hint)?;
    let (n, rows, cols, pixels) = parse_idx_images(&path, &read_maybe_gzipped(&path)?)?;
    if (rows, cols) != (28, 28) {
        return Err(format_error(&path, format!("images are {rows}x{cols}, expected {dataset}'s 28x28")));
    }
    const PAD: usize = 2;
    let size = 28 + 2 * PAD;
    let mut values = vec![-1.0f32; n * size * size];
    for (image, out) in pixels.chunks_exact(28 * 28).zip(values.chunks_exact_mut(size * size)) {
        for (row, out_row) in image.chunks_exact(28).zip(out.chunks_exact_mut(size).skip(PAD)) {
            for (p, o) in row.iter().zip(&mut out_row[PAD..PAD + 28]) {
                *o = scale_pixel(*p);
            }
        }
    }
    let split_name = if split == Split::Train { "train" } else { "test" };
    let labels = match find_idx_labels(dir, split) {
        Some(labels_path) => {
            let classes = parse_idx_labels(&labels_path, &read_maybe_gzipped(&labels_path)?, n, class_names.len())?;
            Some(Labels { classes, names: class_names.iter().map(|name| name.to_string()).collect() })
        }
        None => None,
    };
    let unlabelled = if labels.is_none() { ", no labels file" } else { "" };
    Ok(Dataset { name: format!("{dataset} {split_name} ({}{unlabelled})", dir.display()), values, len: n, channels: 1, size, labels })
}

/// Fashion-MNIST (60,000 train / 10,000 test images, 1 channel) from `dir`, which holds
/// `train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]`, as 32×32 images (the 28×28
/// originals centered, padded by 2 pixels of background on each side), labelled
/// ([`FASHION_MNIST_CLASSES`]) from `train-labels-idx1-ubyte[.gz]` / `t10k-labels-idx1-ubyte[.gz]`
/// when that file is there (its count and every label checked against the images).
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let hint = format!(
        "install Debian's package (`apt-get install dataset-fashion-mnist`, files in {FASHION_MNIST_DEBIAN_DIR}), or download \
         train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into {}",
        dir.display()
    );
    load_idx_28(dir, split, "fashion-mnist", &hint, &FASHION_MNIST_CLASSES)
}

/// MNIST from `dir`, exactly as [`load_fashion_mnist`] (the same file names and format).
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let hint = format!("download the MNIST IDX files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz into {}", dir.display());
    load_idx_28(dir, split, "mnist", &hint, &MNIST_CLASSES)
}

// ---- CIFAR-10 -------------------------------------------------------------------------------

/// Bytes per CIFAR-10 record: one label byte, then a 3×32×32 image in CHW order.
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// CIFAR-10 (50,000 train / 10,000 test images of 3×32×32) from the binary version's files in
/// `dir` (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`); `dir` may also be the
/// folder that holds the extracted `cifar-10-batches-bin`. Labelled ([`CIFAR10_CLASSES`]) by
/// each record's label byte (checked below 10).
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|k| format!("data_batch_{k}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let nested = dir.join("cifar-10-batches-bin");
    let dir = if !dir.join(&names[0]).is_file() && nested.is_dir() { nested } else { dir.to_path_buf() };
    let (mut pixels, mut classes) = (Vec::new(), Vec::new());
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(DataError::Missing {
                path,
                hint: "download the binary version (cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html \
                       and extract it there"
                    .into(),
            });
        }
        let bytes = read_file(&path)?;
        if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
            return Err(format_error(
                &path,
                format!("{} bytes is not a whole number of {CIFAR_RECORD}-byte records (1 label byte + 3x32x32 pixels)", bytes.len()),
            ));
        }
        for (record, bytes) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
            if bytes[0] as usize >= CIFAR10_CLASSES.len() {
                return Err(format_error(&path, format!("record {record} has label {}, but CIFAR-10 has 10 classes (0..10)", bytes[0])));
            }
            classes.push(bytes[0] as usize);
            pixels.extend_from_slice(&bytes[1..]);
        }
    }
    let split_name = if split == Split::Train { "train" } else { "test" };
    let dataset = Dataset::from_pixels(format!("cifar10 {split_name} ({})", dir.display()), &pixels, 3, 32)?;
    dataset.with_labels(Labels { classes, names: CIFAR10_CLASSES.iter().map(|name| name.to_string()).collect() })
}

// ---- PNG folders ----------------------------------------------------------------------------

/// A decoded 8-bit PNG: `channels` is 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), and
/// `pixels` holds `height` rows of `width · channels` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PngImage {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// The most pixels [`read_png`] decodes from one file (2²⁶, e.g. 8192×8192): a PNG's header can
/// announce any size in a few bytes.
pub const MAX_PNG_PIXELS: u64 = 1 << 26;

/// Decodes a PNG file to 8 bits per sample: palettes and low-bit gray are expanded (and a tRNS
/// chunk becomes alpha), 16-bit samples are cut to their high byte.
pub fn read_png(path: &Path) -> Result<PngImage> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let not_png = |e: png::DecodingError| format_error(path, format!("cannot decode PNG: {e}"));
    let mut reader = decoder.read_info().map_err(not_png)?;
    // the header's size is checked before anything the size of the image is allocated, so a
    // small file announcing a huge image is an error, not an abort
    let (width, height) = (reader.info().width, reader.info().height);
    if width as u64 * height as u64 > MAX_PNG_PIXELS {
        return Err(format_error(path, format!("image is {width}x{height}, more than the {MAX_PNG_PIXELS} pixels ember reads from one PNG")));
    }
    // png 0.18 expands a palette without checking it (and panics on a PLTE chunk that is not
    // whole RGB entries, or has more than 256 of them): checked here first
    if let Some(palette) = reader.info().palette.as_deref()
        && reader.info().color_type == png::ColorType::Indexed
        && (!palette.len().is_multiple_of(3) || palette.len() > 3 * 256)
    {
        return Err(format_error(path, format!("PLTE chunk of {} bytes: not 1 to 256 RGB entries of 3 bytes", palette.len())));
    }
    let size = reader.output_buffer_size().ok_or_else(|| format_error(path, "PNG too large to decode"))?;
    let mut pixels = vec![0u8; size];
    let info = reader.next_frame(&mut pixels).map_err(not_png)?;
    pixels.truncate(info.buffer_size());
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => return Err(format_error(path, format!("unexpected color type {other:?} after expansion"))),
    };
    if info.bit_depth != png::BitDepth::Eight || info.line_size != info.width as usize * channels {
        return Err(format_error(path, format!("unexpected {:?}-bit output after expansion", info.bit_depth)));
    }
    Ok(PngImage { width: info.width, height: info.height, channels, pixels })
}

/// The `.png` files (any case of the extension) in `dir`, sorted by name; at least one.
fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing { path: dir.to_path_buf(), hint: "expected a folder of .png images".into() },
        _ => DataError::Io { path: dir.to_path_buf(), source },
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(format_error(dir, "no .png files in this folder"));
    }
    files.sort();
    Ok(files)
}

/// Every `.png` in `dir` (sorted by file name, so the order is the same on every machine), or
/// with one subfolder per class, every `.png` of each, labelled by its subfolder (see
/// [`png_layout`]); each must be `size`×`size` (no resizing), converted to `channels` (1 or 3): gray → RGB
/// repeats the gray value, RGB → gray is the luminance `0.299 R + 0.587 G + 0.114 B` (not
/// rounded), alpha is dropped (not composited).
pub fn load_png_folder(dir: &Path, size: usize, channels: usize) -> Result<Dataset> {
    if channels != 1 && channels != 3 {
        return invalid("load_png_folder", format!("channels must be 1 or 3, not {channels}"));
    }
    let (files, labels) = png_layout(dir)?;
    let plane = size.saturating_mul(size);
    // `size` may come from an image's header (`Dataset::from_name`): what it asks for is
    // reserved only if it can be had, and is an error otherwise, not an abort
    let mut values = Vec::new();
    let total = files.len().checked_mul(channels).and_then(|n| n.checked_mul(plane));
    if total.is_none_or(|n| values.try_reserve_exact(n).is_err()) {
        let msg = format!("{} images of {channels}x{size}x{size} values do not fit in memory", files.len());
        return Err(DataError::InvalidArgument { op: "load_png_folder", msg });
    }
    for path in &files {
        let image = read_png(path)?;
        if image.width as usize != size || image.height as usize != size {
            return Err(DataError::WrongSize { path: path.clone(), width: image.width, height: image.height, expected: size });
        }
        let pixel = |p: usize, c: usize| scale_pixel(image.pixels[p * image.channels + c]);
        let color = image.channels >= 3;
        for c in 0..channels {
            values.extend((0..plane).map(|p| match (color, channels) {
                (false, _) => pixel(p, 0),
                (true, 3) => pixel(p, c),
                (true, _) => luminance(pixel(p, 0), pixel(p, 1), pixel(p, 2)),
            }));
        }
    }
    Ok(Dataset { name: format!("png ({})", dir.display()), len: files.len(), values, channels, size, labels })
}

/// The images of a PNG folder and their labels: `dir`'s own `.png` files (unlabelled), or, when
/// `dir` holds subfolders with `.png` files in them, one class per subfolder (classes in the
/// order of the subfolders' names, named after them; images in file-name order within each).
/// A folder with both loose images and class subfolders is an error (which class would the
/// loose ones be?).
fn png_layout(dir: &Path) -> Result<(Vec<PathBuf>, Option<Labels>)> {
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing { path: dir.to_path_buf(), hint: "expected a folder of .png images".into() },
        _ => DataError::Io { path: dir.to_path_buf(), source },
    })?;
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() && png_files(&path).is_ok() {
            folders.push(path);
        }
    }
    if folders.is_empty() {
        return Ok((png_files(dir)?, None));
    }
    if let Ok(loose) = png_files(dir) {
        let msg =
            format!("holds both class subfolders and {} loose .png files (e.g. {}); put every image in its class's folder", loose.len(), loose[0].display());
        return Err(format_error(dir, msg));
    }
    folders.sort();
    let (mut files, mut classes, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for (class, folder) in folders.iter().enumerate() {
        let images = png_files(folder)?;
        classes.extend(std::iter::repeat_n(class, images.len()));
        files.extend(images);
        names.push(folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    }
    Ok((files, Some(Labels::new(classes, names)?)))
}

// ---- procedural -----------------------------------------------------------------------------

/// Philox blocks reserved per procedural image (4 uniforms each): image `i` uses the blocks
/// from `i · 8`, so it depends only on `(seed, i)` and a longer dataset extends a shorter one.
const PROCEDURAL_BLOCKS: u64 = 8;

/// `n` images of simple shapes, deterministic in `seed`, with values in [-1, 1]. Each image is
/// a dark background (−1 to −0.7) with one shape of a random bright color (0.2 to 1 per
/// channel): a filled disc or square (center in the middle half, radius 12–30 % of the side),
/// or stripes across the image (period 4–8 pixels, horizontal or vertical, random phase).
/// Easy for a small UNet to learn, varied enough that it is not a constant. Labelled by the
/// shape ([`PROCEDURAL_CLASSES`]), so that class-conditional models can train without a
/// download.
pub fn procedural(n: usize, channels: usize, size: usize, seed: u64) -> Result<Dataset> {
    if n == 0 || size < 4 || !(channels == 1 || channels == 3) {
        return invalid("procedural", format!("need n ≥ 1, size ≥ 4 and 1 or 3 channels (got n={n}, size={size}, channels={channels})"));
    }
    let plane = size * size;
    let mut values = Vec::with_capacity(n * channels * plane);
    let mut classes = Vec::with_capacity(n);
    for i in 0..n {
        let u = Rng { seed, offset: i as u64 * PROCEDURAL_BLOCKS }.uniform_values(4 * PROCEDURAL_BLOCKS as usize);
        let side = size as f64;
        let kind = ((u[0] * 3.0) as usize).min(2);
        classes.push(kind);
        let background = -1.0 + 0.3 * u[1];
        let (cx, cy) = (side * (0.25 + 0.5 * u[5]), side * (0.25 + 0.5 * u[6]));
        let radius = side * (0.12 + 0.18 * u[7]);
        let period = 4.0 + (u[8] * 5.0).floor();
        let (vertical, phase) = (u[9] < 0.5, u[10] * period);
        let inside = |x: usize, y: usize| {
            let (px, py) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            match kind {
                0 => px * px + py * py <= radius * radius,
                1 => px.abs() <= radius && py.abs() <= radius,
                _ => ((if vertical { x } else { y }) as f64 + phase) % period < period / 2.0,
            }
        };
        for c in 0..channels {
            let color = 0.2 + 0.8 * u[2 + c];
            values.extend((0..plane).map(|p| if inside(p % size, p / size) { color } else { background } as f32));
        }
    }
    let labels = Labels { classes, names: PROCEDURAL_CLASSES.iter().map(|name| name.to_string()).collect() };
    Ok(Dataset { name: format!("procedural (n={n}, seed={seed})"), len: n, values, channels, size, labels: Some(labels) })
}
