//! `d-mcp`: a Model Context Protocol server on stdio, so that an AI assistant
//! can drive d. Started by `d mcp` (which finds it beside `d`, then on PATH);
//! standalone it is `d-mcp [--d PATH] [--socket PATH] [--maxOutput BYTES]`.
//!
//! Every tool runs the `d` client ([`tools`]), so the assistant gets exactly
//! what a person typing `d` gets, within bounds ([`run`]). The `d` client
//! stays synchronous and small; the async runtime and the MCP SDK live here.
//!
//! stdout carries only MCP messages; diagnostics go to stderr.

mod answer;
mod args;
mod run;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rmcp::ServiceExt;

/// Serve d's tools to an AI assistant over the Model Context Protocol (stdio).
#[derive(Debug, Parser)]
#[command(name = "d-mcp", version = version())]
struct Args {
    /// The d client to run (default: `d` beside d-mcp, else on PATH). `d mcp` passes itself.
    #[arg(long = "d", env = "D_MCP_CLIENT", value_name = "PATH")]
    d: Option<PathBuf>,
    /// Control socket of the local daemon, passed to d (default: d's own, /run/d/d.sock).
    #[arg(long, env = "D_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Bytes of each output stream returned per call; longer output keeps its
    /// first and last halves. Fan-out divides it among the peers (at least 2 KiB each).
    #[arg(long = "maxOutput", value_name = "BYTES", default_value_t = 32 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    max_output: u64,
}

/// `0.1.0 (1a2b3c4d5e)`, built once (clap wants a `'static` string).
fn version() -> &'static str {
    Box::leak(d_proto::version_string().into_boxed_str())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("d-mcp: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("d-mcp: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let runner = run::Runner {
        d: run::find_d(args.d),
        socket: args.socket,
    };
    let features = args::Features::probe(&runner).await;
    let server = tools::DTools::new(runner, args.max_output as usize, features);
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP session did not start: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| format!("MCP session ended with an error: {e}"))?;
    Ok(())
}
