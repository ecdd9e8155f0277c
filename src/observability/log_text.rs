//! Client-controlled text, made safe to put in a log line.
//!
//! Keys, frame previews, paths and headers come from anyone who can reach the port. Logged
//! raw, a `\n` would start a forged log line (journald and line-based shippers take it as a
//! real entry), a `\r` would hide the visible one, and escape sequences would reach the
//! operator's terminal. [`escaped`] writes such text with every control character, line or
//! paragraph separator and bidirectional override spelled out as an escape, and `\` doubled,
//! so the escaped form is unambiguous and always one line.

use std::borrow::Cow;
use std::fmt::{self, Write};
use std::io;

/// How many characters of a rejected frame are quoted in the log.
pub const PREVIEW_CHARS: usize = 80;

/// `text` for a log line, whole. See the module docs.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        max_chars: usize::MAX,
    }
}

/// What a redacted secret is logged as.
pub const REDACTED: &str = "\"<redacted>\"";

/// The start of a frame (at most [`PREVIEW_CHARS`] characters, `…` when cut) for a log
/// line, with the value of every `"token"` member replaced by [`REDACTED`] first, so a
/// preview never shows a secret, even when cut.
pub fn preview(text: &str) -> Preview<'_> {
    Preview(redact_tokens(text))
}

/// A frame preview; made by [`preview`].
#[derive(Debug, Clone)]
pub struct Preview<'a>(Cow<'a, str>);

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped {
            text: &self.0,
            max_chars: PREVIEW_CHARS,
        }
        .fmt(f)
    }
}

/// `text` with the string value of every member named `token` (however its name is
/// escaped) replaced by [`REDACTED`]. Works on frames that are not valid JSON too (cut,
/// or broken further on): a string that is never closed runs to the end of the text.
pub fn redact_tokens(text: &str) -> Cow<'_, str> {
    // Fast path: a member name spelling "token" needs either the word or an escape.
    if !text.contains("token") && !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Whether the previous string was a member name `token` followed by `:`.
    let mut redact_next = false;
    while let Some(start) = rest.find(['"', ':']) {
        let (before, from) = rest.split_at(start);
        if !before.trim().is_empty() {
            redact_next = false;
        }
        out.push_str(before);
        if let Some(after) = from.strip_prefix(':') {
            out.push(':');
            rest = after;
            continue;
        }
        let end = string_end(from);
        let string = &from[..end];
        rest = &from[end..];
        if redact_next {
            out.push_str(REDACTED);
            redact_next = false;
            continue;
        }
        out.push_str(string);
        let is_name = rest.trim_start().starts_with(':');
        redact_next = is_name && serde_json::from_str::<String>(string).is_ok_and(|n| n == "token");
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The length of the JSON string literal `from` starts with (its quotes included), or
/// of all of `from` when the string is not closed.
fn string_end(from: &str) -> usize {
    let mut escaped = false;
    for (i, c) in from.char_indices().skip(1) {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return i + 1,
            _ => {}
        }
    }
    from.len()
}

/// Displays client text escaped; made by [`escaped`] and [`preview`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max_chars: usize,
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.text.chars().enumerate() {
            if n == self.max_chars {
                return f.write_char('…');
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:04x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Writes `args` to `out` with every character that could break or hide a log line
/// spelled out as an escape: the last line of defence, applied to every line the daemon
/// logs, for text that did not go through [`escaped`] (a dependency's message, a field
/// someone forgot). Unlike [`escaped`] it leaves `\` alone, so already escaped text
/// passes unchanged.
pub fn write_line_safe(out: &mut impl io::Write, args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut safe = LineSafe { out, error: None };
    match fmt::write(&mut safe, args) {
        Ok(()) => Ok(()),
        Err(fmt::Error) => Err(safe
            .error
            .unwrap_or_else(|| io::Error::other("formatting a log line failed"))),
    }
}

/// The [`fmt::Write`] behind [`write_line_safe`].
struct LineSafe<'a, W> {
    out: &'a mut W,
    /// The I/O error that stopped the write, if one did.
    error: Option<io::Error>,
}

impl<W: io::Write> fmt::Write for LineSafe<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            let c = rest[at..].chars().next().unwrap_or_default();
            let written = self
                .out
                .write_all(&rest.as_bytes()[..at])
                .and_then(|()| write!(self.out, "\\u{{{:04x}}}", c as u32));
            if let Err(error) = written {
                self.error = Some(error);
                return Err(fmt::Error);
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.out.write_all(rest.as_bytes()).map_err(|error| {
            self.error = Some(error);
            fmt::Error
        })
    }
}

/// Characters that can break a line, move the cursor, start a terminal sequence or
/// reorder what the operator sees.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0 (ESC among them), DEL and C1 (NEL U+0085, CSI U+009B)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{200e}' | '\u{200f}' // directional marks
                | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
                | '\u{2066}'..='\u{2069}' // bidirectional isolates
                | '\u{feff}' // byte order mark / zero-width no-break space
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        let text = "3f2a6c1e-9b7d-4e5f ünïcödé 日本 {\"a\": 1}";
        assert_eq!(escaped(text).to_string(), text);
    }

    #[test]
    fn line_breaks_and_terminal_sequences_are_spelled_out() {
        let forged = "k\nINFO forged\r\x1b]0;title\x07\x1b[2J\u{85}\u{2028}\u{2029}\u{202e}";
        let logged = escaped(forged).to_string();
        assert_eq!(
            logged,
            "k\\nINFO forged\\r\\u{001b}]0;title\\u{0007}\\u{001b}[2J\\u{0085}\\u{2028}\\u{2029}\\u{202e}"
        );
        assert!(!logged.chars().any(needs_escape));
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_cannot_be_faked() {
        assert_eq!(escaped("a\\nb").to_string(), "a\\\\nb");
        assert_ne!(escaped("a\\nb").to_string(), escaped("a\nb").to_string());
    }

    #[test]
    fn whole_lines_keep_escapes_and_lose_raw_control_characters() {
        let mut out = Vec::new();
        let raw = "forged\nline\u{1b}[2J";
        write_line_safe(&mut out, format_args!("key {} raw {raw}", escaped("a\nb")))
            .expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "key a\\nb raw forged\\u{000a}line\\u{001b}[2J"
        );
    }

    #[test]
    fn token_values_never_reach_a_preview() {
        let secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrIn0.c2lnbmF0dXJl";
        for frame in [
            format!(r#"{{"recipient_uuid":"k","message":"connected","token":"{secret}"}}"#),
            format!(r#"{{"token" : "{secret}", "id": [}}"#),
            format!(r#"{{"tok\u0065n":"{secret}"}}"#),
            format!(r#"{{"token":"{secret}"#),
            format!(r#"{{"token":"{}{secret}"}}"#, "x".repeat(70)),
        ] {
            let shown = preview(&frame).to_string();
            assert!(!shown.contains("c2lnbmF0dXJl"), "{frame} -> {shown}");
            assert!(!shown.contains("eyJ"), "{frame} -> {shown}");
        }
        let other = r#"{"recipient_uuid":"token","message":"token: visible"}"#;
        assert_eq!(redact_tokens(other), other);
        assert_eq!(
            redact_tokens(r#"{"token":"s","message":"m"}"#),
            r#"{"token":"<redacted>","message":"m"}"#
        );
    }

    #[test]
    fn preview_cuts_at_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let shown = preview(&long).to_string();
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(preview("short").to_string(), "short");
        let exact = "x".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact).to_string(), exact);
    }
}
