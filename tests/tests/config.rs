//! `filterd` on a host, without a daemon (SPEC §8): the configuration file
//! and its precedence, exit codes, log formats, `filterd cleanup` of an
//! empty directory, and `systemd-analyze verify` on the shipped unit.
//! These run the real binary (`Binaries::locate`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context as _, Result};
use filter_tests::{
    daemon::{output_within, Binaries},
    id::TestId,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A private directory for one test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(id: &TestId) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "filter-config-{}-{}",
            id.test(),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn filterd(args: &[&str]) -> Result<Output> {
    let bins = Binaries::locate()?;
    output_within(Command::new(&bins.filterd).args(args), LIMIT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `filterd --config FILE <args>`: exit code, stdout, stderr.
fn with_config(file: &Path, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let path = file.to_string_lossy();
    let mut full = vec!["--config", &path];
    full.extend_from_slice(args);
    let out = filterd(&full)?;
    Ok((out.status.code(), text(&out.stdout), text(&out.stderr)))
}

#[test]
fn the_file_alone_sets_every_key_it_has() -> Result<()> {
    let scratch = Scratch::new(&TestId::new("config_file_only"))?;
    let file = scratch.write(
        "filterd.toml",
        "# a comment\nstate_dir = \"/srv/filterd\"\ncapture_window = \"5s\"\n\
         flow_log_max_size = \"1G\"\nsocket_group = \"filter\"\n",
    )?;
    let (code, out, err) = with_config(&file, &["--print-config"])?;
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "state_dir = \"/srv/filterd\"",
        "capture_window = \"5s\"",
        "flow_log_max_size = \"1G\"",
        "socket_group = \"filter\"",
        // Keys the file does not have keep their defaults.
        "pin_dir = \"/sys/fs/bpf/filterd\"",
        "log_format = \"text\"",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    Ok(())
}

#[test]
fn a_flag_wins_over_the_file() -> Result<()> {
    let scratch = Scratch::new(&TestId::new("config_flag_wins"))?;
    let file = scratch.write(
        "filterd.toml",
        "state_dir = \"/srv/file\"\npin_dir = \"/sys/fs/bpf/from-file\"\nflow_log_keep = 9\n",
    )?;
    let (code, out, err) = with_config(
        &file,
        &[
            "--state-dir",
            "/srv/flag",
            "--flow-log-keep",
            "5",
            "--print-config",
        ],
    )?;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("state_dir = \"/srv/flag\""), "{out}");
    // Given with its default value, the flag still wins.
    assert!(out.contains("flow_log_keep = 5"), "{out}");
    assert!(out.contains("pin_dir = \"/sys/fs/bpf/from-file\""), "{out}");
    // What --print-config prints is a configuration file that gives the
    // same result.
    let again = scratch.write("printed.toml", &out)?;
    let (code, reprinted, err) = with_config(&again, &["--print-config"])?;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(reprinted, out);
    Ok(())
}

#[test]
fn a_bad_file_or_flag_exits_2_naming_the_key() -> Result<()> {
    let scratch = Scratch::new(&TestId::new("config_bad"))?;
    let cases = [
        ("statedir = \"/x\"\n", "unknown key `statedir`"),
        ("flow_log_keep = \"many\"\n", "key `flow_log_keep`"),
        ("capture_window = \"11m\"\n", "key `capture_window`"),
        ("log_format = \"xml\"\n", "key `log_format`"),
        ("state_dir = [\n", "line 1"),
    ];
    for (i, (body, expect)) in cases.iter().enumerate() {
        let file = scratch.write(&format!("bad-{i}.toml"), body)?;
        let (code, out, err) = with_config(&file, &["--print-config"])?;
        assert_eq!(code, Some(2), "{body:?}: {out}{err}");
        assert!(err.contains(expect), "{body:?}: no {expect:?} in {err}");
        assert!(out.is_empty(), "{body:?}: printed {out}");
    }
    // A --config that does not exist is an error too.
    let missing = scratch.0.join("missing.toml");
    let (code, _, err) = with_config(&missing, &["--print-config"])?;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    // Usage errors are clap's, with the same code.
    for args in [
        &["--no-such-flag"][..],
        &["--capture-window", "0s"],
        &["explode"],
    ] {
        let out = filterd(args)?;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = filterd(&["--capture-window", "0s"])?;
    assert!(text(&out.stderr).contains("--capture-window"));
    Ok(())
}

#[test]
fn logs_are_plain_text_or_json_lines() -> Result<()> {
    let id = TestId::new("config_log_format");
    let scratch = Scratch::new(&id)?;
    // A pin directory that does not exist: cleanup has nothing to do, and
    // says so in one log line.
    let pin_dir = id.pin_dir();
    let pin = pin_dir.to_string_lossy();
    let config = scratch.write("empty.toml", "")?;
    let (code, _, err) = with_config(&config, &["cleanup", "--pin-dir", &pin])?;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("nothing to remove"), "{err}");
    // stderr is not a terminal: no colour.
    assert!(!err.contains('\u{1b}'), "escape codes in {err:?}");

    let json = scratch.write("json.toml", "log_format = \"json\"\n")?;
    let (code, _, err) = with_config(&json, &["cleanup", "--pin-dir", &pin])?;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        assert_eq!(v["level"], "INFO", "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    id.assert_nothing_left()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() -> Result<()> {
    let scratch = Scratch::new(&TestId::new("config_unit"))?;
    let bins = Binaries::locate()?;
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/filterd.service"),
    )?;
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecStart=/usr/sbin/filterd\n"));
    // The binary may not be installed here: verify checks that it exists.
    let unit = unit.replace(
        "ExecStart=/usr/sbin/filterd",
        &format!("ExecStart={}", bins.filterd.display()),
    );
    let path = scratch.write("filterd.service", &unit)?;
    let out = output_within(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path),
        LIMIT,
    )?;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Unknown keys and bad values are only warnings: there must be none.
    assert!(
        err.trim().is_empty(),
        "systemd-analyze verify warned:\n{err}"
    );

    // A unit with a misspelt key does warn, so the check above can fail.
    let bad = scratch.write(
        "filterd.service",
        &unit.replace("NoNewPrivileges=", "NoNewPrivilege="),
    )?;
    let out = output_within(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&bad),
        LIMIT,
    )?;
    assert!(text(&out.stderr).contains("NoNewPrivilege"));
    Ok(())
}
