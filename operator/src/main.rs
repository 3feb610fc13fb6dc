use clap::Parser;

#[tokio::main]
async fn main() {
    if let Err(error) = stowage_operator::cli::Cli::parse().run().await {
        eprintln!("stowage-operator: {error}");
        std::process::exit(1);
    }
}
