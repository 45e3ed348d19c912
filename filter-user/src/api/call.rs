//! One request line → a typed call, with no daemon in sight: the daemon's
//! server decodes with these, and so does the request fuzz target
//! (docs/FUZZING.md), which therefore covers exactly what a client can
//! reach before any method runs.
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    ApiError, ApplyParams, CountersParams, ErrorCode, ExplainParams, FlowsParams, Method,
    MonitorParams, NoParams, Request, RollbackParams,
};

/// Reads a line as a [`Request`], or gives the `bad_request` error that
/// refuses it with the `id` to answer it under (the line's, when it has
/// one).
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, ApiError)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            ApiError::new(ErrorCode::BadRequest, format!("malformed JSON: {e}")),
        )
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| {
        (
            id,
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    r#"not a request ({e}); a request is {{"v":1,"id":1,"method":"status","params":{{}}}}"#
                ),
            ),
        )
    })
}

/// A method with its decoded parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Apply(ApplyParams),
    Rollback(RollbackParams),
    Get,
    Status,
    Explain(ExplainParams),
    Counters(CountersParams),
    Detach,
    Flows(FlowsParams),
    Monitor(MonitorParams),
    Version,
}

impl Call {
    /// Decodes `params` as `method`'s parameters (`invalid_params` when
    /// they are not).
    pub fn decode(method: Method, params: Value) -> Result<Call, ApiError> {
        let none = |params| decode_params::<NoParams>(method, params);
        Ok(match method {
            Method::Apply => Call::Apply(decode_params(method, params)?),
            Method::Rollback => Call::Rollback(decode_params(method, params)?),
            Method::Get => none(params).map(|_| Call::Get)?,
            Method::Status => none(params).map(|_| Call::Status)?,
            Method::Explain => Call::Explain(decode_params(method, params)?),
            Method::Counters => Call::Counters(decode_params(method, params)?),
            Method::Detach => none(params).map(|_| Call::Detach)?,
            Method::Flows => Call::Flows(decode_params(method, params)?),
            Method::Monitor => Call::Monitor(decode_params(method, params)?),
            Method::Version => none(params).map(|_| Call::Version)?,
        })
    }
}

/// Decodes `params`; absent or `null` reads as `{}`.
pub fn decode_params<T: DeserializeOwned>(method: Method, params: Value) -> Result<T, ApiError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_json::from_value(params)
        .map_err(|e| ApiError::invalid_params(format!("params of {method}: {e}")))
}
