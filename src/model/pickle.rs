//! A bounded reader for PyTorch checkpoints (`pytorch_model.bin`): the zip archive
//! `torch.save` writes, holding a pickled state dict (`ARCHIVE/data.pkl`) whose tensors point
//! at raw storages (`ARCHIVE/data/KEY`).
//!
//! The file comes from whoever published the model, so nothing in it is trusted. The pickle
//! is read by a small stack machine that knows only the opcodes a state dict uses and runs
//! no code. Its objects live in one arena and refer to each other by index: nesting costs no
//! recursion (a pickle nested 100,000 deep is one more list of indices, never a deep stack),
//! a shared or cyclic object is never copied, and memory grows with the pickle's length,
//! which is capped. Every tensor's shape, offset and strides are checked against the size of
//! its storage entry before anything is allocated, so a shape of 2^60 elements is an error,
//! not an allocation.

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::{DType, Device, Tensor};
use thiserror::Error;

/// The largest `data.pkl` read. A BERT state dict pickles to about 150 bytes per tensor
/// (40 KB for BERT-large); the cap also bounds the reader's memory.
pub const MAX_PICKLE_BYTES: u64 = 4 << 20;

/// The most dimensions a tensor may have (PyTorch's own limit is 64).
pub const MAX_RANK: usize = 64;

#[derive(Debug, Error)]
pub enum PickleError {
    #[error("not a zip archive as torch.save writes ({0})")]
    Zip(#[from] zip::result::ZipError),
    #[error("cannot read the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("no `data.pkl` in the archive (not a PyTorch checkpoint, or the old pre-1.6 format)")]
    NoPickle,
    #[error("data.pkl is larger than {MAX_PICKLE_BYTES} bytes")]
    PickleTooLarge,
    #[error("data.pkl, byte {offset}: {message}")]
    Pickle { offset: usize, message: String },
    #[error("data.pkl does not hold a state dict (a mapping from names to tensors)")]
    NotStateDict,
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
}

type Result<T> = std::result::Result<T, PickleError>;

/// One tensor of the state dict, as the pickle describes it; no data read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    pub name: String,
    pub shape: Vec<usize>,
    /// `None` for a storage type bertcls does not read (an error only if the tensor is used).
    pub dtype: Option<DType>,
    /// The zip entry holding the storage.
    storage: String,
    /// Offset into the storage, in elements.
    offset: usize,
    /// Laid out column-major (a transposed tensor saved as is) rather than row-major.
    fortran_order: bool,
}

/// An opened PyTorch checkpoint: its tensor records, checked against the archive.
pub struct TorchCheckpoint<R> {
    zip: zip::ZipArchive<R>,
    records: Vec<TensorRecord>,
    /// Where each name's record is.
    index: HashMap<String, usize>,
}

impl<R: Read + Seek> TorchCheckpoint<R> {
    /// Reads and checks the archive's directory and state dict; reads no tensor data.
    pub fn new(reader: R) -> Result<Self> {
        let mut zip = zip::ZipArchive::new(reader)?;
        let pickle_name = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .ok_or(PickleError::NoPickle)?
            .into_owned();
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        let mut bytes = Vec::new();
        zip.by_name(&pickle_name)?
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(PickleError::PickleTooLarge);
        }
        let mut records = parse_state_dict(&bytes)?;
        for record in &mut records {
            record.storage = format!("{prefix}data/{}", record.storage);
            check_against_storage(&mut zip, record)?;
        }
        let index = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Ok(Self {
            zip,
            records,
            index,
        })
    }

    pub fn records(&self) -> &[TensorRecord] {
        &self.records
    }

    /// Reads one tensor onto the CPU; its size was checked against its storage on opening.
    pub fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let record = self
            .index
            .get(name)
            .map(|&i| self.records[i].clone())
            .ok_or_else(|| tensor_error(name, "not in the checkpoint"))?;
        let dtype = record
            .dtype
            .ok_or_else(|| tensor_error(name, "its storage type is not supported"))?;
        let elements: usize = record.shape.iter().product();
        let size = dtype.size_in_bytes();
        let mut entry = self.zip.by_name(&record.storage)?;
        std::io::copy(
            &mut (&mut entry).take((record.offset * size) as u64),
            &mut std::io::sink(),
        )?;
        // Grown as the bytes arrive, so that a storage entry declaring more than the file
        // holds costs no more than the file.
        let mut bytes = Vec::new();
        (&mut entry)
            .take((elements * size) as u64)
            .read_to_end(&mut bytes)?;
        if bytes.len() != elements * size {
            return Err(tensor_error(
                name,
                "its storage is shorter than it declares",
            ));
        }
        let tensor = if record.fortran_order && record.shape.len() > 1 {
            let reversed: Vec<usize> = record.shape.iter().rev().copied().collect();
            let axes: Vec<usize> = (0..record.shape.len()).rev().collect();
            Tensor::from_raw_buffer(&bytes, dtype, &reversed, &Device::Cpu)
                .and_then(|t| t.permute(axes))
        } else {
            Tensor::from_raw_buffer(&bytes, dtype, &record.shape, &Device::Cpu)
        };
        tensor.map_err(|e| tensor_error(name, &e.to_string()))
    }
}

