//! `filterd`'s command line and configuration file (SPEC §4, §8).
//!
//! [`Settings`] is both the flags and the keys of `/etc/filterd/filterd.toml`:
//! a field is a flag `--flow-log-max-size` and a key `flow_log_max_size`,
//! and its clap default is the one default. A new setting is one field.
//! Precedence: a flag given on the command line, then the file, then the
//! default ([`load`]).
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use clap::{
    parser::ValueSource, ArgMatches, Args as _, CommandFactory, FromArgMatches, Parser, Subcommand,
    ValueEnum,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::{
    api::{DEFAULT_MAX_REQUEST_SIZE, DEFAULT_SOCKET},
    daemon::{parse_capture_window, DEFAULT_MAX_CLIENTS},
    flowlog::DEFAULT_KEEP_FILES,
};
use filter_common::{INITIAL_BOUNDS, INITIAL_CELLS};

/// Where `filterd` reads its settings when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/filterd/filterd.toml";

/// Exit code of a usage or configuration error (SPEC §8; clap's own).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "filterd",
    version,
    about = "The filter daemon: enforces security groups and network ACLs with eBPF",
    after_help = "Without a command, filterd runs the daemon. Every flag is also a key of the \
                  configuration file (same name, snake_case); a flag given here wins."
)]
pub struct Args {
    /// The configuration file (TOML). A missing default file is fine; a
    /// missing file given here is an error.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the merged configuration (file and flags) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Remove every link, program and map filterd pinned, without a daemon
    /// (the state directory stays).
    Cleanup {
        /// The pin directory; by default the configuration's `pin_dir`.
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
}

/// Every setting of the daemon: a flag and a configuration key each.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The API socket (created fresh, mode 0660).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Where applied generations are saved (the last 10 are kept).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/filterd")]
    pub state_dir: PathBuf,
    /// Where programs, links and maps are pinned (in bpffs).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/filterd")]
    pub pin_dir: PathBuf,
    /// The flow-log file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/log/filterd/flows.log"
    )]
    pub flow_log: PathBuf,
    /// Flow-log capture window: 60s, 1m, ... (1s to 10m). A document's
    /// flow_log.capture_window_s wins.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_capture_window)]
    #[serde(with = "capture_window")]
    pub capture_window: Duration,
    /// Rotate the flow-log file when it would grow past this size (bytes,
    /// or with a K, M or G suffix).
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub flow_log_max_size: Size,
    /// How many rotated flow-log files to keep (FILE.1 is the newest).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_FILES)]
    pub flow_log_keep: usize,
    /// The group (name or gid) that owns the socket; its members may apply,
    /// roll back and detach, as root may.
    #[arg(long, value_name = "GROUP")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// The longest request the socket reads (bytes, or with a K, M or G
    /// suffix). An apply carries the whole document, about 170 bytes per
    /// rule; a longer request gets an error that names this limit.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MAX_REQUEST_SIZE)]
    pub max_request_size: Size,
    /// How many socket clients are served at once. When all are taken, the
    /// one that has waited longest for a request makes room for a new one;
    /// filterd raises its open-file limit to fit.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Sorted ranges (24 bytes each) the data plane's FILTER_BOUNDS map
    /// is made with: about 5 per rule. A generation that needs more makes
    /// filterd grow it (its programs are loaded again, a second or two);
    /// a map already pinned keeps its size.
    #[arg(long, value_name = "N", default_value_t = INITIAL_BOUNDS)]
    pub bounds_entries: u32,
    /// Cells (table × port and address classes → rule set, about 70 bytes
    /// each) the data plane's FILTER_CELLS map is made with; like
    /// bounds_entries, it grows when a generation needs more.
    #[arg(long, value_name = "N", default_value_t = INITIAL_CELLS)]
    pub cells_entries: u32,
    /// Apply this document at start instead of restoring the saved
    /// generation.
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<PathBuf>,
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Take the rules from etcd at these endpoints (comma-separated URLs,
    /// SPEC §10) instead of the local socket; apply and rollback are then
    /// refused.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "comma_list"
    )]
    pub etcd_endpoints: Vec<String>,
    /// The etcd keys live under PREFIX/v1/.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// This host's name in etcd (default: the host name).
    #[arg(long, value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cacert: Option<PathBuf>,
    /// This host's client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cert: Option<PathBuf>,
    /// The key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off unless
    /// given).
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// At most this many rules get series of their own in
    /// filter_packets_total and filter_bytes_total (the most active
    /// first); the others add up under reason="other-rules".
    #[arg(long, value_name = "N", default_value_t = crate::metrics::DEFAULT_MAX_RULE_SERIES)]
    pub metrics_max_rule_series: usize,
}

