//! Property tests of the parsers anyone can reach: the frame parser, the cursor parser,
//! the token checks and the log preview's token redaction. Each property runs on
//! proptest's generated inputs (a fixed number of cases, shrunk on failure).

use std::sync::Arc;

use notify_relay::message::Position;
use notify_relay::observability::log_text::{preview, redact_tokens};
use notify_relay::policy::auth::{sign, Access, AuthConfig, Refusal};
use notify_relay::protocol::{self, Frame};
use proptest::prelude::*;

const SECRET: &str = "property secret";
const NOW: f64 = 1_800_000_000.0;

fn access() -> Access {
    Access::new(&AuthConfig {
        auth_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    })
}

/// A JSON value of a few kinds, nested a little.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame object with members the relay reads, each maybe present with any value.
fn frame() -> impl Strategy<Value = String> {
    let member = |name: &'static str| prop::option::of(json_value()).prop_map(move |v| (name, v));
    (
        member("recipient_uuid"),
        member("message"),
        member("id"),
        member("since"),
        member("token"),
        member("presence"),
        member("ephemeral"),
        member("collapse"),
    )
        .prop_map(|members| {
            let (a, b, c, d, e, f, g, h) = members;
            let mut object = serde_json::Map::new();
            for (name, value) in [a, b, c, d, e, f, g, h] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            serde_json::Value::Object(object).to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_frame_parser_takes_any_text(text in ".{0,200}") {
        let _ = protocol::parse(&text, 256);
    }

    #[test]
    fn the_frame_parser_takes_any_object_and_every_request_can_be_answered(text in frame()) {
        match protocol::parse(&text, 256) {
            Frame::Request(request) => {
                if let Err(rejection) = request.command {
                    prop_assert!(!rejection.reason().is_empty());
                }
            }
            Frame::Ignored(_) => prop_assert!(false, "a JSON object is never ignored: {}", text),
        }
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused(
        epoch in "[A-Za-z0-9.]{1,20}",
        seq in any::<u64>(),
        garbage in prop_oneof![".{0,40}", "[A-Za-z0-9.:]{1,8}:[+0-9a]{1,5}"],
    ) {
        let position = Position::new(Arc::from(epoch.as_str()), seq);
        prop_assert_eq!(Position::parse(&position.to_string()), Some(position));
        // What parses is a cursor the relay could have given out (spelled perhaps
        // differently, `k:01` for `k:1`): its canonical form parses to the same position.
        if let Some(parsed) = Position::parse(&garbage) {
            prop_assert!(!parsed.epoch.is_empty());
            prop_assert_eq!(Position::parse(&parsed.to_string()), Some(parsed));
        }
    }

    #[test]
    fn tokens_verify_only_for_their_key_and_any_text_is_refused_without_panic(
        key in ".{1,40}",
        other in ".{1,40}",
        garbage in ".{0,300}",
        ttl in 1u64..100_000,
    ) {
        let access = access();
        let token = sign(SECRET.as_bytes(), &key, NOW as u64 + ttl);
        prop_assert_eq!(access.verify(&token, &key, NOW), Ok(()));
        if other != key {
            prop_assert_eq!(access.verify(&token, &other, NOW), Err(Refusal::WrongKey));
        }
        prop_assert!(access.verify(&garbage, &key, NOW).is_err());
        let expired = sign(SECRET.as_bytes(), &key, NOW as u64 - ttl);
        prop_assert_eq!(access.verify(&expired, &key, NOW), Err(Refusal::Expired));
    }

    #[test]
    fn a_tampered_token_is_invalid(key in "[a-z0-9-]{1,36}", at in any::<prop::sample::Index>()) {
        let access = access();
        let token = sign(SECRET.as_bytes(), &key, NOW as u64 + 60);
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        if bytes[i] == b'.' {
            return Ok(());
        }
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        prop_assert_ne!(&tampered, &token);
        // Base64 is decoded strictly (no ignored trailing bits), so any change counts.
        prop_assert!(access.verify(&tampered, &key, NOW).is_err(), "{} accepted", tampered);
    }

    #[test]
    fn no_token_survives_redaction(
        token in "[A-Za-z0-9_.-]{16,60}",
        spaces in "[ \t]{0,2}",
        before in prop::collection::vec(("[a-z]{1,6}", "[a-z ]{0,10}"), 0..3),
        after in prop::collection::vec(("[a-z]{1,6}", "[a-z ]{0,10}"), 0..3),
        cut in 0usize..200,
    ) {
        let mut text = String::from("{");
        for (name, value) in &before {
            text.push_str(&format!("\"{name}\":\"{value}\","));
        }
        text.push_str(&format!("\"token\"{spaces}:{spaces}\"{token}\""));
        for (name, value) in &after {
            text.push_str(&format!(",\"{name}\":\"{value}\""));
        }
        text.push('}');
        prop_assert!(!redact_tokens(&text).contains(&token));
        prop_assert!(!preview(&text).to_string().contains(&token[..16]));
        // A frame cut anywhere (a bad frame is logged as it came) leaks no part of the
        // token either: not even the first 8 characters that made it in.
        let cut = text.char_indices().nth(cut).map_or(text.len(), |(i, _)| i);
        let start = text.find(token.as_str()).expect("the token is in the frame");
        if cut >= start + 8 {
            let shown = redact_tokens(&text[..cut]);
            prop_assert!(!shown.contains(&token[..8]), "{} -> {}", &text[..cut], shown);
        }
    }
}
