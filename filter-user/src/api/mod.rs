//! The local socket API between `filterd` and `filterctl` (SPEC §5).
//!
//! Newline-delimited JSON over a Unix stream socket: one request per line,
//! one response per line. Every message carries the protocol version `v`;
//! a response echoes the request's `id`. The wire format, with an example
//! per method, is in `docs/API.md`.
//!
//! ```text
//! → {"v":1,"id":1,"method":"status","params":{}}
//! ← {"v":1,"id":1,"ok":true,"result":{...}}
//! ← {"v":1,"id":1,"ok":false,"error":{"code":"invalid_document","message":"...","details":["..."]}}
//! ```
//!
//! - [`Request`], [`Response`], [`ApiError`], [`ErrorCode`]: the envelope.
//! - [`Method`]: the methods, and which of them change anything.
//! - [`call`]: a request line decoded into a typed [`Call`].
//! - [`types`]: the typed `params` and `result` of every method.
//! - [`frame`]: reading one line with a size limit, writing one line.
//! - [`client`]: an async client, what `filterctl` uses.
pub mod call;
pub mod client;
mod explain;
pub mod frame;
mod monitor;
pub mod types;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::{call::Call, explain::*, monitor::*, types::*};

/// The protocol version this build speaks. A request with another `v` gets
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest request line the daemon reads by default (`filterd
/// --max-request-size`): a rule-set document travels inside `apply`, about
/// 170 bytes per rule, so this fits a million rules. A longer line gets
/// [`ErrorCode::RequestTooLarge`].
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;
/// [`DEFAULT_MAX_REQUEST_BYTES`] as the flag and the configuration key
/// write it.
pub const DEFAULT_MAX_REQUEST_SIZE: &str = "256M";

/// The default socket path (SPEC §4).
pub const DEFAULT_SOCKET: &str = "/run/filterd/filterd.sock";

/// One request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    /// Chosen by the client (a number or a string) and echoed in the
    /// response; `null` when absent.
    #[serde(default)]
    pub id: Value,
    pub method: String,
    /// The method's parameters (an object); absent means `{}`.
    #[serde(default)]
    pub params: Value,
}

/// One response line: `ok` with a `result`, or not `ok` with an `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    pub fn success(id: Value, result: Value) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(id: Value, error: ApiError) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// The result, or the error the daemon sent. A response that is
    /// neither (`ok` without `result`) reads as a `null` result.
    pub fn into_result(self) -> Result<Value, ApiError> {
        match (self.ok, self.error) {
            (true, _) => Ok(self.result.unwrap_or(Value::Null)),
            (false, Some(error)) => Err(error),
            (false, None) => Err(ApiError::new(
                ErrorCode::Internal,
                "the daemon reported a failure without an error",
            )),
        }
    }
}

/// Machine-readable error codes. Scripts match on these; `message` is for
/// people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON, or not a request object.
    BadRequest,
    /// `v` is not [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// No such method.
    UnknownMethod,
    /// The parameters do not fit the method (a bad address, an unknown ENI).
    InvalidParams,
    /// The line is longer than the daemon's limit.
    RequestTooLarge,
    /// A mutating call from a peer that is neither root nor in the socket
    /// group.
    PermissionDenied,
    /// Too many clients are connected; try again.
    Busy,
    /// The document was rejected; `details` holds every error, one each.
    InvalidDocument,
    /// No generation is running (nothing applied yet, or detached).
    NoGeneration,
    /// The rollback target is not among the saved generations.
    NotFound,
    /// Compiling, attaching or writing the data plane failed; the previous
    /// generation keeps running.
    EnforcementFailed,
    /// Saving the generation in the state directory failed; nothing changed.
    StateFailed,
    /// The method exists but this daemon does not provide it yet.
    NotImplemented,
    /// The daemon is shutting down.
    ShuttingDown,
    /// `apply` or `rollback` while the daemon takes its rules from etcd
    /// (SPEC §10).
    ExternalSource,
    /// `apply --if-generation N` while another generation is enforced.
    GenerationMismatch,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Busy => "busy",
            ErrorCode::InvalidDocument => "invalid_document",
            ErrorCode::NoGeneration => "no_generation",
            ErrorCode::NotFound => "not_found",
            ErrorCode::EnforcementFailed => "enforcement_failed",
            ErrorCode::StateFailed => "state_failed",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ExternalSource => "external_source",
            ErrorCode::GenerationMismatch => "generation_mismatch",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` of a failed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// One entry per individual problem (every validation error of a
    /// rejected document); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidParams, message)
    }
}

/// The methods of protocol version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Apply,
    Get,
    Rollback,
    Status,
    Explain,
    Counters,
    Detach,
    Flows,
    Monitor,
    Version,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Apply,
        Method::Get,
        Method::Rollback,
        Method::Status,
        Method::Explain,
        Method::Counters,
        Method::Detach,
        Method::Flows,
        Method::Monitor,
        Method::Version,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Apply => "apply",
            Method::Get => "get",
            Method::Rollback => "rollback",
            Method::Status => "status",
            Method::Explain => "explain",
            Method::Counters => "counters",
            Method::Detach => "detach",
            Method::Flows => "flows",
            Method::Monitor => "monitor",
            Method::Version => "version",
        }
    }

    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the method can change what the host enforces (SPEC §5);
    /// `daemon::auth::changes_state` says whether one call does (a dry-run
    /// `apply` does not).
    pub fn is_mutating(self) -> bool {
        matches!(self, Method::Apply | Method::Rollback | Method::Detach)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
