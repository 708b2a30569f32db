//! `annals keys public [--out FILE]`: the checkpoint-signing public key, for auditors.

use std::path::PathBuf;
use std::process::ExitCode;

use annals_audit::CheckpointKey;

use super::checkpoint::audit_failure;
use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Print the public key checkpoints are signed with (64 hex digits), creating the key pair
    /// in the data dir (keys/checkpoint.ed25519, mode 0600) if there is none yet.
    Public {
        /// Also write it to this file (the form `annals verify-proof --key` reads).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The secret key file (default: `[audit] key`, else <data dir>/keys/checkpoint.ed25519).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

pub fn run(ctx: &Context, cmd: KeysCommand) -> Result<ExitCode, Failure> {
    match cmd {
        KeysCommand::Public { out, key } => {
            let path = super::checkpoint::key_path(ctx, key);
            let (key, created) = CheckpointKey::load_or_create(&path).map_err(audit_failure)?;
            if let Some(out) = &out {
                key.write_public(out).map_err(audit_failure)?;
            }
            if ctx.json {
                super::print_json(&serde_json::json!({
                    "public_key": key.public_key().to_hex(),
                    "log_id": key.log_id(),
                    "key_file": path,
                    "created": created,
                    "written_to": out,
                }));
            } else {
                if created {
                    eprintln!("created the checkpoint-signing key {}", path.display());
                }
                println!("{}", key.public_key().to_hex());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
