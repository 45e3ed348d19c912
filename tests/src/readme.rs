//! The README's example rule set is a valid document.
use filter::validate::load;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));

/// The first fenced block of `lang`.
fn first_block<'a>(text: &'a str, lang: &str) -> Option<&'a str> {
    let start = text.find(&format!("```{lang}\n"))? + lang.len() + 4;
    let len = text[start..].find("```")?;
    Some(&text[start..start + len])
}

#[test]
fn readme_rule_set_validates() {
    let Some(doc) = first_block(README, "json") else {
        panic!("README.md has no ```json block");
    };
    if let Err(errors) = load(doc) {
        panic!("the README's rule set does not validate:\n{errors}");
    }
}
