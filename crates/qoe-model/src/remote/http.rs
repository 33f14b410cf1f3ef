// SPDX-License-Identifier: MPL-2.0
//! KServe v2 over HTTP/1.1 (`http://host:port`): keep-alive connections from a small pool,
//! infer requests and responses in Triton's binary tensor extension (a JSON header, then the
//! tensors' raw little-endian bytes), JSON `data` answers read too.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use super::{Failure, Metadata, Protocol, ServerAddress};
use crate::runner::Input;
use crate::scorer::Values;

/// Largest response header block and body this client accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 30;

/// An HTTP response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server's error text: KServe v2's `{"error": …}`, or the body.
    fn error_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().chars().take(300).collect())
    }
}

/// An HTTP client of one server.
pub(super) struct Client {
    address: ServerAddress,
    timeout: Duration,
    idle: Mutex<Vec<BufReader<TcpStream>>>,
}

impl Client {
    pub(super) fn new(address: ServerAddress, timeout: Duration) -> Client {
        Client {
            address,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One request on a pooled connection, or a fresh one when the pooled one was closed;
    /// a status other than 200 is an answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let result = match pooled {
            Some(conn) => match self.exchange(conn, method, path, headers, body) {
                Ok(r) => Ok(r),
                // A keep-alive connection the server closed: once more on a new one.
                Err(_) => self
                    .connect()
                    .and_then(|c| self.exchange(c, method, path, headers, body)),
            },
            None => self
                .connect()
                .and_then(|c| self.exchange(c, method, path, headers, body)),
        };
        let (response, conn) = result.map_err(Failure::Transport)?;
        if let Some(conn) = conn {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        match response.status {
            200 => Ok(response),
            // Triton answers 400 for an unknown model; KServe 404.
            400 | 404
                if response
                    .error_text()
                    .to_lowercase()
                    .contains("unknown model")
                    || response.status == 404 =>
            {
                Err(Failure::Missing)
            }
            status => Err(Failure::Answer(format!(
                "HTTP {status}: {}",
                response.error_text()
            ))),
        }
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, String> {
        let addrs = (self.address.host.as_str(), self.address.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.address.host))?;
        let mut last = format!("{} resolves to no address", self.address.host);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    stream.set_read_timeout(Some(self.timeout)).ok();
                    stream.set_write_timeout(Some(self.timeout)).ok();
                    return Ok(BufReader::new(stream));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    /// Sends one request and reads its response; gives the connection back when it may be
    /// used again.
    fn exchange(
        &self,
        mut conn: BufReader<TcpStream>,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(Response, Option<BufReader<TcpStream>>), String> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.address.authority(),
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("sending {path}: {e}"))?;
        let response = read_response(&mut conn).map_err(|e| format!("reading {path}: {e}"))?;
        let keep = !response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Ok((response, keep.then_some(conn)))
    }
}

impl Protocol for Client {
    fn metadata(&self, model: &str) -> Result<Metadata, Failure> {
        let r = self.call("GET", &format!("/v2/models/{model}"), &[], &[])?;
        serde_json::from_slice(&r.body)
            .map_err(|e| Failure::Answer(format!("metadata is not KServe v2 JSON: {e}")))
    }

    fn ready(&self, model: &str) -> Result<bool, Failure> {
        match self.call("GET", &format!("/v2/models/{model}/ready"), &[], &[]) {
            Ok(_) => Ok(true),
            Err(Failure::Answer(_)) => Ok(false),
            Err(f) => Err(f),
        }
    }

    fn repository(&self) -> Result<Vec<String>, Failure> {
        let r = self.call("POST", "/v2/repository/index", &[], b"{}")?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&r.body)
            .map_err(|e| Failure::Answer(format!("repository index is not JSON: {e}")))?;
        Ok(list
            .iter()
            .filter_map(|m| Some(m.get("name")?.as_str()?.to_owned()))
            .collect())
    }

