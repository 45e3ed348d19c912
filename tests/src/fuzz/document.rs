//! Target `document`: any bytes → document text → parse and validate.
//! Either step may refuse, with errors; none may panic. On top: `load` (what
//! `apply` runs) agrees with `parse_document` then `validate`, and a
//! document that parsed prints to JSON that parses back to itself.
use filter::validate::{load, parse_document, validate};

pub fn document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load(text);
    if let Err(errors) = &loaded {
        assert!(!errors.0.is_empty(), "a refusal without an error");
        drop(errors.to_string());
    }
    match parse_document(text) {
        Ok(doc) => {
            let validated = validate(&doc);
            assert_eq!(
                loaded.is_ok(),
                validated.is_ok(),
                "load and parse+validate disagree: {loaded:?} / {validated:?}"
            );
            let printed = match serde_json::to_string(&doc) {
                Ok(printed) => printed,
                Err(e) => panic!("a parsed document does not print: {e}"),
            };
            match parse_document(&printed) {
                Ok(again) => assert_eq!(again, doc, "printed and parsed again differs"),
                Err(e) => panic!("a parsed document, printed, does not parse: {e}\n{printed}"),
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal without an error");
            assert!(loaded.is_err(), "load accepts what parse_document refuses");
        }
    }
}
