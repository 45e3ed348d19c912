//! Label values, escaped for the text format. prometheus-client 0.23
//! writes a label value as it is, but ids and interface names may hold
//! `\` and `"` (SPEC ids exclude only whitespace), which would end the
//! value early and break the whole scrape; found by the `writers` fuzz
//! target (docs/FUZZING.md).
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// An owned label value (a series key).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelValue(String);

impl From<&str> for LabelValue {
    fn from(value: &str) -> Self {
        LabelValue(value.to_owned())
    }
}

impl From<String> for LabelValue {
    fn from(value: String) -> Self {
        LabelValue(value)
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        escape(&self.0, encoder)
    }
}

/// A borrowed label value.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        escape(self.0, encoder)
    }
}

/// Text format 0.0.4: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape(value: &str, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_backslashes_and_newlines_are_escaped() {
        let mut out = String::new();
        escape("a\"b\\c\nd-é", &mut out).unwrap_or_default();
        assert_eq!(out, "a\\\"b\\\\c\\nd-é");
    }
}
