// SPDX-License-Identifier: MPL-2.0
//! KServe v2 over gRPC (`grpc://host:port`): the open inference protocol's
//! `inference.GRPCInferenceService`, on one HTTP/2 channel that multiplexes every stream's
//! calls and reconnects by itself. Tensors travel in `raw_input_contents` and
//! `raw_output_contents` (little-endian bytes).
//!
//! Only the messages and fields this client uses are declared, with the protocol's field
//! numbers; protobuf skips the others. No `.proto` compiler or build step is needed.

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;

use super::{Failure, Metadata, Protocol, ServerAddress, TensorMeta};
use crate::error::{Error, Result};
use crate::runner::Input;
use crate::scorer::Values;

/// Largest message either way: past keys and values of long prompts are large.
const MAX_MESSAGE: usize = 1 << 30;

#[derive(Clone, PartialEq, prost::Message)]
struct ModelRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ModelReadyResponse {
    #[prost(bool, tag = "1")]
    ready: bool,
}

/// A tensor's name, datatype and shape: the first three fields of the protocol's
/// `TensorMetadata`, `InferInputTensor` and `InferOutputTensor` alike.
#[derive(Clone, PartialEq, prost::Message)]
struct Tensor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    datatype: String,
    #[prost(int64, repeated, tag = "3")]
    shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ModelMetadataResponse {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "4")]
    inputs: Vec<Tensor>,
    #[prost(message, repeated, tag = "5")]
    outputs: Vec<Tensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RepositoryIndexRequest {
    #[prost(string, tag = "1")]
    repository_name: String,
    #[prost(bool, tag = "2")]
    ready: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ModelIndex {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RepositoryIndexResponse {
    #[prost(message, repeated, tag = "1")]
    models: Vec<ModelIndex>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RequestedOutput {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ModelInferRequest {
    #[prost(string, tag = "1")]
    model_name: String,
    #[prost(string, tag = "2")]
    model_version: String,
    #[prost(message, repeated, tag = "5")]
    inputs: Vec<Tensor>,
    #[prost(message, repeated, tag = "6")]
    outputs: Vec<RequestedOutput>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    raw_input_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ModelInferResponse {
    #[prost(message, repeated, tag = "5")]
    outputs: Vec<Tensor>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    raw_output_contents: Vec<Vec<u8>>,
}

/// A gRPC client of one server: its own small runtime (the scoring threads block on it) and
/// one lazily connected channel, made anew after a transport failure (as the HTTP client
/// drops its connection) so that no half-broken connection outlives a failure.
pub(super) struct Client {
    runtime: tokio::runtime::Runtime,
    endpoint: tonic::transport::Endpoint,
    channel: std::sync::Mutex<tonic::transport::Channel>,
    timeout: Duration,
}

impl Client {
    pub(super) fn new(address: &ServerAddress, timeout: Duration) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qoe-grpc")
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start the gRPC client: {e}")))?;
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", address.authority()))
                .map_err(|e| Error::Runtime(format!("inference server {}: {e}", address.url())))?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
        // Lazy: a server that is down now is not an error of the start.
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(Client {
            runtime,
            endpoint,
            channel: std::sync::Mutex::new(channel),
            timeout,
        })
    }

    fn reconnect(&self) {
        let _entered = self.runtime.enter();
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = self.endpoint.connect_lazy();
    }

    fn unary<Req, Resp>(
        &self,
        method: &'static str,
        request: Req,
    ) -> std::result::Result<Resp, Failure>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = PathAndQuery::from_static(method);
        let result = self.runtime.block_on(async move {
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| Failure::Transport(format!("{e}")))?;
                grpc.unary(tonic::Request::new(request), path, codec)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(failure)
            };
            match tokio::time::timeout(self.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Transport(format!(
                    "no answer in {} ms",
                    self.timeout.as_millis()
                ))),
            }
        });
        if matches!(result, Err(Failure::Transport(_))) {
            self.reconnect();
        }
        result
    }
}

/// A gRPC status as a failure: the server unreachable, the model unknown, or its answer.
fn failure(status: tonic::Status) -> Failure {
    use tonic::Code;
    let message = status.message().to_owned();
    if message.to_lowercase().contains("unknown model") || status.code() == Code::NotFound {
        return Failure::Missing;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            Failure::Transport(match message.is_empty() {
                true => format!("{:?}", status.code()),
                false => message,
            })
        }
        // A connection error surfaces as Unknown with the transport's words.
        Code::Unknown if message.contains("transport") => Failure::Transport(message),
        code => Failure::Answer(format!("gRPC {code:?}: {message}")),
    }
}

fn tensors(list: Vec<Tensor>) -> Vec<TensorMeta> {
    list.into_iter()
        .map(|t| TensorMeta {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        })
        .collect()
}