/// Where the fleet's keys live in etcd unless `etcd_prefix` says otherwise.
pub const DEFAULT_ETCD_PREFIX: &str = "/filter";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A byte count written as `4096`, `512K`, `64M` or `1G` (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let t = text.trim();
        let (digits, unit) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
            _ => (t, 'B'),
        };
        let shift = match unit {
            'B' => 0,
            'K' => 10,
            'M' => 20,
            'G' => 30,
            _ => return Err(format!("{text:?}: the unit must be K, M or G")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size like 4096, 512K or 64M"))?;
        match n.checked_mul(1 << shift) {
            Some(0) => Err("the size must be above 0".to_owned()),
            Some(v) => Ok(Size(v)),
            None => Err(format!("{text:?} is too large")),
        }
    }
}

impl fmt::Display for Size {
    /// The largest unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    /// `"64M"`, or a plain number of bytes.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(0) => Err(serde::de::Error::custom("the size must be above 0")),
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `["https://a:2379", "https://b:2379"]`, or one string with commas as
/// the flag takes it.
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(list) => list,
        Raw::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// A duration in whole seconds: `60s`, `1m`, `1m30s`, `2h`, `1d`, or a plain
/// number of seconds (`--capture-window`, `filterctl flows --since`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 60s, 1m or 1m30s");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() {
        if saw_unit {
            return Err(bad());
        }
        total = digits.parse().map_err(|_| bad())?;
    } else if !saw_unit {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// `capture_window = "60s"` (what `--capture-window` takes).
mod capture_window {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}s", d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::daemon::parse_capture_window(&text).map_err(serde::de::Error::custom)
    }
}

/// A configuration that cannot be used; `filterd` exits with
/// [`EXIT_USAGE`].
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: {error}", path.display())]
    Syntax {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    /// Unknown keys and bad values, every one, each naming its key.
    #[error("{}: {}", path.display(), errors.join(&format!("\n{}: ", path.display())))]
    Keys { path: PathBuf, errors: Vec<String> },
    #[error("the merged configuration: {0}")]
    Merge(String),
}

/// The command line, parsed. Usage errors are clap's (exit code 2).
pub fn parse_args() -> Result<(Args, ArgMatches), clap::Error> {
    let matches = Args::command().try_get_matches()?;
    let args = Args::from_arg_matches(&matches)?;
    Ok((args, matches))
}

/// The settings of this run: each flag given on the command line, else the
/// file's key, else the default. `matches` tells which flags were given.
pub fn load(args: &Args, matches: &ArgMatches) -> Result<Settings, ConfigError> {
    let (path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file = match fs::read_to_string(&path) {
        Ok(text) => parse_file(&path, &text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => toml::Table::new(),
        Err(error) => return Err(ConfigError::Read { path, error }),
    };
    merge(&args.settings, matches, &path, file)
}

/// The settings of a configuration file alone (defaults for what it does
/// not set): what `filterctl fleet` reads for the etcd keys.
pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
    let matches = Args::command()
        .try_get_matches_from(["filterd"])
        .map_err(|e| ConfigError::Merge(e.to_string()))?;
    let args = Args::from_arg_matches(&matches).map_err(|e| ConfigError::Merge(e.to_string()))?;
    let text = fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    merge(&args.settings, &matches, path, parse_file(path, &text)?)
}

/// `filterd --print-config`: the merged settings as TOML.
pub fn to_toml(settings: &Settings) -> Result<String, ConfigError> {
    toml::to_string(settings).map_err(|e| ConfigError::Merge(e.to_string()))
}

/// The keys (= flag ids) of [`Settings`], in order, with their help and
/// default.
pub fn keys() -> Vec<Key> {
    Settings::augment_args(clap::Command::new("filterd"))
        .get_arguments()
        .map(|arg| Key {
            name: arg.get_id().to_string(),
            help: arg.get_help().map(ToString::to_string).unwrap_or_default(),
            value_name: arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(ToString::to_string)
                .unwrap_or_default(),
        })
        .collect()
}

/// One configuration key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub help: String,
    pub value_name: String,
}

