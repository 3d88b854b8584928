//! Memory-mapped safetensors checkpoints, single-file and sharded.
//!
//! The format: 8 bytes little-endian header length `N`, `N` bytes of JSON
//! (`{"__metadata__": {..}, "<name>": {"dtype": "F16", "shape": [..],
//! "data_offsets": [begin, end]}, ..}`), then the data section. The header is
//! parsed and validated here rather than by the `safetensors` crate so that every
//! lie it can tell gets its own message: offsets must tile the data section exactly
//! (no gap, no overlap, nothing past the end), each span must be exactly
//! `elements x dtype size` bytes, and a file shorter than its header says is
//! reported as truncated with both sizes.
//!
//! A [`Checkpoint`] is opened from a Hugging Face model directory
//! (`model.safetensors`, or `model.safetensors.index.json` + shards). Nothing is
//! read until a tensor is loaded; [`Checkpoint::load`] converts the stored
//! F32/F16/BF16 data to the requested [`DType`]:
//!
//! - `f32`, `f16`, `bf16`: converted element-wise (round to nearest even).
//! - `int8`: tensors of rank >= 2 with more than one row are quantised per row
//!   (`scale = absmax(row) / 127`, `q = round(x / scale)`, last dimension = row);
//!   1-D tensors (norm weights, biases) and single-row tensors (`final_logits_bias
//!   [1, V]`) are returned in **f32**, since per-row scaling would cost them their
//!   precision for no memory gain. Which weights to request in int8 (linear layers,
//!   embeddings) and which in f32 (position tables, relative attention bias) is the
//!   model's choice.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use encdec_core::{bf16, f16, DType, HostStorage, Tensor};
use memmap2::Mmap;

use crate::config::{ModelConfig, TensorKind};
use crate::error::{convert_command, ModelError, Result};

/// Largest header we accept (the reference implementation's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Element type of a stored tensor, as spelled in the safetensors header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl StoredDType {
    const ALL: [StoredDType; 15] = [
        StoredDType::Bool,
        StoredDType::U8,
        StoredDType::I8,
        StoredDType::F8E4M3,
        StoredDType::F8E5M2,
        StoredDType::I16,
        StoredDType::U16,
        StoredDType::F16,
        StoredDType::BF16,
        StoredDType::I32,
        StoredDType::U32,
        StoredDType::F32,
        StoredDType::F64,
        StoredDType::I64,
        StoredDType::U64,
    ];

    /// The header spelling (`"F16"`, `"BF16"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StoredDType::Bool => "BOOL",
            StoredDType::U8 => "U8",
            StoredDType::I8 => "I8",
            StoredDType::F8E4M3 => "F8_E4M3",
            StoredDType::F8E5M2 => "F8_E5M2",
            StoredDType::I16 => "I16",
            StoredDType::U16 => "U16",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
            StoredDType::I32 => "I32",
            StoredDType::U32 => "U32",
            StoredDType::F32 => "F32",
            StoredDType::F64 => "F64",
            StoredDType::I64 => "I64",
            StoredDType::U64 => "U64",
        }
    }

    pub fn from_header(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            StoredDType::Bool | StoredDType::U8 | StoredDType::I8 => 1,
            StoredDType::F8E4M3 | StoredDType::F8E5M2 => 1,
            StoredDType::I16 | StoredDType::U16 | StoredDType::F16 | StoredDType::BF16 => 2,
            StoredDType::I32 | StoredDType::U32 | StoredDType::F32 => 4,
            StoredDType::F64 | StoredDType::I64 | StoredDType::U64 => 8,
        }
    }

    /// Whether [`Checkpoint::load`] can read it (F32, F16, BF16).
    pub fn is_loadable(self) -> bool {
        matches!(
            self,
            StoredDType::F32 | StoredDType::F16 | StoredDType::BF16
        )
    }

    fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(StoredDType::F32),
            DType::F16 => Some(StoredDType::F16),
            DType::BF16 => Some(StoredDType::BF16),
            DType::I8 | DType::U32 => None,
        }
    }
}

