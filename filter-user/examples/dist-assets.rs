//! Writes what the Debian package ships beside the binaries, from the
//! binaries' own clap definitions (`cargo xtask dist` runs it):
//!
//! - `dist-assets --out DIR`: `DIR/man/filterd.8`, `DIR/man/filterctl.1`,
//!   and completions for bash, zsh and fish in `DIR/completions/`;
//! - `dist-assets --config FILE`: the commented default configuration
//!   (`contrib/filterd.toml`, which a unit test keeps equal to it).
use std::{fs, path::Path, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dist-assets: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--out", dir] => assets(Path::new(dir)),
        ["--config", file] => fs::write(file, filter::config::default_file()?)
            .with_context(|| format!("writing {file}")),
        _ => bail!("usage: dist-assets --out DIR | --config FILE"),
    }
}

fn assets(out: &Path) -> Result<()> {
    let (man, completions) = (out.join("man"), out.join("completions"));
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // filterd administers the host (section 8); filterctl's reading
    // commands are for the socket group too (section 1, /usr/bin).
    let commands = [
        (filter::config::Args::command(), "8"),
        (filter::cli::Cli::command(), "1"),
    ];
    for (command, section) in commands {
        let name = command.get_name().to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .section(section)
            .manual("filter")
            .render(&mut page)?;
        let path = man.join(format!("{name}.{section}"));
        fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut command = command.clone();
            let path = clap_complete::generate_to(shell, &mut command, &name, &completions)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