/// The commented configuration file the package installs
/// (`contrib/filterd.toml`): every key commented out with its default.
pub fn default_file() -> Result<String, ConfigError> {
    let defaults = Args::try_parse_from(["filterd"])
        .map_err(|e| ConfigError::Merge(e.to_string()))?
        .settings;
    let table = toml::Table::try_from(&defaults).map_err(|e| ConfigError::Merge(e.to_string()))?;
    let mut out = String::from(
        "# filterd's configuration (SPEC §8). Every key is a filterd flag of the same\n\
         # name (--state-dir is state_dir); a flag given on the command line wins.\n\
         # Every key below is commented out with its default. `filterd --print-config`\n\
         # prints what a start with this file would use.\n",
    );
    for key in keys() {
        out.push('\n');
        for line in wrap(&format!("{}.", key.help), 76) {
            out.push_str(&format!("# {line}\n"));
        }
        match table.get(&key.name) {
            Some(value) => {
                let mut one = toml::Table::new();
                one.insert(key.name.clone(), value.clone());
                let line = toml::to_string(&one).map_err(|e| ConfigError::Merge(e.to_string()))?;
                out.push_str(&format!("#{line}"));
            }
            None => out.push_str(&format!(
                "# Unset by default.\n#{} = \"{}\"\n",
                key.name, key.value_name
            )),
        }
    }
    Ok(out)
}

/// `text` in lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Syntax {
            path: path.to_owned(),
            error: Box::new(error),
        })
}

