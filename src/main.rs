//! The binary's entry point: read `./.env`, parse the command line, run it
//! (everything else lives in the library).

use std::process::ExitCode;

// The system allocator. mimalloc once cut glibc malloc's share of the
// receiver's CPU (~15% then, 3% with it), but its per-thread heaps kept
// freed memory: peak RSS 44 MiB with ingest alone and 81-97 MiB with four
// destinations forwarding, against 24 and 47 MiB with glibc for 3-7% more
// CPU per delivery (docs/performance.md, "Allocator"). A memory limit that
// kills the process costs more than that.

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
