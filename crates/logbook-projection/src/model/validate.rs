//! Field checks shared by the built-in payloads.
//!
//! Owns: the value rules (non-empty ids, length limits, list sizes) every built-in payload
//! applies on construction from JSON, on encode and on decode.
//! Never: allocates more than the error message it returns.

use std::collections::BTreeSet;

use crate::error::{Error, Result, escape_lossy};

/// The longest id or name in a built-in payload (run id, member, worker, phase...), in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// The longest free text in a built-in payload (message body, input, summary, error), in bytes.
pub const TEXT_BYTES_MAX: usize = 1024 * 1024;
/// The most items in a list or map of a built-in payload (phases, child runs, tool names).
pub const LIST_ITEMS_MAX: usize = 1024;

/// A non-empty id of at most [`ID_BYTES_MAX`] bytes without control characters.
#[inline]
pub(crate) fn id(event_type: &'static str, field: &'static str, value: &str) -> Result<()> {
    // The accepted case in line (every id of every replayed event comes through here), the
    // refusal out of line.
    if !value.is_empty() && value.len() <= ID_BYTES_MAX && !has_control(value) {
        return Ok(());
    }
    refused_id(event_type, field, value)
}

/// Why `value` is not an id ([`id`] refused it).
#[cold]
#[inline(never)]
fn refused_id(event_type: &'static str, field: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > ID_BYTES_MAX {
        format!("is {} bytes, at most {ID_BYTES_MAX} allowed", value.len())
    } else {
        format!("{:?} contains a control character", escape_lossy(value))
    };
    Err(Error::InvalidField {
        event_type,
        field,
        reason,
    })
}

/// Whether `text` holds a control character (`char::is_control`: U+0000 to U+001F and U+007F
/// to U+009F). Printable ASCII, what ids almost always are, is told a byte at a time without
/// decoding characters: every id of every replayed event goes through here.
#[inline]
pub(crate) fn has_control(text: &str) -> bool {
    !crate::utf8::is_printable_ascii(text.as_bytes()) && text.chars().any(char::is_control)
}

/// [`id`] when present.
pub(crate) fn optional_id(
    event_type: &'static str,
    field: &'static str,
    value: Option<&str>,
) -> Result<()> {
    value.map_or(Ok(()), |value| id(event_type, field, value))
}

/// Free text of at most `limit` bytes; empty is allowed.
pub(crate) fn text_up_to(
    event_type: &'static str,
    field: &'static str,
    value: &str,
    limit: usize,
) -> Result<()> {
    if value.len() > limit {
        return Err(Error::InvalidField {
            event_type,
            field,
            reason: format!("is {} bytes, at most {limit} allowed", value.len()),
        });
    }
    Ok(())
}

/// Free text of at most [`TEXT_BYTES_MAX`] bytes; empty is allowed.
pub(crate) fn text(event_type: &'static str, field: &'static str, value: &str) -> Result<()> {
    text_up_to(event_type, field, value, TEXT_BYTES_MAX)
}

/// Free text of at most [`TEXT_BYTES_MAX`] bytes that must not be empty (errors).
pub(crate) fn required_text(
    event_type: &'static str,
    field: &'static str,
    value: &str,
) -> Result<()> {
    if value.is_empty() {
        let reason = "must not be empty".to_owned();
        return Err(Error::InvalidField {
            event_type,
            field,
            reason,
        });
    }
    text(event_type, field, value)
}

/// [`text`] when present.
pub(crate) fn optional_text(
    event_type: &'static str,
    field: &'static str,
    value: Option<&str>,
) -> Result<()> {
    value.map_or(Ok(()), |value| text(event_type, field, value))
}

/// At most [`LIST_ITEMS_MAX`] distinct ids.
pub(crate) fn id_list(
    event_type: &'static str,
    field: &'static str,
    values: &[String],
) -> Result<()> {
    item_count(event_type, field, values.len())?;
    let mut seen = BTreeSet::new();
    for value in values {
        id(event_type, field, value)?;
        if !seen.insert(value.as_str()) {
            return Err(Error::InvalidField {
                event_type,
                field,
                reason: format!("lists {:?} twice", escape_lossy(value)),
            });
        }
    }
    Ok(())
}

/// At most [`LIST_ITEMS_MAX`] items.
pub(crate) fn item_count(
    event_type: &'static str,
    field: &'static str,
    count: usize,
) -> Result<()> {
    if count > LIST_ITEMS_MAX {
        return Err(Error::InvalidField {
            event_type,
            field,
            reason: format!("has {count} items, at most {LIST_ITEMS_MAX} allowed"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids() {
        assert!(id("a.b", "f", "x").is_ok());
        assert!(id("a.b", "f", "").is_err());
        assert!(id("a.b", "f", &"x".repeat(ID_BYTES_MAX)).is_ok());
        assert!(id("a.b", "f", &"x".repeat(ID_BYTES_MAX + 1)).is_err());
        assert!(id("a.b", "f", "a\u{7}").is_err());
        assert!(optional_id("a.b", "f", None).is_ok());
        assert!(optional_id("a.b", "f", Some("")).is_err());
    }

    #[test]
    fn texts_and_lists() {
        assert!(text("a.b", "f", "").is_ok());
        assert!(required_text("a.b", "f", "").is_err());
        assert!(text("a.b", "f", &"x".repeat(TEXT_BYTES_MAX + 1)).is_err());
        assert!(optional_text("a.b", "f", Some("line\nbreaks are fine")).is_ok());
        let twice = vec!["a".to_owned(), "a".to_owned()];
        let error = id_list("a.b", "f", &twice).expect_err("duplicate");
        assert_eq!(
            error.to_string(),
            "invalid a.b event: field f lists \"a\" twice"
        );
        let many: Vec<String> = (0..=LIST_ITEMS_MAX)
            .map(|index| index.to_string())
            .collect();
        assert!(id_list("a.b", "f", &many).is_err());
        assert!(id_list("a.b", "f", &many[1..]).is_ok());
    }

    proptest! {
        /// The ASCII path finds exactly the control characters `char::is_control` finds.
        #[test]
        fn has_control_is_char_is_control(text in ".{0,24}", ascii in "[\\x00-\\x7f]{0,40}") {
            for text in [&text, &ascii] {
                prop_assert_eq!(super::has_control(text), text.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn has_control_at_the_edges() {
        for (text, control) in [
            ("", false),
            ("abc~ ", false),
            ("a\u{1f}", true),
            ("a\u{7f}", true),
            ("é\u{85}", true),
            ("é\u{a0}", false),
            ("\u{9f}", true),
        ] {
            assert_eq!(super::has_control(text), control, "{text:?}");
        }
    }
}
