use std::process::ExitCode;

// glibc malloc (malloc, free, consolidation) was ~15% of the receiver's CPU
// under load: every delivery makes many small JSON allocations on whichever
// worker thread runs it. mimalloc's thread-local pages cut that to ~3%.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use imggo_receiver::cli::{run, Cli};

fn main() -> ExitCode {
    run(Cli::parse())
}
