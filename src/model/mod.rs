// SPDX-License-Identifier: MPL-2.0
//! The model path: bundles (`bundle`) and scoring on ONNX Runtime (`runtime`).

pub mod bundle;
pub mod runtime;
pub mod stream;
