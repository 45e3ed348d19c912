//! Document text → [`Document`], reporting every structural mistake:
//! malformed JSON (with line and column), unknown and repeated keys, values
//! of the wrong type and missing fields, each at its JSON path.
//!
//! The sections are deserialized element by element, so a broken
//! `vpcs[0]` does not hide a broken `enis[3]`. An element with a hard error
//! is left out, which shifts the indices after it: a document with hard
//! errors is therefore `complete: false` and not validated further, while
//! unknown or repeated keys leave it complete and its other mistakes are
//! reported too.
use std::collections::HashSet;

use serde::{de::DeserializeOwned, Deserialize};

use super::{
    de::{Found, NodeDe},
    errors::{JsonPath, ValidationError},
    hints,
    node::Node,
};
use crate::model::{Document, SECTIONS};

pub(crate) struct Parsed {
    pub doc: Document,
    pub errors: Vec<ValidationError>,
    /// Every element made it into `doc` (indices match the text).
    pub complete: bool,
}

impl Parsed {
    fn failed(error: ValidationError) -> Self {
        Parsed {
            doc: Document::default(),
            errors: vec![error],
            complete: false,
        }
    }
}

pub(crate) fn parse(text: &str) -> Parsed {
    let root: Node = match serde_json::from_str(text) {
        Ok(root) => root,
        // serde_json's message ends "at line L column C".
        Err(e) => {
            return Parsed::failed(ValidationError::new("", "", format!("malformed JSON: {e}")))
        }
    };
    // Consumed section by section, element by element: each element's tree
    // is freed once its model value exists, so the document is never held
    // twice over (issue 18: memory per rule).
    let Node::Object(entries) = root else {
        return Parsed::failed(ValidationError::new(
            "",
            root.render(),
            "is not a JSON object; a rule-set document is one",
        ));
    };
    let found = Found::default();
    let mut sections = Sections {
        found: &found,
        complete: true,
    };
    let mut doc = Document::default();
    let mut seen = HashSet::new();
    for (key, node) in entries {
        let path = JsonPath::root().field(&key);
        if !seen.insert(key.clone()) {
            found.borrow_mut().push(ValidationError::new(
                path,
                node.render(),
                "repeats a key already given in this object",
            ));
            continue;
        }
        match key.as_str() {
            "vpcs" => doc.vpcs = sections.list(node, &path),
            "vswitches" => doc.vswitches = sections.list(node, &path),
            "prefix_lists" => doc.prefix_lists = sections.list(node, &path),
            "security_groups" => doc.security_groups = sections.list(node, &path),
            "network_acls" => doc.network_acls = sections.list(node, &path),
            "enis" => doc.enis = sections.list(node, &path),
            "conntrack" => doc.conntrack = sections.single(&node, &path),
            "flow_log" => doc.flow_log = sections.single(&node, &path),
            _ => {
                let hint = match hints::closest(&key, SECTIONS) {
                    Some(close) => hints::did_you_mean(close),
                    None => format!("known sections: {}", SECTIONS.join(", ")),
                };
                found
                    .borrow_mut()
                    .push(ValidationError::new(path, "", "unknown field").with_hint(hint));
            }
        }
    }
    let complete = sections.complete;
    Parsed {
        doc,
        errors: found.into_inner(),
        complete,
    }
}

struct Sections<'a> {
    found: &'a Found,
    complete: bool,
}

impl Sections<'_> {
    /// An array section, element by element.
    fn list<T: DeserializeOwned>(&mut self, node: Node, path: &JsonPath) -> Vec<T> {
        let Node::Array(items) = node else {
            self.fail(ValidationError::new(path, node.render(), "is not an array"));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match T::deserialize(NodeDe::new(&item, path.index(i), self.found)) {
                Ok(t) => out.push(t),
                Err(e) => self.fail(e.into_error()),
            }
        }
        out
    }

    /// An object section (`null` counts as absent).
    fn single<T: DeserializeOwned>(&mut self, node: &Node, path: &JsonPath) -> Option<T> {
        match Option::<T>::deserialize(NodeDe::new(node, *path, self.found)) {
            Ok(t) => t,
            Err(e) => {
                self.fail(e.into_error());
                None
            }
        }
    }

    fn fail(&mut self, error: ValidationError) {
        self.found.borrow_mut().push(error);
        self.complete = false;
    }
}
