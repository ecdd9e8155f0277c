//! Part 3 over plain HTTP: `POST /publish` (objects and batches), `POST /publish/<KEY>`
//! (raw bodies), `GET /presence/<KEY>`, with every error status, against a real relay.

mod common;

use std::net::SocketAddr;

use common::Relay;
use hyper::body::Bytes;
use serde_json::{json, Value};

/// One HTTP/1.1 request with a body: (status, parsed JSON body or the text as a string).
async fn post(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (u16, Value) {
    let (status, _, text) =
        common::http_read(common::http_send(addr, method, path, headers, body).await).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn publish_json(relay: &Relay, body: Value) -> (u16, Value) {
    post(
        relay.addr,
        "POST",
        "/publish",
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn publish_an_object_reaches_websocket_listeners_and_says_what_happened() {
    let relay = Relay::start().await;
    let mut tab = relay.registered("k").await;
    let (status, reply) = publish_json(
        &relay,
        json!({"recipient_uuid": "k", "message": {"p": 0.5}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["delivered"], 1);
    assert_eq!(reply["buffered"], false);
    assert!(reply["cursor"].is_string());
    assert!(reply.get("id").is_none());
    assert_eq!(tab.recv_text().await, r#"{"p":0.5}"#);

    // Nobody there: kept as pending, handed to the next registration.
    let (status, reply) = publish_json(
        &relay,
        json!({"recipient_uuid": "later", "message": "kept"}),
    )
    .await;
    assert_eq!((status, reply["buffered"].clone()), (200, json!(true)));
    let mut late = relay.client().await;
    late.send_json(json!({"recipient_uuid": "later", "message": "connected"}))
        .await;
    assert_eq!(late.recv_text().await, "kept");
    relay.stop().await;
}

#[tokio::test]
async fn a_batch_answers_each_item_in_order() {
    let relay = Relay::start().await;
    let mut tab = relay.registered("k").await;
    let (status, reply) = publish_json(
        &relay,
        json!([
            {"recipient_uuid": "k", "message": "first"},
            {"recipient_uuid": "", "message": "bad key"},
            {"message": "no recipient"},
            {"recipient_uuid": "k", "message": "second"},
            "not an object"
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let results = reply.as_array().expect("an array of results");
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["delivered"], 1);
    assert_eq!(results[1]["error"], "recipient_uuid must not be empty");
    assert_eq!(results[2]["error"], "missing recipient_uuid");
    assert_eq!(results[3]["ok"], true);
    assert_eq!(results[4]["ok"], false);
    assert_eq!(tab.recv_text().await, "first");
    assert_eq!(tab.recv_text().await, "second");
    relay.stop().await;
}

#[tokio::test]
async fn a_raw_body_is_the_message() {
    let relay = Relay::start().await;
    let key = "3f2a/ü key";
    let mut tab = relay.registered(key).await;
    let path = "/publish/3f2a%2F%C3%BC%20key";
    // curl -d 'hello' sends a form content type: the text is the message.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, reply) = post(relay.addr, "POST", path, &form, "hello\nworld").await;
    assert_eq!(
        (status, reply["delivered"].clone()),
        (200, json!(1)),
        "{reply}"
    );
    assert_eq!(tab.recv_text().await, "hello\nworld");
    let json_type = [("content-type", "application/json; charset=utf-8")];
    let (status, _) = post(relay.addr, "POST", path, &json_type, r#"{ "a": [1, 2] }"#).await;
    assert_eq!(status, 200);
    assert_eq!(tab.recv_text().await, r#"{"a":[1,2]}"#);
    let (status, _) = post(relay.addr, "POST", path, &json_type, r#""a JSON string""#).await;
    assert_eq!(status, 200);
    assert_eq!(tab.recv_text().await, "a JSON string");
    relay.stop().await;
}

#[tokio::test]
async fn every_error_has_its_status_and_reason() {
    let relay = Relay::start_with(|c| {
        c.max_message_size = 64;
        c.max_key_length = 8;
    })
    .await;
    let addr = relay.addr;
    let none: [(&str, &str); 0] = [];
    let json_type = [("content-type", "application/json")];

    let (status, reply) = post(addr, "POST", "/publish/k", &none, vec![b'x'; 65]).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["ok"], false);
    let (status, _) = post(addr, "POST", "/publish/k", &none, vec![0xff, 0xfe]).await;
    assert_eq!(status, 415);
    let (status, reply) = post(addr, "POST", "/publish/k", &json_type, "{nope").await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().expect("error").contains("not JSON"));
    let (status, reply) = post(addr, "POST", "/publish/much-too-long", &none, "x").await;
    assert_eq!(
        (status, reply["error"].clone()),
        (400, json!("recipient_uuid is too long"))
    );
    let (status, _) = post(addr, "POST", "/publish/", &none, "x").await;
    assert_eq!(status, 400, "an empty key");
    let (status, _) = post(addr, "POST", "/publish/%FF", &none, "x").await;
    assert_eq!(status, 400, "a key that is not UTF-8");
    let (status, reply) = post(addr, "POST", "/publish", &json_type, "42").await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(
        addr,
        "POST",
        "/publish",
        &json_type,
        r#"{"recipient_uuid":"k","message":"connected"}"#,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(
        addr,
        "POST",
        "/publish",
        &json_type,
        r#"{"recipient_uuid":"k","message":"m","collapse":7}"#,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    for method in ["GET", "PUT", "DELETE"] {
        let (status, _) = post(addr, method, "/publish/k", &none, "").await;
        assert_eq!(status, 405, "{method}");
    }
    // The relay is still fine.
    let (status, _) = post(addr, "POST", "/publish/k", &none, "ok").await;
    assert_eq!(status, 200);
    relay.stop().await;
}

#[tokio::test]
async fn presence_over_http_follows_connections() {
    let relay = Relay::start().await;
    let none: [(&str, &str); 0] = [];
    let presence = |reply: &Value| (reply["online"].clone(), reply["connections"].clone());
    let (status, reply) = post(relay.addr, "GET", "/presence/p%201", &none, "").await;
    assert_eq!(status, 200);
    assert_eq!(reply["key"], "p 1");
    assert_eq!(presence(&reply), (json!(false), json!(0)));
    let a = relay.registered("p 1").await;
    let _b = relay.registered("p 1").await;
    let (_, reply) = post(relay.addr, "GET", "/presence/p%201", &none, "").await;
    assert_eq!(presence(&reply), (json!(true), json!(2)));
    drop(a);
    common::eventually("the tab closed", || {
        relay.state.metrics.connections.get() == 1
    })
    .await;
    let (_, reply) = post(relay.addr, "GET", "/presence/p%201", &none, "").await;
    assert_eq!(presence(&reply), (json!(true), json!(1)));
    let (status, _) = post(relay.addr, "POST", "/presence/p", &none, "").await;
    assert_eq!(status, 405);
    relay.stop().await;
}