    fn infer(
        &self,
        model: &str,
        inputs: &[(String, Input)],
        outputs: &[String],
    ) -> Result<Vec<Values>, Failure> {
        let mut body = serde_json::json!({
            "inputs": inputs.iter().map(|(name, value)| serde_json::json!({
                "name": name,
                "shape": value.shape(),
                "datatype": value.datatype(),
                "parameters": {"binary_data_size": value.byte_len()},
            })).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|name| serde_json::json!({
                "name": name, "parameters": {"binary_data": true},
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let json_length = body.len();
        body.reserve(inputs.iter().map(|(_, v)| v.byte_len()).sum());
        for (_, value) in inputs {
            value.append_le_bytes(&mut body);
        }
        let response = self.call(
            "POST",
            &format!("/v2/models/{model}/infer"),
            &[
                ("Content-Type", "application/octet-stream".to_owned()),
                ("Inference-Header-Content-Length", json_length.to_string()),
            ],
            &body,
        )?;
        parse_outputs(&response, outputs).map_err(Failure::Answer)
    }
}

/// Reads a status line, headers and a body (Content-Length or chunked).
fn read_response(conn: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    let mut head_bytes = 0;
    let mut read_line =
        |conn: &mut BufReader<TcpStream>, line: &mut String| -> std::io::Result<()> {
            line.clear();
            let n = conn.read_line(line)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            head_bytes += n;
            if head_bytes > MAX_HEAD {
                return Err(invalid("response head too large".into()));
            }
            Ok(())
        };
    read_line(conn, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {:?}", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        read_line(conn, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid(format!("bad chunk size {:?}", size.trim())))?;
            if body.len() + n > MAX_BODY {
                return Err(invalid("response body too large".into()));
            }
            let start = body.len();
            body.resize(start + n, 0);
            conn.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            conn.read_line(&mut crlf)?;
            if n == 0 {
                break;
            }
        }
    } else {
        let length = match response.header("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(invalid("response body too large".into()));
        }
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    }
    Ok(Response { body, ..response })
}

/// The outputs of an infer response, in `wanted` order: binary (Triton's extension) or JSON.
fn parse_outputs(
    response: &Response,
    wanted: &[String],
) -> std::result::Result<Vec<Values>, String> {
    let json_length = match response.header("inference-header-content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("bad Inference-Header-Content-Length {v:?}"))?,
        None => response.body.len(),
    };
    if json_length > response.body.len() {
        return Err("the response is shorter than its header says".into());
    }
    let header: serde_json::Value = serde_json::from_slice(&response.body[..json_length])
        .map_err(|e| format!("the response is not KServe v2 JSON: {e}"))?;
    let outputs = header
        .get("outputs")
        .and_then(|o| o.as_array())
        .ok_or("the response has no outputs")?;
    let mut offset = json_length;
    let mut by_name: HashMap<String, Values> = HashMap::new();
    for output in outputs {
        let name = output
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_owned();
        let datatype = output
            .get("datatype")
            .and_then(|d| d.as_str())
            .unwrap_or("");
        if datatype != "FP32" {
            return Err(format!("output {name} is {datatype}, not FP32"));
        }
        let shape: Vec<i64> = output
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|d| d.as_i64()).collect())
            .unwrap_or_default();
        let count: i64 = shape.iter().product();
        let data: Vec<f32> = match output
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(|s| s.as_u64())
        {
            Some(size) => {
                let size = size as usize;
                if size != count as usize * 4 || offset + size > response.body.len() {
                    return Err(format!("output {name}: {size} bytes for shape {shape:?}"));
                }
                let bytes = &response.body[offset..offset + size];
                offset += size;
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            None => output
                .get("data")
                .and_then(|d| d.as_array())
                .ok_or_else(|| format!("output {name} has no data"))?
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|v| v as f32)
                        .ok_or_else(|| format!("output {name}: a value is not a number"))
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        if data.len() != count as usize {
            return Err(format!(
                "output {name}: {} values for shape {shape:?}",
                data.len()
            ));
        }
        by_name.insert(name, (shape, data));
    }
    wanted
        .iter()
        .map(|name| {
            by_name
                .remove(name)
                .ok_or_else(|| format!("the response lacks output {name}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)], body: Vec<u8>) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
        }
    }

    #[test]
    fn binary_and_json_outputs_come_back_in_the_manifest_order() {
        let json = br#"{"outputs":[{"name":"b","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        for v in [1.5f32, -2.0, 3.25] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let length = json.len().to_string();
        let r = response(&[("Inference-Header-Content-Length", &length)], body);
        let out = parse_outputs(&r, &["a".into(), "b".into()]).unwrap();
        assert_eq!(out, vec![(vec![1], vec![3.25]), (vec![2], vec![1.5, -2.0])]);
        let r = response(
            &[],
            br#"{"outputs":[{"name":"a","datatype":"FP32","shape":[1,2],"data":[0.5,1]}]}"#
                .to_vec(),
        );
        assert_eq!(
            parse_outputs(&r, &["a".into()]).unwrap(),
            vec![(vec![1, 2], vec![0.5, 1.0])]
        );
        let e = parse_outputs(&r, &["a".into(), "c".into()]).unwrap_err();
        assert!(e.contains("lacks output c"), "{e}");
        let r = response(
            &[],
            br#"{"outputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[1]}]}"#.to_vec(),
        );
        assert!(
            parse_outputs(&r, &["a".into()])
                .unwrap_err()
                .contains("INT64")
        );
        let r = response(&[("Inference-Header-Content-Length", "20")], br#"{"outputs":[{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}"#.to_vec());
        assert!(parse_outputs(&r, &["a".into()]).is_err());
    }
}
