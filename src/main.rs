use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = leadflow::cli::Cli::parse();
    leadflow::telemetry::init();
    match leadflow::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
