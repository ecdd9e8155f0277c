//! The wire protocol of PROTOCOL.md: parsing inbound text frames ([`parse`](parse())) and
//! encoding replies and pushes (`encode_*`).
//!
//! This is the only module that looks inside JSON. It borrows from the frame wherever it
//! can, because it runs once for every frame the relay receives.

mod encode;
mod parse;

pub use encode::{
    encode_envelope, encode_event, encode_gap, encode_gap_event, encode_invalid_id_reply,
    encode_presence, encode_presence_event, encode_reply, Reply, ReplyFrame, UNAVAILABLE,
};
pub use parse::{
    check_key, json_payload, parse, Command, Frame, Ignored, Rejection, ReplyId, Request,
};

/// The text frame sent to every connection right after the handshake.
pub const GREETING: &str = "..:: Hello from the Notification Center ::..";

/// The `message` value that turns a frame into a registration.
pub const REGISTER_MESSAGE: &str = "connected";

/// Longest `collapse` name, in bytes.
pub const MAX_COLLAPSE_LENGTH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Outgoing, Payload, Position, Published, Since};

    const MAX: usize = 64;

    fn request(text: &str) -> Request<'_> {
        match parse(text, MAX) {
            Frame::Request(request) => request,
            Frame::Ignored(why) => panic!("{text} was ignored: {why:?}"),
        }
    }

    #[test]
    fn registration() {
        let r = request(r#"{"recipient_uuid": "receiver-uuid", "message": "connected"}"#);
        assert_eq!(r.id, None);
        assert_eq!(
            r.command,
            Ok(Command::Register {
                key: "receiver-uuid".into(),
                since: None
            })
        );
    }

    #[test]
    fn string_message_is_delivered_verbatim_and_unescaped() {
        let r = request(r#"{"recipient_uuid":"k","message":"line\n\"quoted\" ü"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::text("line\n\"quoted\" ü"))
            })
        );
    }

    #[test]
    fn non_string_message_is_compact_json() {
        let r = request(r#"{"recipient_uuid":"k","message": { "a" : [1, 2, {"b": true}] }}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::json(r#"{"a":[1,2,{"b":true}]}"#))
            })
        );
        for (message, expected) in [
            ("42", "42"),
            ("true", "true"),
            ("[ ]", "[]"),
            ("1e3", "1e3"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            (r#"{"z": 1, "a": 2}"#, r#"{"z":1,"a":2}"#),
            (
                r#"[ "a b", "c\" d", "e\\" , "\\\" f" ]"#,
                r#"["a b","c\" d","e\\","\\\" f"]"#,
            ),
        ] {
            let text = format!(r#"{{"recipient_uuid":"k","message":{message}}}"#);
            match request(&text).command {
                Ok(Command::Deliver { message, .. }) => {
                    assert_eq!(message.payload.as_text().as_str(), expected)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn escaped_key_is_decoded() {
        let r = request(r#"{"recipient_uuid":"a\u0062c","message":"connected"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Register {
                key: "abc".into(),
                since: None
            })
        );
    }

    #[test]
    fn not_json_and_bad_json_are_ignored() {
        assert_eq!(parse("hello", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("[1]", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("\"x\"", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("42", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("{", MAX), Frame::Ignored(Ignored::BadJson));
        assert_eq!(parse("{} trailing", MAX), Frame::Ignored(Ignored::BadJson));
        assert_eq!(parse(r#"{"a":1,}"#, MAX), Frame::Ignored(Ignored::BadJson));
    }

    #[test]
    fn rejections() {
        let cases = [
            (r#"{}"#, Rejection::MissingRecipient),
            (r#"{"message":"x"}"#, Rejection::MissingRecipient),
            (
                r#"{"recipient_uuid":null,"message":"x"}"#,
                Rejection::MissingRecipient,
            ),
            (
                r#"{"recipient_uuid":5,"message":"x"}"#,
                Rejection::RecipientNotString,
            ),
            (
                r#"{"recipient_uuid":"","message":"x"}"#,
                Rejection::EmptyKey,
            ),
            (r#"{"recipient_uuid":"k"}"#, Rejection::MissingMessage),
            (
                r#"{"recipient_uuid":"k","message":null}"#,
                Rejection::MissingMessage,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(request(text).command, Err(expected), "{text}");
        }
        let long = format!(
            r#"{{"recipient_uuid":"{}","message":"x"}}"#,
            "k".repeat(MAX + 1)
        );
        assert_eq!(request(&long).command, Err(Rejection::KeyTooLong));
        let exact = format!(
            r#"{{"recipient_uuid":"{}","message":"x"}}"#,
            "k".repeat(MAX)
        );
        assert!(request(&exact).command.is_ok());
    }

    #[test]
    fn ids_are_echoed_exactly() {
        let r = request(r#"{"id": 7, "recipient_uuid":"k","message":"connected"}"#);
        let id = r.id.expect("id");
        assert_eq!(
            encode_reply(id, &Reply::Registered { replayed: None }),
            r#"{"id":7,"ok":true}"#
        );
        let r = request(r#"{"id":"a\"b","recipient_uuid":"k","message":"m"}"#);
        let id = r.id.expect("id");
        assert_eq!(
            encode_reply(
                id,
                &Reply::Delivered {
                    outcome: Published {
                        delivered: 2,
                        overflowed: 0,
                        position: None,
                        buffered: false
                    },
                    streams: false
                }
            ),
            r#"{"id":"a\"b","ok":true,"delivered":2}"#
        );
        assert_eq!(
            encode_reply(id, &Reply::Error(Rejection::MissingMessage)),
            r#"{"id":"a\"b","ok":false,"error":"missing message"}"#
        );
        let r = request(r#"{"id":-1.5e3,"message":"m"}"#);
        assert_eq!(r.id.map(|id| id.as_json()), Some("-1.5e3"));
        assert_eq!(r.command, Err(Rejection::MissingRecipient));
    }

    #[test]
    fn null_id_means_no_reply_and_other_ids_are_rejected() {
        let r = request(r#"{"id":null,"recipient_uuid":"k","message":"m"}"#);
        assert_eq!(r.id, None);
        assert!(r.command.is_ok());
        for id in ["true", "[1]", r#"{"a":1}"#] {
            let text = format!(r#"{{"id":{id},"recipient_uuid":"k","message":"m"}}"#);
            let r = request(&text);
            assert_eq!(r.id, None);
            assert_eq!(r.command, Err(Rejection::InvalidId));
        }
        let reply: serde_json::Value =
            serde_json::from_str(&encode_invalid_id_reply()).expect("valid JSON");
        assert_eq!(reply["id"], serde_json::Value::Null);
        assert_eq!(reply["ok"], false);
    }

    #[test]
    fn a_member_given_twice_takes_its_last_value_like_json_loads() {
        let r = request(
            r#"{"id":1,"recipient_uuid":"a","message":"x","recipient_uuid":"b","message":"y","id":2}"#,
        );
        assert_eq!(r.id.map(|id| id.as_json()), Some("2"));
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "b".into(),
                message: Outgoing::plain(Payload::text("y"))
            })
        );
        // The last value wins even when it is null (absent) or of another type.
        let r = request(r#"{"id":7,"recipient_uuid":"k","message":"x","message":null}"#);
        assert_eq!(r.command, Err(Rejection::MissingMessage));
        let r = request(r#"{"id":"a","id":null,"recipient_uuid":"k","message":"x"}"#);
        assert_eq!(r.id, None);
        let r = request(r#"{"recipient_uuid":5,"recipient_uuid":"k","message":"connected"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register { since: None, .. })
        ));
        // Escaped member names are the same members.
        let r = request(r#"{"recipient\u005fuuid":"k","mess\u0061ge":"connected"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register { since: None, .. })
        ));
    }

    #[test]
    fn lone_surrogates_are_rejected_the_same_in_keys_and_string_messages() {
        for text in [
            r#"{"id":1,"recipient_uuid":"k\ud800","message":"x"}"#,
            r#"{"id":1,"recipient_uuid":"\udc00","message":"connected"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"a\ud800b"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"\ud800\ud800"}"#,
            r#"{"id":1,"presence":"\ud800"}"#,
        ] {
            let r = request(text);
            assert_eq!(r.command, Err(Rejection::LoneSurrogate), "{text}");
            assert_eq!(
                encode_reply(r.id.expect("id"), &Reply::Error(Rejection::LoneSurrogate)),
                r#"{"id":1,"ok":false,"error":"invalid unicode: lone surrogate"}"#
            );
        }
        // A proper pair is one character.
        let r = request(r#"{"recipient_uuid":"k","message":"\ud83d\ude00"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::text("😀"))
            })
        );
        // Inside a JSON message the escape is passed on as JSON text, which is valid.
        let r = request(r#"{"recipient_uuid":"k","message":{"a":"\ud800"}}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::json(r#"{"a":"\ud800"}"#))
            })
        );
    }

    #[test]
    fn part_3_fields() {
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"earliest"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register {
                since: Some(Since::Earliest),
                ..
            })
        ));
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"e1:4"}"#);
        let Ok(Command::Register {
            since: Some(Since::After(p)),
            ..
        }) = r.command
        else {
            panic!("{r:?}")
        };
        assert_eq!(p.to_string(), "e1:4");
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"bogus"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register {
                since: Some(Since::Unknown),
                ..
            })
        ));
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":5}"#);
        assert_eq!(r.command, Err(Rejection::InvalidSince));

        let r = request(r#"{"recipient_uuid":"k","message":"5%","ephemeral":true,"collapse":"p"}"#);
        let Ok(Command::Deliver { message, .. }) = r.command else {
            panic!("{r:?}")
        };
        assert!(message.ephemeral);
        assert_eq!(message.collapse.as_deref(), Some("p"));
        for (field, rejection) in [
            (r#""ephemeral":"yes""#, Rejection::InvalidEphemeral),
            (r#""ephemeral":1"#, Rejection::InvalidEphemeral),
            (r#""collapse":7"#, Rejection::InvalidCollapse),
        ] {
            let text = format!(r#"{{"recipient_uuid":"k","message":"m",{field}}}"#);
            assert_eq!(request(&text).command, Err(rejection), "{text}");
        }
        let long = format!(
            r#"{{"recipient_uuid":"k","message":"m","collapse":"{}"}}"#,
            "c".repeat(MAX_COLLAPSE_LENGTH + 1)
        );
        assert_eq!(request(&long).command, Err(Rejection::InvalidCollapse));

        let r = request(r#"{"id":1,"presence":"k"}"#);
        assert_eq!(r.command, Ok(Command::Presence { key: "k".into() }));
        let w = request(r#"{"id":2,"watch":"k\u00e9","token":"t"}"#);
        assert_eq!(
            w.command,
            Ok(Command::Watch {
                key: "k\u{e9}".into()
            })
        );
        assert_eq!(w.token.as_deref(), Some("t"));
        let u = request(r#"{"id":3,"unwatch":"k"}"#);
        assert_eq!(u.command, Ok(Command::Unwatch { key: "k".into() }));
        assert_eq!(Reply::Done.encode(u.id), r#"{"id":3,"ok":true}"#);
        assert_eq!(
            request(r#"{"id":4,"watch":""}"#).command,
            Err(Rejection::EmptyKey)
        );
        assert_eq!(
            encode_presence("a\"b", 2),
            r#"{"presence":"a\"b","online":true,"connections":2}"#
        );
        assert_eq!(
            encode_presence_event("k", 0),
            "event: presence\ndata: {\"presence\":\"k\",\"online\":false,\"connections\":0}\n\n"
        );
        assert_eq!(
            Reply::Presence(2).encode(r.id),
            r#"{"id":1,"ok":true,"online":true,"connections":2}"#
        );
        let outcome = Published {
            delivered: 0,
            overflowed: 0,
            position: Some(Position::new("e1".into(), 3)),
            buffered: true,
        };
        assert_eq!(
            Reply::Delivered {
                outcome,
                streams: true
            }
            .encode(None),
            r#"{"ok":true,"delivered":0,"buffered":true,"cursor":"e1:3"}"#
        );
        assert_eq!(
            Reply::Unavailable.encode(None),
            r#"{"ok":false,"error":"cluster unavailable"}"#
        );
    }

    #[test]
    fn http_keys_and_json_bodies() {
        assert_eq!(check_key("k", 4), Ok(()));
        assert_eq!(check_key("", 4), Err(Rejection::EmptyKey));
        assert_eq!(check_key("12345", 4), Err(Rejection::KeyTooLong));
        assert_eq!(json_payload(" \"a\\nb\" "), Some(Payload::text("a\nb")));
        assert_eq!(
            json_payload("{ \"z\": 1.50 }"),
            Some(Payload::json("{\"z\":1.50}"))
        );
        assert_eq!(json_payload("{nope"), None);
    }

    #[test]
    fn envelopes_gaps_and_events() {
        let at = Position::new("e1".into(), 7);
        let text = Payload::text("say \"hi\"");
        let json = Payload::json(r#"{"p":1}"#);
        assert_eq!(
            encode_envelope(&text, Some(&at)),
            r#"{"cursor":"e1:7","message":"say \"hi\""}"#
        );
        assert_eq!(
            encode_envelope(&json, None),
            r#"{"ephemeral":true,"message":{"p":1}}"#
        );
        assert_eq!(encode_gap(&at), r#"{"gap":true,"cursor":"e1:7"}"#);
        assert_eq!(
            encode_event(&json, Some(&at)),
            "id: e1:7\ndata: {\"p\":1}\n\n"
        );
        assert_eq!(
            encode_event(&Payload::text("a\r\nb\rc\nd"), None),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encode_event(&Payload::text(""), None), "data: \n\n");
        assert!(encode_gap_event(&at).starts_with("event: gap\nid: e1:7\ndata: {"));
    }
}
