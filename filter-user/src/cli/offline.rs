//! `filterctl validate` and `filterctl diff` (SPEC §11): the daemon's own
//! checks and change summary, run here without a daemon. Exit 0 when the
//! document is valid or nothing changed, 1 when it is invalid or changed.
use std::{io::Write, path::Path};

use serde_json::{json, Value};

use super::{pretty, read_document, render, Cli, Command, Failure, Interfaces, EXIT_FAILURE};
use crate::{
    daemon::{library::LibraryValidator, summarize, Validator},
    ruleset::Ruleset,
};

/// Runs `validate` or `diff`; the exit code. Other commands: failure.
pub(super) fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match &cli.command {
        Command::Validate { file, interfaces } => validate(file, *interfaces),
        Command::Diff { old, new } => diff(old, new),
        _ => return EXIT_FAILURE,
    };
    match result {
        Ok((json, text, code)) => {
            let text = if cli.json { pretty(&json) } else { text };
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => code,
                Err(_) => EXIT_FAILURE,
            }
        }
        Err(failure) => failure.report(cli.json, out, err),
    }
}

/// A document read and validated; a rejected one is a failure listing
/// every error with its path, each prefixed by the file when `label`.
fn load(validator: &LibraryValidator, file: &Path, label: bool) -> Result<Ruleset, Failure> {
    let text = read_document(&file.to_path_buf())?;
    validator.load(&text).map_err(|errors| {
        let prefix = if label {
            format!("{}: ", file.display())
        } else {
            String::new()
        };
        let mut lines = vec![format!(
            "filterctl: {} is not a valid rule set ({} errors)",
            file.display(),
            errors.len()
        )];
        lines.extend(errors.iter().map(|e| format!("{prefix}{e}")));
        Failure {
            lines,
            json: json!({ "error": {
                "code": "invalid_document",
                "message": format!("{} is not a valid rule set", file.display()),
                "details": errors,
            }}),
        }
    })
}

fn validate(file: &Path, interfaces: Interfaces) -> Result<(Value, String, u8), Failure> {
    let validator = match interfaces {
        Interfaces::Host => LibraryValidator::host(),
        Interfaces::Any => LibraryValidator::any_interface(),
    };
    let ruleset = load(&validator, file, false)?;
    let warnings = validator.warnings(&ruleset);
    let notices = validator.notices(&ruleset);
    let mut text = format!("{}: valid\n", file.display());
    for w in &warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    for n in &notices {
        text.push_str(&format!("notice: {n}\n"));
    }
    let json = json!({ "valid": true, "warnings": warnings, "notices": notices });
    Ok((json, text, 0))
}

fn diff(old: &Path, new: &Path) -> Result<(Value, String, u8), Failure> {
    // Interfaces are the host's business at apply time, not a diff's.
    let validator = LibraryValidator::any_interface();
    let old = load(&validator, old, true)?;
    let new = load(&validator, new, true)?;
    let changes = summarize(Some(&old), &new);
    let code = if changes.is_empty() { 0 } else { EXIT_FAILURE };
    let json = json!({ "changed": !changes.is_empty(), "changes": changes });
    Ok((json, render::changes(&changes), code))
}
