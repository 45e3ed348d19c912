//! An async client of the socket API: one connection, one request at a time.
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use thiserror::Error;
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixStream,
    },
};

use super::{
    frame::{read_frame, write_frame, Frame},
    ApiError, Method, Request, Response, PROTOCOL_VERSION,
};

/// The largest response line the client reads: a `get` carries a whole
/// document, `counters` a line per rule.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to filterd at {}: {source} (is filterd running? is --socket right?)", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to filterd: {0}")]
    Io(#[from] std::io::Error),
    #[error("filterd closed the connection")]
    Closed,
    #[error("unexpected answer from filterd: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(ApiError),
}

pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    buf: Vec<u8>,
    /// The request id of the stream in progress, if any.
    stream_id: Option<u64>,
}

impl Client {
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Ok(Client::from_stream(stream))
    }

    pub fn from_stream(stream: UnixStream) -> Client {
        let (reader, writer) = stream.into_split();
        Client {
            reader: BufReader::new(reader),
            writer,
            next_id: 1,
            buf: Vec::new(),
            stream_id: None,
        }
    }

    /// Calls `method` and returns its `result`, or the daemon's error as
    /// [`ClientError::Api`].
    pub async fn call(
        &mut self,
        method: Method,
        params: impl Serialize,
    ) -> Result<Value, ClientError> {
        let id = self.send(method, params).await?;
        let response = self.read_response().await?;
        // A request the daemon could not read (over its size limit, say)
        // is answered with a null id: its error is the answer to this one.
        if response.id.is_null() && !response.ok {
            return response.into_result().map_err(ClientError::Api);
        }
        if response.id != id {
            return Err(ClientError::Protocol(format!(
                "response id {} for request id {id}",
                response.id
            )));
        }
        response.into_result().map_err(ClientError::Api)
    }

    /// Writes a request with the next id; that id.
    async fn send(&mut self, method: Method, params: impl Serialize) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let request = Request {
            v: PROTOCOL_VERSION,
            id: Value::from(id),
            method: method.as_str().to_owned(),
            params,
        };
        write_frame(&mut self.writer, &request).await?;
        Ok(id)
    }

    /// [`Client::call`], with the result decoded as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        method: Method,
        params: impl Serialize,
    ) -> Result<T, ClientError> {
        let value = self.call(method, params).await?;
        serde_json::from_value(value)
            .map_err(|e| ClientError::Protocol(format!("{method} result: {e}")))
    }

    /// Calls a streaming method (`flows` with `follow`): its first result.
    /// The following ones come from [`Client::next_in_stream`].
    pub async fn stream(
        &mut self,
        method: Method,
        params: impl Serialize,
    ) -> Result<Option<Value>, ClientError> {
        let id = self.send(method, params).await?;
        self.stream_id = Some(id);
        self.next_in_stream().await
    }

    /// The next result of the stream [`Client::stream`] started; `None`
    /// when the daemon ended it.
    pub async fn next_in_stream(&mut self) -> Result<Option<Value>, ClientError> {
        let response = match self.read_response().await {
            Ok(r) => r,
            Err(ClientError::Closed) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(id) = self.stream_id {
            if response.id != id {
                return Err(ClientError::Protocol(format!(
                    "response id {} in the stream of request id {id}",
                    response.id
                )));
            }
        }
        response.into_result().map(Some).map_err(ClientError::Api)
    }

    /// Sends `line` as it is (a `\n` is added) and reads one response: for
    /// tests and debugging, where the line need not be a valid request.
    pub async fn send_raw(&mut self, line: &[u8]) -> Result<Response, ClientError> {
        self.writer.write_all(line).await?;
        self.writer.write_all(b"\n").await?;
        self.writer.flush().await?;
        self.read_response().await
    }

    /// Reads the next response line.
    pub async fn read_response(&mut self) -> Result<Response, ClientError> {
        match read_frame(&mut self.reader, MAX_RESPONSE_BYTES, &mut self.buf).await? {
            Frame::Eof => Err(ClientError::Closed),
            Frame::TooLarge { len } => {
                Err(ClientError::Protocol(format!("a response of {len} bytes")))
            }
            Frame::Line => {
                serde_json::from_slice(&self.buf).map_err(|e| ClientError::Protocol(e.to_string()))
            }
        }
    }
}
