//! `GET /presence/<KEY>`: whether anyone is connected under a key, and how many.

use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use serde::Serialize;

use super::{check_token, json, method_not_allowed, path_key, Body};
use crate::protocol::Reply;
use crate::state::RelayState;

/// The body of a presence answer.
#[derive(Serialize)]
struct Presence<'a> {
    key: &'a str,
    online: bool,
    connections: usize,
}

/// Serves `GET /presence/<KEY>` (`encoded` is the percent-encoded key).
pub(super) async fn serve(
    state: &RelayState,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    encoded: &str,
) -> Response<Body> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    let key = match path_key(encoded, state.config.max_key_length) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    if let Err(refusal) = check_token(state, headers, query, &key) {
        return *refusal;
    }
    match state.engine.presence(&key).await {
        Ok(connections) => json(
            StatusCode::OK,
            &Presence {
                key: &key,
                online: connections > 0,
                connections,
            },
        ),
        Err(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Reply::Unavailable.to_frame(None),
        ),
    }
}
