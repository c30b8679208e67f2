//! Keeping secrets out of what the CLI prints and saves: passwords in URLs (`nats://user:pw@…`)
//! and the values of the flags that carry keys, in a command line copied into a report.

use url::Url;

/// What a hidden secret reads as.
const HIDDEN: &str = "***";

/// Flags whose value is a secret (`--flag value` or `--flag=value`).
const SECRET_FLAGS: [&str; 3] = ["--api-key", "--key", "--publish-key"];

/// `url` with its credentials hidden (the shared rule of `daisi_config`).
pub(crate) fn url(url: &Url) -> String {
    daisi_config::url_without_credentials(url)
}

/// One command-line word with any URL credentials hidden.
fn word(text: &str) -> String {
    match Url::parse(text) {
        Ok(parsed) if parsed.has_host() => url(&parsed),
        _ => text.to_owned(),
    }
}

/// `args` (the program's arguments, without its name) as one line, the values of
/// [`SECRET_FLAGS`] and URL credentials hidden.
pub(crate) fn command_line(args: &[String]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    let mut secret_next = false;
    for arg in args {
        if secret_next {
            shown.push(HIDDEN.to_owned());
            secret_next = false;
            continue;
        }
        if SECRET_FLAGS.contains(&arg.as_str()) {
            secret_next = true;
            shown.push(arg.clone());
            continue;
        }
        match arg.split_once('=') {
            Some((flag, _)) if SECRET_FLAGS.contains(&flag) => {
                shown.push(format!("{flag}={HIDDEN}"));
            }
            Some((flag, value)) if flag.starts_with("--") => {
                shown.push(format!("{flag}={}", word(value)));
            }
            _ => shown.push(word(arg)),
        }
    }
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn url_credentials_are_hidden() {
        assert_eq!(
            url(&parse("nats://bench:s3cret@nats.example:4222")),
            "nats://bench:***@nats.example:4222"
        );
        assert_eq!(
            url(&parse("nats://t0ken@127.0.0.1:4222")),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            url(&parse("nats://127.0.0.1:4222")),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn secret_flags_and_url_passwords_are_hidden_in_a_command_line() {
        let args: Vec<String> = [
            "bench",
            "spread",
            "--api-key",
            "-user-secret",
            "--key=00ff",
            "--publish-key",
            "pub-secret",
            "--nats",
            "nats://u:pw@127.0.0.1:4222",
            "--router=http://admin:pw2@127.0.0.1:8081/",
            "--rate",
            "100",
            "--company",
            "key",
        ]
        .map(str::to_owned)
        .to_vec();
        let line = command_line(&args);
        for secret in ["user-secret", "00ff", "pub-secret", "pw@", "pw2"] {
            assert!(!line.contains(secret), "{secret} shows in {line}");
        }
        assert_eq!(
            line,
            "bench spread --api-key *** --key=*** --publish-key *** --nats nats://u:***@127.0.0.1:4222 \
             --router=http://admin:***@127.0.0.1:8081/ --rate 100 --company key"
        );
    }
}
