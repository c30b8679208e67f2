//! The deployment files agree with the settings: every service variable `.env.example` lists
//! is passed through by `docker-compose.yml` and documented in the README's tables.

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `DAISI_{EDGE,COORDINATOR,ROUTER}_*` names assigned in `.env.example` (commented or not).
fn settings() -> BTreeSet<String> {
    let names: BTreeSet<String> = read(".env.example")
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.to_owned()))
        .filter(|n| {
            ["DAISI_EDGE_", "DAISI_COORDINATOR_", "DAISI_ROUTER_"]
                .iter()
                .any(|p| n.starts_with(p))
                && n.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .collect();
    assert!(
        names.len() > 60,
        "{} settings read from .env.example",
        names.len()
    );
    names
}

#[test]
fn compose_passes_every_setting_through_and_the_readme_documents_it() {
    let compose = read("docker-compose.yml");
    let readme = read("README.md");
    let missing_in_compose: Vec<_> = settings()
        .into_iter()
        .filter(|n| !compose.contains(&format!("{n}:")))
        .collect();
    assert!(
        missing_in_compose.is_empty(),
        "docker-compose.yml lacks {missing_in_compose:?}"
    );
    let missing_in_readme: Vec<_> = settings()
        .into_iter()
        .filter(|n| !readme.contains(n.as_str()))
        .collect();
    assert!(
        missing_in_readme.is_empty(),
        "README.md lacks {missing_in_readme:?}"
    );
}
