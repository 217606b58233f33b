use std::process::ExitCode;

use clap::Parser;
use imggo_receiver::cli::{run, Cli};

fn main() -> ExitCode {
    run(Cli::parse())
}