/// The tensor records of a pickled state dict (the bytes of `data.pkl`), unchecked
/// against any storage.
pub fn parse_state_dict(pickle: &[u8]) -> Result<Vec<TensorRecord>> {
    let machine = Machine::run(pickle)?;
    let mut records: Vec<TensorRecord> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (name, value) in machine.state_dict()? {
        let Some(record) = machine.tensor_record(&name, value)? else {
            continue;
        };
        // A key set twice keeps its last value, as in Python.
        match positions.get(&name) {
            Some(&i) => records[i] = record,
            None => {
                positions.insert(name, records.len());
                records.push(record);
            }
        }
    }
    Ok(records)
}

fn tensor_error(name: &str, message: &str) -> PickleError {
    PickleError::Tensor {
        name: name.to_string(),
        message: message.to_string(),
    }
}

/// The storage entry must be stored uncompressed (as torch.save writes it, so that its bytes
/// are really in the file) and hold every element the record addresses.
fn check_against_storage<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    record: &TensorRecord,
) -> Result<()> {
    let fail = |message: String| tensor_error(&record.name, &message);
    let entry = zip.by_name(&record.storage).map_err(|_| {
        fail(format!(
            "its storage `{}` is not in the archive",
            record.storage
        ))
    })?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(fail(format!(
            "its storage `{}` is compressed (torch.save stores tensors uncompressed)",
            record.storage
        )));
    }
    let Some(dtype) = record.dtype else {
        return Ok(());
    };
    let available = entry.size() / dtype.size_in_bytes() as u64;
    let needed = record
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .and_then(|n| n.checked_add(record.offset as u64))
        .filter(|&n| n <= available)
        .ok_or_else(|| {
            fail(format!(
                "shape {:?} at offset {} needs more elements than its storage `{}` holds ({available})",
                record.shape, record.offset, record.storage
            ))
        })?;
    // Shapes and offsets within the storage fit in memory, since the storage does.
    usize::try_from(needed).map_err(|_| fail("too large for this machine".into()))?;
    Ok(())
}

/// An index into the machine's arena.
type Id = usize;

/// The pickle objects a state dict is made of; everything else is `Other`.
#[derive(Debug)]
enum Object {
    Int(i64),
    Str(String),
    Global { module: String, name: String },
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Reduce { callable: Id, args: Id },
    PersistentId(Id),
    Other,
}

/// The pickle virtual machine, restricted to data: GLOBAL only names a callable, REDUCE
/// only records the call.
struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    arena: Vec<Object>,
    stack: Vec<Id>,
    /// Stack heights at each MARK, as CPython's unpickler keeps them.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    result: Option<Id>,
}

/// Shared immutable objects: pushing None or an empty tuple allocates nothing.
const OTHER: Id = 0;
const EMPTY_TUPLE: Id = 1;

impl<'a> Machine<'a> {
    fn run(bytes: &'a [u8]) -> Result<Self> {
        let mut m = Self {
            bytes,
            pos: 0,
            arena: vec![Object::Other, Object::Tuple(Vec::new())],
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            result: None,
        };
        while m.result.is_none() {
            let at = m.pos;
            m.step().map_err(|message| PickleError::Pickle {
                offset: at,
                message,
            })?;
        }
        Ok(m)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("unexpected end of data")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le(&mut self, n: usize) -> std::result::Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line")?;
        let line = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos += len + 1;
        Ok(line)
    }

