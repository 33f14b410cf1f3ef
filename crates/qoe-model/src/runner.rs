// SPDX-License-Identifier: MPL-2.0
//! Where a bundle's graphs run: a local ONNX Runtime session, or a model on a KServe v2
//! inference server ([`crate::remote`]). The scoring code above hands every graph plain
//! tensors and gets the manifest's outputs back in the manifest's order, whichever it is.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::bundle::PartName;
use crate::error::{Error, Result};
use crate::scorer::Values;

/// Every graph of a bundle, by part, each on its runner.
pub type Graphs = std::collections::HashMap<PartName, Box<dyn GraphRunner>>;

/// One input tensor of a graph, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    F32 { shape: Vec<i64>, data: Vec<f32> },
    I64 { shape: Vec<i64>, data: Vec<i64> },
}

impl Input {
    pub fn shape(&self) -> &[i64] {
        match self {
            Input::F32 { shape, .. } | Input::I64 { shape, .. } => shape,
        }
    }

    /// The KServe v2 datatype word.
    pub fn datatype(&self) -> &'static str {
        match self {
            Input::F32 { .. } => "FP32",
            Input::I64 { .. } => "INT64",
        }
    }

    /// The size of the values in bytes.
    pub fn byte_len(&self) -> usize {
        match self {
            Input::F32 { data, .. } => data.len() * 4,
            Input::I64 { data, .. } => data.len() * 8,
        }
    }

    /// Appends the values as little-endian bytes (KServe v2's binary tensor layout).
    pub fn append_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Input::F32 { data, .. } => out.extend(data.iter().flat_map(|v| v.to_le_bytes())),
            Input::I64 { data, .. } => out.extend(data.iter().flat_map(|v| v.to_le_bytes())),
        }
    }

    /// The values as little-endian bytes.
    pub fn le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        self.append_le_bytes(&mut out);
        out
    }

    fn into_ort(self) -> ort::Result<ort::value::DynValue> {
        match self {
            Input::F32 { shape, data } => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
            Input::I64 { shape, data } => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
        }
    }
}

/// Runs one graph of a bundle. Implementations are shared by every stream of a scorer.
pub trait GraphRunner: Send + Sync {
    /// Runs the graph on `inputs` (named as the manifest names them); returns every output
    /// the manifest declares, in its order.
    fn run(&self, inputs: Vec<(String, Input)>) -> Result<Vec<Values>>;
}

/// A graph on a local ONNX Runtime session; the lock lets one stream's encoder and
/// another's decoder run at the same time.
pub struct LocalGraph {
    pub(crate) name: PartName,
    pub(crate) session: Mutex<Session>,
}

impl GraphRunner for LocalGraph {
    fn run(&self, inputs: Vec<(String, Input)>) -> Result<Vec<Values>> {
        let inputs = inputs
            .into_iter()
            .map(|(n, v)| Ok((n, v.into_ort().map_err(|e| Error::graph(&self.name, e))?)))
            .collect::<Result<Vec<_>>>()?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(inputs)
            .map_err(|e| Error::graph(&self.name, e))?;
        (0..outputs.len())
            .map(|k| {
                let (shape, data) = outputs[k]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| Error::graph(&self.name, e))?;
                Ok((shape.to_vec(), data.to_vec()))
            })
            .collect()
    }
}