impl std::fmt::Display for StoredDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    shard: usize,
    /// Absolute byte range in the shard file.
    start: usize,
    end: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> usize {
        self.end - self.start
    }
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    data: ShardData,
    metadata: BTreeMap<String, String>,
}

#[derive(Debug)]
enum ShardData {
    Mapped(Mmap),
    /// Weights generated on load (see [`Checkpoint::random`]): name -> kind.
    Random {
        seed: u64,
        kinds: HashMap<String, TensorKind>,
    },
    #[cfg(test)]
    None,
}

/// The validated header of one safetensors file.
#[derive(Debug)]
struct Header {
    /// Name -> (dtype, shape, absolute start, absolute end).
    tensors: Vec<(String, StoredDType, Vec<usize>, usize, usize)>,
    metadata: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Parses and validates a safetensors header. `buf` is the file's first bytes (at
/// least the header; the whole file when mapped), `file_len` the file's length.
fn parse_header(path: &Path, buf: &[u8], file_len: u64) -> Result<Header> {
    let bad = |reason: String| ModelError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    if file_len < 8 || buf.len() < 8 {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            expected: 8,
            actual: file_len,
        });
    }
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&buf[..8]);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the header length field says {n} bytes (limit {MAX_HEADER_BYTES}); \
             this is not a safetensors file"
        )));
    }
    if 8 + n > file_len {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            expected: 8 + n,
            actual: file_len,
        });
    }
    // n <= MAX_HEADER_BYTES, so it fits in usize.
    let n = n as usize;
    let header_bytes = buf
        .get(8..8 + n)
        .ok_or_else(|| bad("header shorter than its length field".into()))?;
    let text =
        std::str::from_utf8(header_bytes).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;

    let data_start = 8 + n;
    let data_len = file_len - data_start as u64;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            let map: BTreeMap<String, String> = serde_json::from_value(value)
                .map_err(|e| bad(format!("__metadata__ must map strings to strings: {e}")))?;
            metadata = map;
            continue;
        }
        let entry_err = |reason: String| ModelError::BadTensorEntry {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
            entry_err(format!(
                "malformed header entry ({e}); expected {{\"dtype\", \"shape\", \"data_offsets\"}}"
            ))
        })?;
        let dtype =
            StoredDType::from_header(&raw.dtype).ok_or_else(|| ModelError::UnsupportedDType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                dtype: raw.dtype.clone(),
                hint: format!(
                    " (not a safetensors dtype; known: {})",
                    StoredDType::ALL.map(StoredDType::as_str).join(", ")
                ),
            })?;
        if raw.shape.len() > encdec_core::shape::MAX_RANK {
            return Err(entry_err(format!(
                "shape {:?} has {} dimensions; at most {} are supported",
                raw.shape,
                raw.shape.len(),
                encdec_core::shape::MAX_RANK
            )));
        }
        let (begin, end) = raw.data_offsets;
        if begin > end {
            return Err(entry_err(format!(
                "data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        let need = raw
            .shape
            .iter()
            .try_fold(dtype.size_in_bytes() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
            .ok_or_else(|| entry_err(format!("shape {:?} overflows", raw.shape)))?;
        if end - begin != need {
            return Err(entry_err(format!(
                "data_offsets [{begin}, {end}] span {} bytes, but {dtype} {:?} needs {need}",
                end - begin,
                raw.shape
            )));
        }
        entries.push((name, dtype, raw.shape, begin, end));
    }

    // The spans must tile the data section: sorted by offset, each begins where the
    // previous one ended.
    entries.sort_by_key(|e| (e.3, e.4));
    let mut covered = 0u64;
    let mut prev: Option<&str> = None;
    for (name, _, _, begin, end) in &entries {
        if *begin < covered {
            return Err(ModelError::BadTensorEntry {
                path: path.to_path_buf(),
                tensor: name.clone(),
                reason: format!(
                    "data_offsets [{begin}, {end}] overlap tensor {} (which ends at {covered})",
                    prev.unwrap_or("?")
                ),
            });
        }
        if *begin > covered {
            return Err(ModelError::BadTensorEntry {
                path: path.to_path_buf(),
                tensor: name.clone(),
                reason: format!(
                    "data_offsets [{begin}, {end}] leave bytes {covered}..{begin} of the data \
                     section unaccounted for"
                ),
            });
        }
        covered = *end;
        prev = Some(name);
    }
    if covered > data_len {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            expected: data_start as u64 + covered,
            actual: file_len,
        });
    }
    if covered < data_len {
        return Err(bad(format!(
            "the tensors cover {covered} bytes of data but the file holds {data_len} \
             ({} trailing bytes)",
            data_len - covered
        )));
    }
    let tensors = entries
        .into_iter()
        .map(|(name, dt, shape, b, e)| {
            (
                name,
                dt,
                shape,
                data_start + b as usize,
                data_start + e as usize,
            )
        })
        .collect();
    Ok(Header { tensors, metadata })
}

fn open_shard(path: &Path) -> Result<(Shard, Header)> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            expected: 8,
            actual: len,
        });
    }
    // SAFETY: the map is read-only and lives as long as the Checkpoint. Like every
    // mmap-based loader (candle, safetensors) we assume the file is not truncated or
    // rewritten by another process while mapped; that would be a SIGBUS, not UB we
    // can guard against from here.
    let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
    let header = parse_header(path, &mmap, len)?;
    Ok((
        Shard {
            path: path.to_path_buf(),
            data: ShardData::Mapped(mmap),
            metadata: header.metadata.clone(),
        },
        header,
    ))
}

