//! Reading and writing tensors as safetensors files (the format diffusers and PyTorch use).
//! Writes are atomic: a temporary file in the same folder, flushed, then renamed over the
//! target, so a crash never leaves a half-written file behind.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::error::{Result, TensorError};
use crate::storage::CpuStorage;
use crate::{DType, Layout, Tensor};

/// A tensor's bytes ready for serialization.
struct TensorBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn to_safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

fn file_error(path: &Path, msg: impl Into<String>) -> TensorError {
    TensorError::File { path: path.display().to_string(), msg: msg.into() }
}

/// Writes `bytes` to `path` atomically (temporary file + fsync + rename + fsync of the
/// folder): after a crash or a power cut, `path` holds either its old contents or all of
/// `bytes`, and once this returns, the new contents stay.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |source| TensorError::Io { path: path.display().to_string(), source };
    let file_name = path.file_name().ok_or_else(|| file_error(path, "not a file path"))?;
    let temporary = path.with_file_name(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(io_error)?;
    sync_parent_dir(path).map_err(io_error)
}

/// Makes a rename in `path`'s folder durable: the new directory entry is on disk once the
/// folder is fsynced. Where a folder cannot be opened as a file (Windows), or a file system
/// cannot fsync one (EINVAL), there is nothing more to do, and nothing is done.
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Ok(dir) = std::fs::File::open(dir) else { return Ok(()) };
    match dir.sync_all() {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported) => Ok(()),
        other => other,
    }
}

/// Saves named tensors (any dtype, any layout) and string metadata to a safetensors file.
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    let path = path.as_ref();
    let prepared: Vec<(String, TensorBytes)> = tensors
        .iter()
        .map(|(name, t)| {
            let contiguous = t.to_device(crate::Device::Cpu)?.deep_copy()?;
            let bytes = contiguous.storage().cpu("save")?.as_bytes().to_vec();
            Ok((name.to_string(), TensorBytes { dtype: to_safetensors_dtype(t.dtype()), shape: t.shape().to_vec(), bytes }))
        })
        .collect::<Result<_>>()?;
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::tensor::serialize(prepared.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata)).map_err(|e| file_error(path, e.to_string()))?;
    write_atomically(path, &bytes)
}

/// A loaded safetensors file: tensors by name (CPU, their stored dtype) and the metadata.
#[derive(Debug)]
pub struct SafetensorsFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
    /// The file's integer and boolean tensors (labels, step counters…), which ember's tensors
    /// do not hold: their values as i64 (booleans as 0 and 1), with their shapes.
    pub integer_tensors: BTreeMap<String, IntegerTensor>,
}

/// An integer (or boolean) tensor of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegerTensor {
    pub shape: Vec<usize>,
    pub values: Vec<i64>,
}

impl SafetensorsFile {
    /// The tensor `name`, or an error naming the file and the missing tensor.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| TensorError::InvalidArgument {
            op: "safetensors",
            msg: format!("no tensor named {name:?} (have: {:?})", self.tensors.keys().collect::<Vec<_>>()),
        })
    }
}

/// The file names PyTorch weights and checkpoints go by (`torch.save`'s pickles).
const PYTORCH_EXTENSIONS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];

/// What a `torch.save` file starts with, if `head` does: a zip archive (`PK\x03\x04`, the
/// format since PyTorch 1.6) or a bare pickle stream (`\x80` then the protocol, 2 to 5: the
/// legacy format and plain pickles).
fn pytorch_signature(head: &[u8]) -> Option<&'static str> {
    match head {
        [b'P', b'K', 3, 4, ..] => Some("a zip archive, as torch.save writes"),
        [0x80, 2..=5, ..] => Some("a pickle stream"),
        _ => None,
    }
}

/// The refusal of a PyTorch pickle file (`what` it looks like), with the way to convert it.
fn pytorch_pickle_error(path: &Path, what: &str) -> TensorError {
    let name = path.file_name().map_or_else(|| "model.bin".into(), |n| n.to_string_lossy());
    let stem = path.file_stem().map_or_else(|| "model".into(), |n| n.to_string_lossy());
    file_error(
        path,
        format!(
            "this is a PyTorch pickle file ({what}), not safetensors; ember does not load pickles (unpickling can run \
             arbitrary code). Convert it once with PyTorch: python -c \"import torch; from safetensors.torch import save_file; \
             sd = torch.load('{name}', map_location='cpu'); save_file({{k: v.contiguous() for k, v in sd.items()}}, '{stem}.safetensors')\" \
             (a training checkpoint may nest the weights under a key such as 'state_dict'), or for a diffusers model \
             model.save_pretrained(DIR, safe_serialization=True)"
        ),
    )
}

