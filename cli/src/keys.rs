//! `hexroad keys`: ed25519 keys for the parties that vouch for devices. A
//! manufacturer's public key goes in `ingest.manufacturers`; its secret
//! signs attestations (`hexroad sim --manufacturer NAME=FILE` plays one).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Make a new key: its secret (hex) goes to FILE, readable by its
    /// owner only; its public half is printed.
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public half of the key in FILE.
    Public { file: PathBuf },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::New { out } => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
            write_secret(&out, &secret)?;
            println!("{}", public_hex(&secret));
        }
        Which::Public { file } => println!("{}", public_hex(&read_secret(&file)?)),
    }
    Ok(())
}

fn public_hex(secret: &[u8; 32]) -> String {
    hexroad_dashcam_sim::VouchingKey::from_seed(*secret).public_hex()
}

/// Writes a new secret key file; an existing file is never overwritten.
fn write_secret(path: &Path, secret: &[u8; 32]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {} (it must not exist)", path.display()))?;
    writeln!(file, "{}", hex::encode(secret))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))
}

/// A secret key file: 64 hex digits.
pub fn read_secret(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{}: expected 64 hex digits", path.display()))?;
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&bytes);
    if secret == [0u8; 32] {
        bail!("{}: an all-zero key", path.display());
    }
    Ok(secret)
}
