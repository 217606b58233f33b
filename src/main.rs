//! The binary's entry point: read `./.env`, parse the command line, run it
//! (everything else lives in the library).

use std::process::ExitCode;

// glibc malloc (malloc, free, consolidation) was ~15% of the receiver's CPU
// under load: every delivery makes many small JSON allocations on whichever
// worker thread runs it. mimalloc's thread-local pages cut that to ~3%.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use imggo_receiver::cli::{load_dotenv, run, Cli};

fn main() -> ExitCode {
    // Every command reads ./.env first; real environment variables win.
    if let Err(e) = load_dotenv() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    run(Cli::parse())
}
