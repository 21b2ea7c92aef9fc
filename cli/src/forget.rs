//! `hexroad forget`: the right to be forgotten, for the operator. Removes a
//! contributor's frames, images, raw footage and rows from the lake (Delta
//! deletes, then a vacuum), leaving closed epochs' ledgers as they were.

use anyhow::{Context, Result};
use hexroad_lake::Lake;
use hexroad_wire::ContributorId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The contributor to forget.
    #[arg(long)]
    contributor: ContributorId,
    /// Data location: a folder or an object-store URL.
    #[arg(long, default_value = "./data")]
    data: String,
}

pub async fn run(args: Args) -> Result<()> {
    let lake = Lake::open(&args.data)
        .await
        .with_context(|| format!("opening data location {}", args.data))?;
    let forgotten = lake
        .forget_contributor(&args.contributor)
        .await
        .with_context(|| format!("forgetting contributor {}", args.contributor))?;
    println!("{}", serde_json::to_string_pretty(&forgotten)?);
    eprintln!(
        "forgot {}: its rows, {} objects, {} data files vacuumed; \
         closed epochs' rewards and fraud_flags rows are kept (see README, Privacy). \
         A running server drops it from its map at its next look; restart it to \
         drop the forgotten devices it holds in memory.",
        args.contributor, forgotten.objects, forgotten.files_vacuumed
    );
    Ok(())
}
