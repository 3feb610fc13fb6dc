use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match stowage::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stowage: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