/// The weight-file kinds we recognise but do not read, for the "convert it" error.
fn foreign_checkpoint(files: &[String]) -> Option<(&'static str, &'static str)> {
    // Trainer state files are not model weights.
    let trainer = |f: &str| {
        matches!(
            f,
            "training_args.bin" | "optimizer.pt" | "scheduler.pt" | "scaler.pt"
        ) || (f.starts_with("rng_state") && f.ends_with(".pth"))
    };
    let has = |pred: &dyn Fn(&str) -> bool| files.iter().any(|f| !trainer(f) && pred(f));
    if has(&|f| f == "pytorch_model.bin" || f == "pytorch_model.bin.index.json")
        || has(&|f| f.starts_with("pytorch_model-") && f.ends_with(".bin"))
    {
        return Some(("PyTorch pytorch_model.bin", "pt"));
    }
    if has(&|f| {
        f.ends_with(".pt") || f.ends_with(".pth") || f.ends_with(".ckpt") || f.ends_with(".bin")
    }) {
        return Some(("PyTorch (.pt/.pth/.ckpt/.bin)", "pt"));
    }
    if has(&|f| f == "tf_model.h5" || f.ends_with(".h5") || f.starts_with("model.ckpt")) {
        return Some(("TensorFlow (tf_model.h5)", "tf"));
    }
    if has(&|f| f == "flax_model.msgpack" || f.ends_with(".msgpack")) {
        return Some(("Flax (flax_model.msgpack)", "flax"));
    }
    None
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|source| ModelError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|source| ModelError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[derive(serde::Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// A safetensors checkpoint: one file or a sharded set, memory-mapped.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    index: Option<PathBuf>,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Checkpoint {
    /// Opens the checkpoint of a Hugging Face model directory: `model.safetensors`
    /// if present, else `model.safetensors.index.json` and its shards.
    /// A directory holding only PyTorch/TF/Flax weights gets an error with the
    /// conversion command. A path to a `.safetensors` or `.index.json` file opens that.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        // A path to the weights themselves is accepted too.
        if dir.is_file() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".index.json") {
                return Self::open_index(dir);
            }
            if name.ends_with(".safetensors") {
                return Self::open_file(dir);
            }
        }
        let files = list_dir(dir)?;
        // transformers' order: the single file wins over an index.
        if files.iter().any(|f| f == SINGLE_FILE) {
            return Self::open_file(dir.join(SINGLE_FILE));
        }
        if files.iter().any(|f| f == INDEX_FILE) {
            return Self::open_index(dir.join(INDEX_FILE));
        }
        if let Some((found, from)) = foreign_checkpoint(&files) {
            return Err(ModelError::NotSafetensors {
                dir: dir.to_path_buf(),
                found: found.into(),
                command: convert_command(dir, from),
            });
        }
        let mut present = files
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if files.len() > 12 {
            present.push_str(&format!(", ... ({} files)", files.len()));
        }
        if files.is_empty() {
            present = "none".into();
        }
        Err(ModelError::NoCheckpoint {
            dir: dir.to_path_buf(),
            present,
        })
    }

    /// Opens one safetensors file.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (shard, header) = open_shard(path)?;
        let mut ck = Checkpoint {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            index: None,
            shards: vec![shard],
            tensors: BTreeMap::new(),
        };
        ck.add_header(0, header, path)?;
        Ok(ck)
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json`.
    pub fn open_index(index: impl AsRef<Path>) -> Result<Self> {
        let index = index.as_ref();
        let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
        let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let parsed: IndexFile =
            serde_json::from_str(&text).map_err(|e| ModelError::InvalidJson {
                path: index.to_path_buf(),
                message: e.to_string(),
            })?;
        if parsed.weight_map.is_empty() {
            return Err(ModelError::BadIndex {
                index: index.to_path_buf(),
                reason: "weight_map is empty".into(),
            });
        }
        // Shard file -> first tensor mapped to it (for the error message).
        let mut shard_files: BTreeMap<&str, &str> = BTreeMap::new();
        for (tensor, file) in &parsed.weight_map {
            shard_files.entry(file.as_str()).or_insert(tensor.as_str());
        }
        let mut ck = Checkpoint {
            dir: dir.clone(),
            index: Some(index.to_path_buf()),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        let mut shard_of: HashMap<&str, usize> = HashMap::new();
        for (file, first_tensor) in &shard_files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::MissingShard {
                    index: index.to_path_buf(),
                    shard: (*file).to_string(),
                    tensor: (*first_tensor).to_string(),
                });
            }
            let (shard, header) = open_shard(&path)?;
            let i = ck.shards.len();
            ck.shards.push(shard);
            ck.add_header(i, header, &path)?;
            shard_of.insert(file, i);
        }
        for (tensor, file) in &parsed.weight_map {
            let in_shard = ck.tensors.get(tensor).map(|t| t.shard);
            if in_shard != shard_of.get(file.as_str()).copied() {
                return Err(ModelError::BadIndex {
                    index: index.to_path_buf(),
                    reason: format!(
                        "weight_map puts tensor {tensor} in {file}, but {file} does not hold it"
                    ),
                });
            }
        }
        Ok(ck)
    }

    fn add_header(&mut self, shard: usize, header: Header, path: &Path) -> Result<()> {
        for (name, dtype, shape, start, end) in header.tensors {
            if let Some(prev) = self.tensors.get(&name) {
                return Err(ModelError::BadTensorEntry {
                    path: path.to_path_buf(),
                    tensor: name,
                    reason: format!("also stored in {}", self.shards[prev.shard].path.display()),
                });
            }
            self.tensors.insert(
                name,
                TensorInfo {
                    dtype,
                    shape,
                    shard,
                    start,
                    end,
                },
            );
        }
        Ok(())
    }

    /// The directory the checkpoint was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The index file of a sharded checkpoint.
    pub fn index_file(&self) -> Option<&Path> {
        self.index.as_deref()
    }
    /// The safetensors files, in index order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }
    /// `__metadata__` of the first file (HF writes `{"format": "pt"}`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.shards.first().map(|s| &s.metadata).unwrap_or(&EMPTY)
    }
    /// Stored tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The stored name `name` resolves to, trying Hugging Face's alternate spellings:
    /// the name itself; with the `model.` prefix added or dropped (a base model saved
    /// without its `*ForConditionalGeneration` wrapper); and for `[model.]shared.weight`,
    /// the tied copies `encoder.embed_tokens.weight` / `decoder.embed_tokens.weight`
    /// under the same prefix. `lm_head.weight` is never aliased: whether it is tied is
    /// the config's business.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        self.candidates(name)
            .into_iter()
            .find_map(|c| self.tensors.get_key_value(&c).map(|(k, _)| k.as_str()))
    }

    fn candidates(&self, name: &str) -> Vec<String> {
        let toggle = |n: &str| match n.strip_prefix("model.") {
            Some(rest) => rest.to_string(),
            None => format!("model.{n}"),
        };
        let mut c = vec![name.to_string(), toggle(name)];
        if let Some(prefix) = name.strip_suffix("shared.weight") {
            for alt in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
                let a = format!("{prefix}{alt}");
                let t = toggle(&a);
                c.push(a);
                c.push(t);
            }
        }
        c
    }

    /// Whether `name` (or one of its alternate spellings, see [`Checkpoint::resolve`]) is stored.
    pub fn has(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// The header entry of `name` (alternate spellings resolved).
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        match self.resolve(name) {
            Some(k) => Ok(&self.tensors[k]),
            None => Err(self.missing(name)),
        }
    }
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.info(name)?.shape)
    }
    pub fn stored_dtype(&self, name: &str) -> Result<StoredDType> {
        Ok(self.info(name)?.dtype)
    }
    /// The file that stores `name`.
    pub fn file_of(&self, name: &str) -> Result<&Path> {
        Ok(&self.shards[self.info(name)?.shard].path)
    }

    pub(crate) fn searched(&self) -> String {
        let mut s: Vec<String> = self
            .shards
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        if s.len() > 4 {
            let n = s.len();
            s.truncate(3);
            s.push(format!("... ({n} shards)"));
        }
        s.join(", ")
    }

    pub(crate) fn missing(&self, name: &str) -> ModelError {
        let tried = self.candidates(name);
        let note = if tried.len() > 1 {
            format!(" (also tried {})", tried[1..].join(", "))
        } else {
            String::new()
        };
        ModelError::MissingTensor {
            name: name.to_string(),
            searched: self.searched(),
            note,
        }
    }

    /// The raw little-endian bytes of `name`.
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        let shard = &self.shards[info.shard];
        let map: &[u8] = match &shard.data {
            ShardData::Mapped(m) => m,
            _ => {
                return Err(ModelError::UnsupportedTarget {
                    tensor: name.to_string(),
                    dtype: DType::F32,
                    reason: format!("{} has no stored bytes", shard.path.display()),
                })
            }
        };
        map.get(info.start..info.end)
            .ok_or_else(|| ModelError::Truncated {
                path: shard.path.clone(),
                expected: info.end as u64,
                actual: map.len() as u64,
            })
    }

    /// Loads `name` as a host tensor of `dtype` (see the module docs for int8).
    pub fn load(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let key = self.resolve(name).ok_or_else(|| self.missing(name))?;
        let info = &self.tensors[key];
        let shard = &self.shards[info.shard];
        if !info.dtype.is_loadable() {
            return Err(ModelError::UnsupportedDType {
                path: shard.path.clone(),
                tensor: key.to_string(),
                dtype: info.dtype.to_string(),
                hint: " (loadable: F32, F16, BF16)".into(),
            });
        }
        if let ShardData::Random { seed, kinds } = &shard.data {
            let kind = kinds.get(key).copied().unwrap_or(TensorKind::Linear);
            let x = random_values(*seed, key, kind, info.elem_count());
            return convert_f32(key, x, &info.shape, dtype);
        }
        let bytes = self.raw_bytes(key)?;
        convert(key, info.dtype, bytes, &info.shape, dtype)
    }

    /// A checkpoint of random weights with exactly the tensors `cfg` requires (for
    /// `encdec bench --random-weights`): nothing is allocated until a tensor is
    /// loaded, and each tensor's values depend only on `seed` and its name. Linear
    /// weights, embeddings, position tables and relative biases are uniform with
    /// std 0.02, norm weights 1, biases and `final_logits_bias` 0.
    pub fn random(cfg: &ModelConfig, seed: u64) -> Self {
        let mut tensors = BTreeMap::new();
        let mut kinds = HashMap::new();
        for spec in cfg.tensor_specs().into_iter().filter(|s| s.required) {
            let n = spec.shape.iter().product::<usize>();
            tensors.insert(
                spec.name.clone(),
                TensorInfo {
                    dtype: StoredDType::F32,
                    shape: spec.shape,
                    shard: 0,
                    start: 0,
                    end: 4 * n,
                },
            );
            kinds.insert(spec.name, spec.kind);
        }
        Checkpoint {
            dir: PathBuf::new(),
            index: None,
            shards: vec![Shard {
                path: PathBuf::from(format!(
                    "<random weights for {}, seed {seed}>",
                    cfg.architecture()
                )),
                data: ShardData::Random { seed, kinds },
                metadata: BTreeMap::new(),
            }],
            tensors,
        }
    }
}

fn to_f32(stored: StoredDType, bytes: &[u8]) -> Vec<f32> {
    match stored {
        StoredDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StoredDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        StoredDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        // Callers check `is_loadable` first.
        _ => Vec::new(),
    }
}

fn bits16(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// Whether `load(.., DType::I8)` quantises a tensor of this shape (else it stays f32).
pub fn quantises_to_int8(shape: &[usize]) -> bool {
    let cols = shape.last().copied().unwrap_or(0);
    let rows = shape
        .iter()
        .product::<usize>()
        .checked_div(cols)
        .unwrap_or(0);
    shape.len() >= 2 && rows > 1
}

/// Per-row absmax int8 quantisation of a row-major `[rows, cols]` matrix:
/// `scale[r] = max|x[r, :]| / 127`, `q = round(x / scale)` in -127..=127. An all-zero
/// row gets scale 0.
pub fn quantize_rows_absmax(data: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = cols.max(1);
    let mut q = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(data.len() / cols);
    for row in data.chunks(cols) {
        let amax = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        scales.push(scale);
        q.extend(
            row.iter()
                .map(|&x| (x * inv).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// splitmix64: a fast, well-mixed generator for reproducible random weights.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_values(seed: u64, name: &str, kind: TensorKind, n: usize) -> Vec<f32> {
    match kind {
        TensorKind::Norm if name.ends_with(".bias") => vec![0.0; n],
        TensorKind::Norm => vec![1.0; n],
        TensorKind::Bias | TensorKind::LogitsBias => vec![0.0; n],
        _ => {
            // FNV-1a of the name, so every tensor gets its own stream.
            let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            // Uniform on [-a, a] with std 0.02: a = 0.02 * sqrt(3).
            let a = 0.02f32 * 3f32.sqrt();
            (0..n)
                .map(|_| {
                    let u = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                    (2.0 * u - 1.0) * a
                })
                .collect()
        }
    }
}

fn convert_f32(name: &str, x: Vec<f32>, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let host = match dtype {
        DType::F32 => HostStorage::F32(x),
        DType::F16 => HostStorage::F16(x.into_iter().map(f16::from_f32).collect()),
        DType::BF16 => HostStorage::BF16(x.into_iter().map(bf16::from_f32).collect()),
        DType::I8 if quantises_to_int8(shape) => {
            let cols = shape.last().copied().unwrap_or(1);
            let (data, scales) = quantize_rows_absmax(&x, cols);
            return Ok(Tensor::from_i8(data, scales, shape.to_vec())?);
        }
        DType::I8 => HostStorage::F32(x),
        DType::U32 => {
            return Err(ModelError::UnsupportedTarget {
                tensor: name.to_string(),
                dtype,
                reason: "weights load as f32, f16, bf16 or int8".into(),
            })
        }
    };
    Ok(Tensor::from_host(host, shape.to_vec())?)
}

fn convert(
    name: &str,
    stored: StoredDType,
    bytes: &[u8],
    shape: &[usize],
    dtype: DType,
) -> Result<Tensor> {
    // Same-type 16-bit loads copy the bits; everything else goes through f32.
    let host = match (dtype, stored) {
        (DType::F16, StoredDType::F16) => {
            HostStorage::F16(bits16(bytes).map(f16::from_bits).collect())
        }
        (DType::BF16, StoredDType::BF16) => {
            HostStorage::BF16(bits16(bytes).map(bf16::from_bits).collect())
        }
        _ => return convert_f32(name, to_f32(stored, bytes), shape, dtype),
    };
    Ok(Tensor::from_host(host, shape.to_vec())?)
}

/// Serialises host tensors (F32/F16/BF16; other dtypes are converted to F32) into
/// safetensors bytes, names sorted, header padded to 8 bytes, with HF's
/// `{"format": "pt"}` metadata. Used for fixtures and tests.
pub fn serialize(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(&str, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(n, _)| *n);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in sorted {
        let t = t.contiguous()?;
        let (o, n) = (t.offset(), t.elem_count());
        let begin = data.len();
        let stored = match t.host()? {
            HostStorage::F16(v) => {
                for x in &v[o..o + n] {
                    data.extend_from_slice(&x.to_bits().to_le_bytes());
                }
                StoredDType::F16
            }
            HostStorage::BF16(v) => {
                for x in &v[o..o + n] {
                    data.extend_from_slice(&x.to_bits().to_le_bytes());
                }
                StoredDType::BF16
            }
            _ => {
                for x in t.to_f32_vec()? {
                    data.extend_from_slice(&x.to_le_bytes());
                }
                StoredDType::F32
            }
        };
        header.insert(
            (*name).to_string(),
            serde_json::json!({
                "dtype": stored.as_str(),
                "shape": t.dims(),
                "data_offsets": [begin, data.len()],
            }),
        );
    }
    let mut h =
        serde_json::to_vec(&header).map_err(|e| encdec_core::Error::Invalid(e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes [`serialize`]d tensors to `path`.
pub fn save(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let bytes = serialize(tensors)?;
    std::fs::write(path, bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The stored dtype `dtype` is saved as by [`serialize`].
pub fn stored_dtype_of(dtype: DType) -> StoredDType {
    StoredDType::of(dtype).unwrap_or(StoredDType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_roundtrips_within_half_a_step() {
        let x = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, 2.0, -3.0];
        let (q, s) = quantize_rows_absmax(&x, 3);
        assert_eq!(q[1], -127);
        assert_eq!(s[1], 0.0);
        assert_eq!(&q[3..6], &[0, 0, 0]);
        for (i, &v) in x.iter().enumerate() {
            let back = q[i] as f32 * s[i / 3];
            assert!(
                (back - v).abs() <= s[i / 3] * 0.5 + 1e-7,
                "{i}: {back} vs {v}"
            );
        }
    }

    #[test]
    fn shared_weight_resolves_to_its_tied_copies() {
        let ck = Checkpoint {
            dir: PathBuf::new(),
            index: None,
            shards: vec![Shard {
                path: PathBuf::from("x.safetensors"),
                data: ShardData::None,
                metadata: BTreeMap::new(),
            }],
            tensors: [("encoder.embed_tokens.weight", 0)]
                .into_iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        TensorInfo {
                            dtype: StoredDType::F32,
                            shape: vec![1],
                            shard: s,
                            start: 0,
                            end: 4,
                        },
                    )
                })
                .collect(),
        };
        assert_eq!(
            ck.resolve("model.shared.weight"),
            Some("encoder.embed_tokens.weight")
        );
        assert_eq!(
            ck.resolve("shared.weight"),
            Some("encoder.embed_tokens.weight")
        );
        assert_eq!(ck.resolve("lm_head.weight"), None);
        assert!(ck.has("model.encoder.embed_tokens.weight"));
    }
}