fn merge(
    cli: &Settings,
    matches: &ArgMatches,
    path: &Path,
    file: toml::Table,
) -> Result<Settings, ConfigError> {
    let base = toml::Table::try_from(cli).map_err(|e| ConfigError::Merge(e.to_string()))?;
    let known = keys();
    let mut merged = base.clone();
    let mut errors = Vec::new();
    for (key, value) in file {
        if !known.iter().any(|k| k.name == key) {
            let hint = known
                .iter()
                .map(|k| (strsim::jaro_winkler(&key, &k.name), &k.name))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, name)| format!(" (did you mean `{name}`?)"))
                .unwrap_or_else(|| {
                    let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
                    format!("; the keys are {}", names.join(", "))
                });
            errors.push(format!("unknown key `{key}`{hint}"));
            continue;
        }
        // Each key on its own over the defaults, so an error names it.
        let mut alone = base.clone();
        alone.insert(key.clone(), value.clone());
        if let Err(e) = Settings::deserialize(alone) {
            errors.push(format!("key `{key}`: {}", e.message().trim()));
            continue;
        }
        if matches.value_source(&key) != Some(ValueSource::CommandLine) {
            merged.insert(key, value);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError::Keys {
            path: path.to_owned(),
            errors,
        });
    }
    Settings::deserialize(merged).map_err(|e| ConfigError::Merge(e.message().trim().to_owned()))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    /// Parses `argv` (after `filterd`) and merges `file` as the config.
    fn settings(argv: &[&str], file: &str) -> Result<Settings, ConfigError> {
        let matches = Args::command()
            .try_get_matches_from(std::iter::once("filterd").chain(argv.iter().copied()))
            .map_err(|e| ConfigError::Merge(e.to_string()))?;
        let args =
            Args::from_arg_matches(&matches).map_err(|e| ConfigError::Merge(e.to_string()))?;
        let path = Path::new("test.toml");
        merge(&args.settings, &matches, path, parse_file(path, file)?)
    }

    fn defaults() -> Settings {
        settings(&[], "").unwrap()
    }

    #[test]
    fn file_only() {
        let s = settings(
            &[],
            "state_dir = \"/srv/filterd\"\ncapture_window = \"5s\"\nflow_log_max_size = 1024\n\
             socket_group = \"filter\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(s.state_dir, Path::new("/srv/filterd"));
        assert_eq!(s.capture_window, Duration::from_secs(5));
        assert_eq!(s.flow_log_max_size, Size(1024));
        assert_eq!(s.socket_group.as_deref(), Some("filter"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.pin_dir, defaults().pin_dir);
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let file = "state_dir = \"/srv/file\"\npin_dir = \"/sys/fs/bpf/file\"\n";
        let s = settings(&["--state-dir", "/srv/flag"], file).unwrap();
        assert_eq!(s.state_dir, Path::new("/srv/flag"));
        assert_eq!(s.pin_dir, Path::new("/sys/fs/bpf/file"));
        // A flag given with its default value still wins.
        let s = settings(&["--flow-log-keep", "5"], "flow_log_keep = 9\n").unwrap();
        assert_eq!(s.flow_log_keep, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |file: &str| settings(&[], file).unwrap_err().to_string();
        let unknown = err("state_dri = \"/x\"\n");
        assert!(unknown.contains("unknown key `state_dri`"), "{unknown}");
        assert!(unknown.contains("did you mean `state_dir`"), "{unknown}");
        let wrong_type = err("flow_log_keep = \"many\"\n");
        assert!(wrong_type.contains("key `flow_log_keep`"), "{wrong_type}");
        let bad_value = err("capture_window = \"0s\"\n");
        assert!(bad_value.contains("key `capture_window`"), "{bad_value}");
        assert!(bad_value.contains("between 1s and 600s"), "{bad_value}");
        let both = err("state_dri = 1\nflow_log_keep = -1\n");
        assert!(both.contains("unknown key `state_dri`"), "{both}");
        assert!(both.contains("key `flow_log_keep`"), "{both}");
        let bad_enum = err("log_format = \"xml\"\n");
        assert!(bad_enum.contains("key `log_format`"), "{bad_enum}");
        let syntax = err("state_dir = \n");
        assert!(syntax.contains("line 1"), "{syntax}");
        let size = err("flow_log_max_size = \"12Q\"\n");
        assert!(size.contains("key `flow_log_max_size`"), "{size}");
    }

    #[test]
    fn print_config_round_trips() {
        let s = settings(&["--socket-group", "filter", "--capture-window", "2m"], "").unwrap();
        let text = to_toml(&s).unwrap();
        assert!(text.contains("capture_window = \"120s\""), "{text}");
        assert!(text.contains("flow_log_max_size = \"64M\""), "{text}");
        assert_eq!(settings(&[], &text).unwrap(), s);
    }

    #[test]
    fn etcd_keys() {
        let s = settings(
            &["--etcd-prefix", "/f2"],
            "etcd_endpoints = \"https://192.0.2.1:2379, https://192.0.2.2:2379\"\n\
             host_id = \"h1\"\netcd_cacert = \"/etc/filterd/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            s.etcd_endpoints,
            ["https://192.0.2.1:2379", "https://192.0.2.2:2379"]
        );
        assert_eq!(s.etcd_prefix, "/f2");
        assert_eq!(s.host_id.as_deref(), Some("h1"));
        let list = settings(&[], "etcd_endpoints = [\"http://192.0.2.1:2379\"]\n").unwrap();
        assert_eq!(list.etcd_endpoints, ["http://192.0.2.1:2379"]);
        let flag = settings(&["--etcd-endpoints", "a:1,b:2"], "").unwrap();
        assert_eq!(flag.etcd_endpoints, ["a:1", "b:2"]);
        assert_eq!(defaults().etcd_prefix, DEFAULT_ETCD_PREFIX);
        assert!(defaults().etcd_endpoints.is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!("64M".parse(), Ok(Size(64 << 20)));
        assert_eq!("4096".parse(), Ok(Size(4096)));
        assert_eq!("512k".parse(), Ok(Size(512 << 10)));
        assert!("0".parse::<Size>().is_err());
        assert!("1T".parse::<Size>().is_err());
        assert!("99999999999G".parse::<Size>().is_err());
        assert_eq!(Size(1536).to_string(), "1536");
        assert_eq!(Size(3 << 20).to_string(), "3M");
    }

    /// The shipped file is [`default_file`] exactly, and with every key
    /// uncommented it configures the defaults.
    #[test]
    fn shipped_config_is_the_default() {
        let shipped = include_str!("../../contrib/filterd.toml");
        let generated = default_file().unwrap();
        assert_eq!(
            shipped, generated,
            "contrib/filterd.toml is stale: regenerate it with \
             `cargo run -p filter-user --example dist-assets -- --config contrib/filterd.toml`"
        );
        let uncommented: String = generated
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            // The keys unset by default (placeholders, not values).
            .filter(|l| {
                !["GROUP", "FILE", "URL", "NAME", "ADDR:PORT"]
                    .iter()
                    .any(|v| l.contains(&format!("\"{v}\"")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        // Unset by default: socket_group, ruleset, etcd_endpoints, host_id,
        // the three TLS files and metrics_listen.
        assert_eq!(uncommented.lines().count(), keys().len() - 8);
        assert_eq!(settings(&[], &uncommented).unwrap(), defaults());
    }
}
