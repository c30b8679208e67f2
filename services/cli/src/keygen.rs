//! `daisi keygen`: fresh secrets for a deployment, printed as `.env` lines.

use crate::output;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Print JSON instead of .env lines.
    #[arg(long)]
    json: bool,
}

/// 32 random bytes as 64 hex characters: an AES-256 key or a strong API secret.
pub(crate) fn random_hex32() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system random generator failed: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The variables a deployment needs, freshly generated.
pub(crate) fn generate() -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("DAISI_EDGE_TOKEN_AES_KEY", random_hex32()?),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", random_hex32()?),
        ("DAISI_EDGE_SECRET_TOKEN", random_hex32()?),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", random_hex32()?),
        ("DAISI_EDGE_MINT_API_KEY", random_hex32()?),
        ("DAISI_EDGE_ADMIN_MINT_API_KEY", random_hex32()?),
        ("DAISI_ROUTER_PUBLISH_API_KEY", random_hex32()?),
    ])
}

pub(crate) fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let vars = generate()?;
    if args.json {
        let map: serde_json::Map<_, _> = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
            .collect();
        output::json(&serde_json::Value::Object(map), false);
    } else {
        output::line("# daisi secrets: keep them out of version control.");
        output::line(
            "# To rotate a token key, prepend the new key: DAISI_EDGE_TOKEN_AES_KEY=new,old",
        );
        for (k, v) in vars {
            output::line(&format!("{k}={v}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