/// Loads every tensor of a safetensors file. Errors name the file and what is wrong.
///
/// A PyTorch pickle (`torch.save`: `.bin`, `.pt`, `.pth`, `.ckpt`, or a file that starts with
/// a zip or pickle signature) is refused with [`TensorError::File`] saying how to convert it.
/// The signature alone is not trusted, since a safetensors file starts with its header's
/// length and a header of 640 bytes reads `\x80\x02`: the file is refused before being read
/// whole when that length cannot fit in it, and otherwise only if it is not valid safetensors.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
    let path = path.as_ref();
    let io_error = |source| TensorError::Io { path: path.display().to_string(), source };
    let mut head = [0u8; 8];
    let (mut file, mut read) = (std::fs::File::open(path).map_err(io_error)?, 0);
    while read < head.len() {
        match std::io::Read::read(&mut file, &mut head[read..]).map_err(io_error)? {
            0 => break,
            n => read += n,
        }
    }
    let file_len = file.metadata().map_err(io_error)?.len();
    if let Some(what) = pytorch_signature(&head[..read])
        && (read < 8 || u64::from_le_bytes(head) > file_len - 8)
    {
        return Err(pytorch_pickle_error(path, what));
    }
    drop(file);
    let bytes = std::fs::read(path).map_err(io_error)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| {
        let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match (pytorch_signature(&bytes), extension) {
            (Some(what), _) => pytorch_pickle_error(path, what),
            (None, Some(ext)) if PYTORCH_EXTENSIONS.contains(&ext.as_str()) => pytorch_pickle_error(path, &format!("a .{ext} file that is not safetensors")),
            _ => file_error(path, format!("not a valid safetensors file: {e}")),
        }
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| file_error(path, e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let (mut tensors, mut integer_tensors) = (BTreeMap::new(), BTreeMap::new());
    for (name, view) in file.tensors() {
        let data = view.data();
        let integers = |values: Vec<i64>| IntegerTensor { shape: view.shape().to_vec(), values };
        let storage = match view.dtype() {
            Dtype::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(data)),
            Dtype::F64 => CpuStorage::F64(bytemuck::pod_collect_to_vec(data)),
            Dtype::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(data)),
            Dtype::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(data)),
            Dtype::I64 => {
                integer_tensors.insert(name, integers(bytemuck::pod_collect_to_vec(data)));
                continue;
            }
            Dtype::I32 => {
                integer_tensors.insert(name, integers(bytemuck::pod_collect_to_vec::<u8, i32>(data).into_iter().map(i64::from).collect()));
                continue;
            }
            Dtype::I16 => {
                integer_tensors.insert(name, integers(bytemuck::pod_collect_to_vec::<u8, i16>(data).into_iter().map(i64::from).collect()));
                continue;
            }
            Dtype::I8 => {
                integer_tensors.insert(name, integers(data.iter().map(|&b| b as i8 as i64).collect()));
                continue;
            }
            Dtype::U8 | Dtype::BOOL => {
                integer_tensors.insert(name, integers(data.iter().map(|&b| b as i64).collect()));
                continue;
            }
            Dtype::U16 => {
                integer_tensors.insert(name, integers(bytemuck::pod_collect_to_vec::<u8, u16>(data).into_iter().map(i64::from).collect()));
                continue;
            }
            Dtype::U32 => {
                integer_tensors.insert(name, integers(bytemuck::pod_collect_to_vec::<u8, u32>(data).into_iter().map(i64::from).collect()));
                continue;
            }
            Dtype::U64 => {
                let values: Vec<u64> = bytemuck::pod_collect_to_vec(data);
                let values = values.into_iter().map(i64::try_from).collect::<std::result::Result<Vec<i64>, _>>();
                let values = values.map_err(|_| file_error(path, format!("tensor {name:?} holds a u64 above i64's range")))?;
                integer_tensors.insert(name, integers(values));
                continue;
            }
            other => return Err(file_error(path, format!("tensor {name:?} has dtype {other:?}, which ember does not read"))),
        };
        let tensor = Tensor::from_storage(crate::storage::Storage::Cpu(storage), Layout::contiguous(view.shape()));
        tensors.insert(name, tensor);
    }
    Ok(SafetensorsFile { tensors, metadata, integer_tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_names_dtypes_values_and_metadata() {
        let dir = std::env::temp_dir().join(format!("ember-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::from_f64(&[1.5, -2.0, 3.25, 4.0, 5.0, 6.0], &[2, 3], DType::F32).unwrap();
        let b = a.to_dtype(DType::BF16).unwrap().permute(&[1, 0]).unwrap(); // strided, bf16
        let metadata = BTreeMap::from([("step".to_string(), "7".to_string())]);
        save_safetensors(&path, &[("a", &a), ("b", &b)], &metadata).unwrap();
        let loaded = load_safetensors(&path).unwrap();
        assert_eq!(loaded.metadata, metadata);
        assert_eq!(loaded.get("a").unwrap().to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
        let lb = loaded.get("b").unwrap();
        assert_eq!((lb.shape(), lb.dtype()), (&[3usize, 2][..], DType::BF16));
        assert_eq!(lb.to_vec_f64(), b.to_vec_f64());
        assert!(loaded.get("c").is_err());
        // integer and boolean tensors (a checkpoint's step counter, labels) load beside the others
        let (labels, step, flags) = ([3i64, -1, 7], [9u32], [1u8, 0]);
        let f = [0.5f32, 2.0];
        let views = [
            ("labels", safetensors::tensor::TensorView::new(Dtype::I64, vec![3], bytemuck::cast_slice(&labels)).unwrap()),
            ("step", safetensors::tensor::TensorView::new(Dtype::U32, vec![1], bytemuck::cast_slice(&step)).unwrap()),
            ("flags", safetensors::tensor::TensorView::new(Dtype::BOOL, vec![2], &flags).unwrap()),
            ("weight", safetensors::tensor::TensorView::new(Dtype::F32, vec![2], bytemuck::cast_slice(&f)).unwrap()),
        ];
        std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
        let loaded = load_safetensors(&path).unwrap();
        assert_eq!(loaded.get("weight").unwrap().to_vec_f64(), [0.5, 2.0]);
        assert_eq!(loaded.integer_tensors["labels"], IntegerTensor { shape: vec![3], values: vec![3, -1, 7] });
        assert_eq!(loaded.integer_tensors["step"].values, [9]);
        assert_eq!(loaded.integer_tensors["flags"].values, [1, 0]);
        assert!(loaded.get("labels").is_err(), "not a float tensor");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load_safetensors(&path), Err(TensorError::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