    fn text(&mut self, len: u64) -> std::result::Result<Id, String> {
        let len = usize::try_from(len).map_err(|_| "string too long")?;
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| "string is not UTF-8")?;
        Ok(self.alloc(Object::Str(text.to_string())))
    }

    fn alloc(&mut self, object: Object) -> Id {
        self.arena.push(object);
        self.arena.len() - 1
    }

    fn push(&mut self, object: Object) {
        let id = self.alloc(object);
        self.stack.push(id);
    }

    fn pop(&mut self) -> std::result::Result<Id, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pops past a MARK".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> std::result::Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "empty stack".into())
    }

    fn pop_mark(&mut self) -> std::result::Result<Vec<Id>, String> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(mark))
    }

    fn pairs(items: Vec<Id>) -> std::result::Result<Vec<(Id, Id)>, String> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of items for a dict".into());
        }
        Ok(items.chunks(2).map(|p| (p[0], p[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Id>) -> std::result::Result<(), String> {
        let list = self.top()?;
        match &mut self.arena[list] {
            Object::List(l) => l.extend(items),
            _ => return Err("APPEND to something that is not a list".into()),
        }
        Ok(())
    }

    fn extend_dict(&mut self, pairs: Vec<(Id, Id)>) -> std::result::Result<(), String> {
        let dict = self.top()?;
        match &mut self.arena[dict] {
            Object::Dict(d) => d.extend(pairs),
            _ => return Err("SETITEM on something that is not a dict".into()),
        }
        Ok(())
    }

    fn step(&mut self) -> std::result::Result<(), String> {
        let op = self.u8()?;
        match op {
            0x80 => {
                self.u8()?;
            }
            0x95 => {
                self.take(8)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Object::Global { module, name });
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&self.arena[module], &self.arena[name]) {
                    (Object::Str(module), Object::Str(name)) => {
                        let global = Object::Global {
                            module: module.clone(),
                            name: name.clone(),
                        };
                        self.push(global);
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'q' => {
                let key = u32::from(self.u8()?);
                self.memo.insert(key, self.top()?);
            }
            b'r' => {
                let key = self.le(4)? as u32;
                self.memo.insert(key, self.top()?);
            }
            0x94 => {
                let key = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                self.memo.insert(key, self.top()?);
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    u32::from(self.u8()?)
                } else {
                    self.le(4)? as u32
                };
                let id = *self.memo.get(&key).ok_or("memo key not defined")?;
                self.stack.push(id);
            }
            b'(' => self.marks.push(self.stack.len()),
            b')' => self.stack.push(EMPTY_TUPLE),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = (0..n)
                    .map(|_| self.pop())
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                items.reverse();
                self.push(Object::Tuple(items));
            }
            b']' => self.push(Object::List(Vec::new())),
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Object::List(items));
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b'}' => self.push(Object::Dict(Vec::new())),
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = Self::pairs(items)?;
                self.push(Object::Dict(pairs));
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = Self::pairs(items)?;
                self.extend_dict(pairs)?;
            }
            b'J' => {
                let v = self.le(4)? as u32 as i32;
                self.push(Object::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Object::Int(i64::from(v)));
            }
            b'M' => {
                let v = self.le(2)?;
                self.push(Object::Int(v as i64));
            }
            0x8a => {
                let n = usize::from(self.u8()?);
                if n > 8 {
                    return Err(format!("{n}-byte integer"));
                }
                let raw = self.le(n)?;
                // Two's complement over n bytes, sign-extended to 64 bits.
                let shift = 64 - 8 * n as u32;
                let v = if n == 0 {
                    0
                } else {
                    ((raw << shift) as i64) >> shift
                };
                self.push(Object::Int(v));
            }
            b'G' => {
                self.take(8)?;
                self.stack.push(OTHER);
            }
            b'N' | 0x88 | 0x89 => self.stack.push(OTHER),
            b'X' => {
                let len = self.le(4)?;
                let id = self.text(len)?;
                self.stack.push(id);
            }
            0x8c => {
                let len = u64::from(self.u8()?);
                let id = self.text(len)?;
                self.stack.push(id);
            }
            0x8d => {
                let len = self.le(8)?;
                let id = self.text(len)?;
                self.stack.push(id);
            }
            b'U' | b'C' => {
                let len = usize::from(self.u8()?);
                self.take(len)?;
                self.stack.push(OTHER);
            }
            b'T' | b'B' => {
                let len = self.le(4)? as usize;
                self.take(len)?;
                self.stack.push(OTHER);
            }
            b'Q' => {
                let id = self.pop()?;
                self.push(Object::PersistentId(id));
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let is_ordered_dict = matches!(
                    &self.arena[callable],
                    Object::Global { module, name }
                        if module == "collections" && (name == "OrderedDict" || name == "defaultdict")
                );
                if is_ordered_dict {
                    self.push(Object::Dict(Vec::new()));
                } else {
                    self.push(Object::Reduce { callable, args });
                }
            }
            b'b' => {
                // BUILD sets the attributes of the object below (an OrderedDict's
                // `_metadata`): they are not part of the mapping.
                self.pop()?;
                self.top()?;
            }
            b'.' => {
                let result = self.pop()?;
                self.result = Some(result);
            }
            other => return Err(format!("unsupported opcode 0x{other:02x}")),
        }
        Ok(())
    }

    /// The (name, value) pairs of the pickled state dict.
    fn state_dict(&self) -> Result<Vec<(String, Id)>> {
        let root = self.result.ok_or(PickleError::NotStateDict)?;
        let Object::Dict(items) = &self.arena[root] else {
            return Err(PickleError::NotStateDict);
        };
        Ok(items
            .iter()
            .filter_map(|&(k, v)| match &self.arena[k] {
                Object::Str(name) => Some((name.clone(), v)),
                _ => None,
            })
            .collect())
    }

    fn global(&self, id: Id) -> Option<(&str, &str)> {
        match &self.arena[id] {
            Object::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    fn tuple(&self, id: Id) -> Option<&[Id]> {
        match &self.arena[id] {
            Object::Tuple(items) => Some(items),
            _ => None,
        }
    }

    fn int(&self, id: Id) -> Option<i64> {
        match &self.arena[id] {
            Object::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn str(&self, id: Id) -> Option<&str> {
        match &self.arena[id] {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The call `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` that
    /// a value makes, looking through the wrappers torch adds for parameters and tensor
    /// subclasses; `None` for values that are not tensors.
    fn rebuild_args(&self, value: Id) -> Option<&[Id]> {
        let mut value = value;
        // Each wrapper is one level; two cover every combination torch writes.
        for _ in 0..3 {
            let Object::Reduce { callable, args } = &self.arena[value] else {
                return None;
            };
            let args = self.tuple(*args)?;
            match self.global(*callable)? {
                ("torch._utils", "_rebuild_tensor_v2") => return Some(args),
                ("torch._utils", "_rebuild_parameter") => value = *args.first()?,
                ("torch._tensor", "_rebuild_from_type_v2") => {
                    let inner_callable = *args.first()?;
                    let inner_args = *args.get(2)?;
                    if self.global(inner_callable)? != ("torch._utils", "_rebuild_tensor_v2") {
                        return None;
                    }
                    return self.tuple(inner_args);
                }
                _ => return None,
            }
        }
        None
    }

    fn tensor_record(&self, name: &str, value: Id) -> Result<Option<TensorRecord>> {
        let Some(args) = self.rebuild_args(value) else {
            return Ok(None);
        };
        let fail = |message: &str| tensor_error(name, message);
        if args.len() < 4 {
            return Err(fail("tensor arguments are incomplete"));
        }
        let Object::PersistentId(storage) = &self.arena[args[0]] else {
            return Err(fail("its storage is not a persistent reference"));
        };
        let storage = self
            .tuple(*storage)
            .filter(|s| s.len() >= 3 && self.str(s[0]) == Some("storage"))
            .ok_or_else(|| fail("its storage reference is malformed"))?;
        let storage_type = self
            .global(storage[1])
            .map(|(_, n)| n)
            .ok_or_else(|| fail("its storage type is malformed"))?;
        let key = self
            .str(storage[2])
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| fail("its storage key is malformed"))?;
        let count = |id: Id| {
            self.int(id)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| fail("a size, stride or offset is not a non-negative integer"))
        };
        let list = |id: Id| -> Result<Vec<usize>> {
            let items = self
                .tuple(id)
                .ok_or_else(|| fail("its size or stride is not a tuple"))?;
            if items.len() > MAX_RANK {
                return Err(fail(&format!("more than {MAX_RANK} dimensions")));
            }
            items.iter().map(|&i| count(i)).collect()
        };
        let offset = count(args[1])?;
        let shape = list(args[2])?;
        let stride = list(args[3])?;
        if stride.len() != shape.len() {
            return Err(fail("size and stride differ in length"));
        }
        let fortran_order = if is_dense(&shape, &stride, true) {
            false
        } else if is_dense(&shape, &stride, false) {
            true
        } else {
            return Err(fail(&format!(
                "non-contiguous layout (size {shape:?}, stride {stride:?}) is not supported"
            )));
        };
        let dtype = match storage_type {
            "FloatStorage" => Some(DType::F32),
            "DoubleStorage" => Some(DType::F64),
            "HalfStorage" => Some(DType::F16),
            "BFloat16Storage" => Some(DType::BF16),
            "ByteStorage" => Some(DType::U8),
            "LongStorage" => Some(DType::I64),
            _ => None,
        };
        Ok(Some(TensorRecord {
            name: name.to_string(),
            shape,
            dtype,
            storage: key.to_string(),
            offset,
            fortran_order,
        }))
    }
}

/// Whether `stride` is the dense layout of `shape`, row-major (the last dimension
/// innermost) or column-major. Dimensions of size 1 may have any stride.
fn is_dense(shape: &[usize], stride: &[usize], row_major: bool) -> bool {
    let mut order: Vec<usize> = (0..shape.len()).collect();
    if row_major {
        order.reverse();
    }
    let mut expected: u64 = 1;
    for i in order {
        if shape[i] != 1 && stride[i] as u64 != expected {
            return false;
        }
        expected = expected.saturating_mul(shape[i] as u64);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    /// A state dict of one f32 tensor `t` of `shape` and `stride` over storage `0`.
    fn pickle(shape: &[u8], stride: &[u8]) -> Vec<u8> {
        let tuple = |dims: &[u8]| {
            let mut out = vec![b'('];
            for &d in dims {
                out.extend([b'K', d]);
            }
            out.push(b't');
            out
        };
        let mut p = b"\x80\x02}X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00".to_vec();
        p.extend(tuple(shape));
        p.extend(tuple(stride));
        p.extend(b"\x89NtRs.");
        p
    }

    fn archive(pickle: &[u8], storage: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file("archive/data.pkl", options).unwrap();
        zip.write_all(pickle).unwrap();
        zip.start_file("archive/data/0", options).unwrap();
        zip.write_all(storage).unwrap();
        zip.finish().unwrap().into_inner()
    }

    fn storage() -> Vec<u8> {
        (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect()
    }

    fn read(pickle: &[u8], method: zip::CompressionMethod) -> Result<Tensor> {
        let bytes = archive(pickle, &storage(), method);
        TorchCheckpoint::new(Cursor::new(bytes))?.tensor("t")
    }

    #[test]
    fn reads_row_and_column_major_tensors() {
        let stored = zip::CompressionMethod::Stored;
        let rows = read(&pickle(&[2, 3], &[3, 1]), stored).unwrap();
        assert_eq!(rows.to_vec2::<f32>().unwrap(), [[0., 1., 2.], [3., 4., 5.]]);
        let columns = read(&pickle(&[2, 3], &[1, 2]), stored).unwrap();
        assert_eq!(
            columns.to_vec2::<f32>().unwrap(),
            [[0., 2., 4.], [1., 3., 5.]]
        );
    }

    #[test]
    fn refuses_what_the_storage_cannot_hold() {
        let stored = zip::CompressionMethod::Stored;
        let e = read(&pickle(&[2, 4], &[4, 1]), stored).unwrap_err();
        assert!(e.to_string().contains("needs more elements"), "{e}");
        let e = read(&pickle(&[2, 3], &[1, 1]), stored).unwrap_err();
        assert!(e.to_string().contains("non-contiguous"), "{e}");
        let e = read(&pickle(&[2, 3], &[3, 1]), zip::CompressionMethod::Deflated).unwrap_err();
        assert!(e.to_string().contains("compressed"), "{e}");
    }

    #[test]
    fn malformed_pickles_are_errors() {
        for bad in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02N.",
            b"\x80\x02(t\x85.",
            b"\x80\x02\xff",
        ] {
            assert!(parse_state_dict(bad).is_err(), "{bad:?}");
        }
        let nested: Vec<u8> = [&b"\x80\x02N"[..], &[0x85; 100_000], b"."].concat();
        assert!(matches!(
            parse_state_dict(&nested),
            Err(PickleError::NotStateDict)
        ));
    }
}
