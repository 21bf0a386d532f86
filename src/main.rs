//! ferry: reverse ETL from your warehouse into Stripe. This file only wires the CLI up; each
//! command group lives in `cli/`.

mod cli;

/// mimalloc: ferry allocates many small strings and JSON values per record across tokio's
/// threads, where glibc's allocator spent a third of a sync's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::parse_command_line();
    cli::init_logging(args.global.verbose, args.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The command runs as a task on a runtime worker, not on this thread: the tasks it wakes
    // (HTTP connections, timers) then mostly run on the same worker, instead of every wake-up
    // crossing threads (a sixth of a run's CPU time at 20,000 creates).
    let result = runtime.block_on(async {
        match tokio::spawn(cli::run(args)).await {
            Ok(result) => result,
            Err(failed) => std::panic::resume_unwind(failed.into_panic()),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(error.exit_code())
        }
    }
}
