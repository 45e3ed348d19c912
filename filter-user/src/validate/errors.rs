//! Validation errors: where (a JSON path), what (the offending value), why,
//! and a hint when one helps (SPEC §2.5).
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::SECTIONS;

/// One mistake in a document.
///
/// `Display` gives `path: value message (hint)`, e.g.
/// `security_groups[0].rules[3].source_cidr_ip: "10.0.0.1/24" has host bits
/// set (did you mean 10.0.0.0/24?)`. Parts that are empty are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", render(.path, .value, .message, .hint))]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `enis[2].ips[0]`; empty for
    /// the document as a whole.
    pub path: String,
    /// The offending value as JSON (strings quoted); empty when the mistake
    /// is a missing or misplaced field rather than a value.
    pub value: String,
    pub message: String,
    pub hint: Option<String>,
}

impl ValidationError {
    pub fn new(
        path: impl fmt::Display,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            path: path.to_string(),
            value: value.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

fn render(path: &str, value: &str, message: &str, hint: &Option<String>) -> String {
    let mut out = String::new();
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    if !value.is_empty() {
        out.push_str(value);
        out.push(' ');
    }
    out.push_str(message);
    if let Some(hint) = hint {
        out.push_str(" (");
        out.push_str(hint);
        out.push(')');
    }
    out
}

/// Every mistake in a document, in document order; `Display` prints one per
/// line, which is what `filterctl apply` shows for a rejected document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct ValidationErrors(pub Vec<ValidationError>);

fn lines(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ValidationErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.0.iter()
    }
}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A JSON path, `security_groups[0].rules[3].id`, as a chain of borrowed
/// segments: checks name the path of every value they look at, and only the
/// few that fail turn it into text. (Building strings for every field of a
/// 100,000-rule document cost more than the checks themselves.)
#[derive(Clone, Copy, Debug)]
pub(crate) enum JsonPath<'a> {
    Root,
    Field(&'a JsonPath<'a>, &'a str),
    Index(&'a JsonPath<'a>, usize),
}

impl<'a> JsonPath<'a> {
    pub(crate) fn root() -> &'static JsonPath<'static> {
        &JsonPath::Root
    }

    pub(crate) fn field(&'a self, name: &'a str) -> JsonPath<'a> {
        JsonPath::Field(self, name)
    }

    pub(crate) fn index(&'a self, i: usize) -> JsonPath<'a> {
        JsonPath::Index(self, i)
    }
}

impl fmt::Display for JsonPath<'_> {
    /// Keys that are not plain identifiers (a typo with a space, say) are
    /// written `["like this"]` so the path stays unambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => Ok(()),
            JsonPath::Field(parent, name) => {
                parent.fmt(f)?;
                let plain = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                match (plain, parent) {
                    (false, _) => write!(f, "[{}]", quote(name)),
                    (true, JsonPath::Root) => f.write_str(name),
                    (true, _) => write!(f, ".{name}"),
                }
            }
            JsonPath::Index(parent, i) => {
                parent.fmt(f)?;
                write!(f, "[{i}]")
            }
        }
    }
}

/// A string as JSON text, quoted and escaped: how string values appear in
/// messages.
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Collects errors while validation goes on; checks never stop at the first.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ValidationError>);

impl Errors {
    pub(crate) fn push(&mut self, error: ValidationError) {
        self.0.push(error);
    }

    /// An error about a string value, which is shown quoted.
    pub(crate) fn bad(
        &mut self,
        path: &JsonPath,
        value: &str,
        message: impl Into<String>,
    ) -> &mut ValidationError {
        self.at(path, quote(value), message)
    }

    /// An error with a value already rendered (a number, or nothing).
    pub(crate) fn at(
        &mut self,
        path: &JsonPath,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut ValidationError {
        self.0.push(ValidationError::new(path, value, message));
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn extend(&mut self, errors: impl IntoIterator<Item = ValidationError>) {
        self.0.extend(errors);
    }

    /// The errors in document order. Checks run by topic (ids, references,
    /// rules, ENIs); sorting by top-level element puts every mistake of
    /// `enis[3]` together and after those of `enis[2]`. The sort is stable,
    /// so within an element the order of the checks (field order) remains.
    pub(crate) fn into_sorted(mut self) -> Vec<ValidationError> {
        self.0.sort_by_key(|e| document_position(&e.path));
        self.0
    }
}

impl ValidationError {
    /// Sets the hint on an error just added with [`Errors::bad`].
    pub(crate) fn hint(&mut self, hint: impl Into<String>) {
        self.hint = Some(hint.into());
    }
}

/// (section in SPEC order, index in that section) of a path; the document
/// root and unknown top-level keys sort last.
fn document_position(path: &str) -> (usize, usize) {
    let head_end = path.find(['.', '[']).unwrap_or(path.len());
    let section = SECTIONS
        .iter()
        .position(|s| *s == &path[..head_end])
        .unwrap_or(SECTIONS.len());
    let index = path[head_end..]
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (section, index)
}
