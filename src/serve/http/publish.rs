//! `POST /publish` and `POST /publish/<KEY>`: publishing without holding a WebSocket.
//!
//! `/publish` takes the same JSON object as a WebSocket delivery frame, or an array of
//! them (a batch, answered with an array of results in order). `/publish/<KEY>` takes the
//! raw body as the message: a JSON value with `Content-Type: application/json`, else the
//! text itself, so `curl -d 'hello' .../publish/KEY` just works.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::value::RawValue;

use super::{json, method_not_allowed, path_key, Body};
use crate::delivery::publish::publish as publish_message;
use crate::message::{Outgoing, Payload};
use crate::policy::auth;
use crate::policy::limits::Limited as RateLimited;
use crate::protocol::{self, Command, Frame, Reply, ReplyFrame, MAX_COLLAPSE_LENGTH};
use crate::state::RelayState;

/// The error text for a body that is not a JSON object or an array of them.
const NOT_AN_OBJECT: &str = "body must be a JSON object or an array of JSON objects";

/// Serves `POST /publish` and `POST /publish/<KEY>` (`rest` is what follows `/publish`).
pub(super) async fn serve(
    state: &RelayState,
    remote: SocketAddr,
    request: Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    // Before the token check, so guessing tokens is rate limited too.
    let ip = state.per_ip.client(remote.ip(), request.headers());
    if let Err(limited) = state.per_ip.publish(ip, tokio::time::Instant::now()) {
        state.metrics.rate_limited(limited);
        state.log_limit.warn(format_args!(
            "http publish from {remote} (client {ip}) refused: over --publish-rate-per-ip"
        ));
        let retry_after = match limited {
            RateLimited::PublishRate(wait) => wait.as_secs_f64().ceil().max(1.0) as u64,
            RateLimited::Connections => 1,
        };
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.into());
        return response;
    }
    if !state.access.may_publish(auth::bearer(request.headers())) {
        state.metrics.publish_unauthorized.inc();
        state.log_limit.warn(format_args!(
            "http publish from {remote} refused: no or a wrong publisher token"
        ));
        return super::unauthorized(None);
    }
    let from = Http(remote);
    let key = match rest.strip_prefix('/') {
        None if rest.is_empty() => None,
        Some(encoded) => match path_key(encoded, state.config.max_key_length) {
            Ok(key) => Some(key),
            Err(refused) => return *refused,
        },
        None => return super::not_found(),
    };
    let json_body = is_json(request.headers());
    let query = request.uri().query().unwrap_or("").to_owned();
    let body = match read_body(state, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match key {
        Some(key) => {
            let message = match raw_message(&body, json_body, &query) {
                Ok(message) => message,
                Err(why) => return error(StatusCode::BAD_REQUEST, why),
            };
            let mut warn = |line: std::fmt::Arguments<'_>| state.log_limit.warn(line);
            answer(
                &publish_message(
                    &*state.engine,
                    &state.metrics,
                    &from,
                    &key,
                    message,
                    &mut warn,
                )
                .await,
            )
        }
        None => publish_json(state, &from, &body).await,
    }
}

/// `POST /publish`: one delivery object, or a batch of them.
async fn publish_json(state: &RelayState, from: &Http, body: &str) -> Response<Body> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = match serde_json::from_str(body) {
            Ok(items) => items,
            Err(_) => return error(StatusCode::BAD_REQUEST, NOT_AN_OBJECT),
        };
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            results.push(one(state, from, item.get()).await);
        }
        let frames: Vec<ReplyFrame<'_>> = results.iter().map(|r| r.to_frame(None)).collect();
        return json(StatusCode::OK, &frames);
    }
    let reply = one(state, from, trimmed).await;
    answer(&reply)
}

/// Publishes one delivery object given as JSON text.
async fn one(state: &RelayState, from: &Http, text: &str) -> Reply {
    match protocol::parse(text, state.config.max_key_length) {
        Frame::Ignored(_) => Reply::Refused(NOT_AN_OBJECT.into()),
        Frame::Request(request) => match request.command {
            Ok(Command::Deliver { to, message }) => {
                let mut warn = |line: std::fmt::Arguments<'_>| state.log_limit.warn(line);
                publish_message(
                    &*state.engine,
                    &state.metrics,
                    from,
                    &to,
                    message,
                    &mut warn,
                )
                .await
            }
            Ok(Command::Register { .. }) => Reply::Refused(
                "\"connected\" registers a WebSocket connection; it cannot be published".into(),
            ),
            Ok(Command::Presence { .. } | Command::Watch { .. } | Command::Unwatch { .. }) => {
                Reply::Refused("missing recipient_uuid".into())
            }
            Err(rejection) => Reply::Error(rejection),
        },
    }
}

/// The message of `POST /publish/<KEY>`: the body, with `?ephemeral=1` and
/// `?collapse=NAME` from the query.
fn raw_message(body: &str, json_body: bool, query: &str) -> Result<Outgoing, &'static str> {
    let payload = if json_body {
        protocol::json_payload(body)
            .ok_or("the body is not JSON (Content-Type: application/json)")?
    } else {
        Payload::text(body.to_owned())
    };
    let mut message = Outgoing::plain(payload);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "ephemeral" => {
                message.ephemeral = match &*value {
                    "1" | "true" | "" => true,
                    "0" | "false" => false,
                    _ => return Err("ephemeral must be 1 or 0"),
                }
            }
            "collapse" if value.len() <= MAX_COLLAPSE_LENGTH => {
                message.collapse = Some(value.into_owned().into())
            }
            "collapse" => return Err("collapse must be a string of at most 64 bytes"),
            _ => {}
        }
    }
    Ok(message)
}

/// Reads the whole body, bounded by `--max-message-size`: 413 past it, 415 when it is not
/// UTF-8.
async fn read_body(
    state: &RelayState,
    request: Request<Incoming>,
) -> Result<String, Response<Body>> {
    let limit = state.config.max_message_size;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "the body could not be read")),
    };
    String::from_utf8(bytes.into()).map_err(|_| {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body is not UTF-8 text",
        )
    })
}

/// Whether the request says its body is JSON (`application/json` or `*/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// The response for one publish result: 200, 400 for a refusal, 503 when the engine
/// could not take it.
fn answer(reply: &Reply) -> Response<Body> {
    let status = match reply {
        Reply::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reply::Error(_) | Reply::Refused(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    json(status, &reply.to_frame(None))
}

fn error(status: StatusCode, why: impl Into<std::borrow::Cow<'static, str>>) -> Response<Body> {
    json(status, &Reply::Refused(why.into()).to_frame(None))
}

/// An HTTP client as log lines name it: `http 127.0.0.1:5000`.
struct Http(SocketAddr);

impl std::fmt::Display for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http {}", self.0)
    }
}
