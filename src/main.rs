//! The `qscope` binary: argument parsing and dispatch only. Every command is a
//! thin layer over the library; `anyhow` lives here and nowhere else.
mod cli;

// Large tensors are allocated and freed every layer; glibc returns them to
// the OS each time (page faults were 15 % of a training step), mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