impl Protocol for Client {
    fn metadata(&self, model: &str) -> std::result::Result<Metadata, Failure> {
        let r: ModelMetadataResponse = self.unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            ModelRequest {
                name: model.to_owned(),
                version: String::new(),
            },
        )?;
        Ok(Metadata {
            inputs: tensors(r.inputs),
            outputs: tensors(r.outputs),
        })
    }

    fn ready(&self, model: &str) -> std::result::Result<bool, Failure> {
        let r: ModelReadyResponse = self.unary(
            "/inference.GRPCInferenceService/ModelReady",
            ModelRequest {
                name: model.to_owned(),
                version: String::new(),
            },
        )?;
        Ok(r.ready)
    }

    fn repository(&self) -> std::result::Result<Vec<String>, Failure> {
        let r: RepositoryIndexResponse = self.unary(
            "/inference.GRPCInferenceService/RepositoryIndex",
            RepositoryIndexRequest::default(),
        )?;
        Ok(r.models.into_iter().map(|m| m.name).collect())
    }

    fn infer(
        &self,
        model: &str,
        inputs: &[(String, Input)],
        outputs: &[String],
    ) -> std::result::Result<Vec<Values>, Failure> {
        let request = ModelInferRequest {
            model_name: model.to_owned(),
            model_version: String::new(),
            inputs: inputs
                .iter()
                .map(|(name, value)| Tensor {
                    name: name.clone(),
                    datatype: value.datatype().to_owned(),
                    shape: value.shape().to_vec(),
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|name| RequestedOutput { name: name.clone() })
                .collect(),
            raw_input_contents: inputs.iter().map(|(_, v)| v.le_bytes()).collect(),
        };
        let r: ModelInferResponse =
            self.unary("/inference.GRPCInferenceService/ModelInfer", request)?;
        outputs_in_order(r, outputs).map_err(Failure::Answer)
    }
}

/// The response's outputs as `wanted` lists them.
fn outputs_in_order(
    response: ModelInferResponse,
    wanted: &[String],
) -> std::result::Result<Vec<Values>, String> {
    if response.raw_output_contents.len() != response.outputs.len() {
        return Err(format!(
            "{} outputs but {} raw contents",
            response.outputs.len(),
            response.raw_output_contents.len()
        ));
    }
    let mut found: Vec<(String, Values)> = Vec::new();
    for (tensor, raw) in response
        .outputs
        .into_iter()
        .zip(response.raw_output_contents)
    {
        if tensor.datatype != "FP32" {
            return Err(format!(
                "output {} is {}, not FP32",
                tensor.name, tensor.datatype
            ));
        }
        let count: i64 = tensor.shape.iter().product();
        if raw.len() != count as usize * 4 {
            return Err(format!(
                "output {}: {} bytes for shape {:?}",
                tensor.name,
                raw.len(),
                tensor.shape
            ));
        }
        let data = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        found.push((tensor.name, (tensor.shape, data)));
    }
    wanted
        .iter()
        .map(|name| {
            let at = found
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("the response lacks output {name}"))?;
            Ok(found.swap_remove(at).1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn outputs_come_back_in_the_asked_order_and_bad_ones_are_named() {
        let tensor = |name: &str, shape: Vec<i64>| Tensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let response = ModelInferResponse {
            outputs: vec![tensor("b", vec![2]), tensor("a", vec![1, 1])],
            raw_output_contents: vec![bytes(&[1.0, 2.0]), bytes(&[0.5])],
        };
        // Through the wire format and back, as the client reads it.
        let response = ModelInferResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        let out = outputs_in_order(response.clone(), &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            out,
            vec![(vec![1, 1], vec![0.5]), (vec![2], vec![1.0, 2.0])]
        );
        let e = outputs_in_order(response.clone(), &["c".into()]).unwrap_err();
        assert!(e.contains("lacks output c"), "{e}");
        let mut short = response;
        short.raw_output_contents[0].pop();
        assert!(
            outputs_in_order(short, &["b".into()])
                .unwrap_err()
                .contains("7 bytes")
        );
    }

    #[test]
    fn statuses_sort_into_unreachable_missing_and_answers() {
        assert!(matches!(
            failure(tonic::Status::unavailable("connection refused")),
            Failure::Transport(_)
        ));
        assert!(matches!(
            failure(tonic::Status::unavailable(
                "Request for unknown model: 'x' is not found"
            )),
            Failure::Missing
        ));
        assert!(matches!(
            failure(tonic::Status::not_found("x")),
            Failure::Missing
        ));
        assert!(matches!(
            failure(tonic::Status::invalid_argument("bad shape")),
            Failure::Answer(m) if m.contains("bad shape")
        ));
    }
}
