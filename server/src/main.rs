use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    stowage::cli::Cli::parse().run().await
}
