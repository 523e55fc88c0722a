//! The `kaiabc` command: simulate a clock, analyse rhythms, replay logs, run the live pipeline.

use std::process::ExitCode;

use clap::Parser;

mod alloc;
mod auth;
mod bridge;
mod cli;
mod cluster;
mod config;
mod dataflow;
mod durability;
mod fleet;
mod logs;
mod metrics;
mod ratelimit;
mod server;
mod table;
mod ws;

/// mimalloc: the dataflow allocates and frees many short-lived rows and large column buffers;
/// glibc's malloc returned the buffers to the kernel and faulted them back in on every file
/// (see DEVELOPERS.md, "Replay throughput"). A replay also keeps what it frees
/// ([`alloc::keep_freed_memory`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    alloc::no_transparent_huge_pages();
    // The config file stands for environment variables that are not set: flags override both.
    let argv: Vec<String> = std::env::args().collect();
    if let Some(path) = config::path_from(&argv) {
        match config::read(&path) {
            Ok(env) => {
                for (var, value) in env {
                    if std::env::var_os(var).is_none() {
                        // Single-threaded still: nothing else reads the environment yet.
                        std::env::set_var(var, value);
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // After the config file, which may set the format.
    logs::init(logs::format_from(&argv));
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`kaiabc simulate … | head`) means the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(|ce| {
                matches!(ce.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            })
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|je| je.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
