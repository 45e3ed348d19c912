//! `filterctl`: the CLI (SPEC §6). The commands live in `filter::cli`.
use std::process::ExitCode;

use clap::Parser;
use filter::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("filterctl: starting the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let code = runtime.block_on(cli::run(cli, &mut stdout.lock(), &mut stderr.lock()));
    ExitCode::from(code)
}
