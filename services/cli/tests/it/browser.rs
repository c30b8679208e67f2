//! The console page end to end in headless Chromium (Debian's `chromium` and
//! `chromium-driver`): it connects with the token from its URL, shows a published event, closes
//! cleanly (`wasClean`, code 1000) when the user disconnects, and shows a clean 4402 close when
//! the same user connects elsewhere.

use crate::stack::{API_KEY, Dev};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

/// chromedriver on a free port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver is needed (apt-get install chromium chromium-driver): {e}")
        });
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return Driver { _child: child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

fn chromium_binary() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/usr/bin/chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_connects_shows_events_and_a_takeover() {
    let dev = Dev::start().await;
    let (code, token) = dev
        .daisi(&[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "browser",
        ])
        .await;
    assert_eq!(code, 0, "{token}");
    let token = token.trim().to_owned();
    let fragment = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("company", "c1")
        .append_pair("agent", "a1")
        .append_pair("token", &token)
        .append_pair("key", API_KEY)
        .append_pair("autoconnect", "1")
        .finish();
    let page = format!("http://{}/console#{fragment}", dev.edge);

    let driver = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium_binary(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a headless chromium session");
    let result = async {
        browser.goto(&page).await?;
        let state = browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("#state.open"))
            .await?;
        assert_eq!(state.text().await?, "open");

        let (code, out) = dev
            .daisi(&[
                "publish",
                "websocket.c1.a1.chats",
                r#"{"event_id":"9:chats:9","row_data":{"from":"browser test"}}"#,
            ])
            .await;
        assert_eq!(code, 0, "{out}");
        let event = browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(r#"#log li[data-kind="event chat"]"#))
            .await?;
        assert!(event.text().await?.contains("browser test"));

        // Disconnect: the browser sends close(1000), the edge answers it, and the browser
        // reports a clean close with that code (not 1006).
        browser.find(Locator::Id("stop")).await?.click().await?;
        let closed = browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(r#"#log li.close"#))
            .await?;
        assert_eq!(
            closed.attr("data-kind").await?.as_deref(),
            Some("close 1000"),
            "{}",
            closed.text().await?
        );
        assert_eq!(closed.attr("data-clean").await?.as_deref(), Some("true"));

        // Connect again, then the same user connects elsewhere: the page shows a clean 4402
        // close and stays closed.
        browser.find(Locator::Id("go")).await?.click().await?;
        browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("#state.open"))
            .await?;
        let mut taker = dev.tail(&["--token", &token]);
        let closed = browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(r#"#log li[data-kind="close 4402"]"#))
            .await?;
        assert!(
            closed.text().await?.contains("Session taken over"),
            "{}",
            closed.text().await?
        );
        assert_eq!(
            closed.attr("data-clean").await?.as_deref(),
            Some("true"),
            "{}",
            closed.text().await?
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let state = browser.find(Locator::Css("#state")).await?.text().await?;
        assert_eq!(state, "closed", "a takeover must not trigger reconnects");
        taker.kill();
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    // What the page showed, for the failure message.
    let page_log = match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("(page unreadable: {e})"),
    };
    let _ = browser.close().await;
    if let Err(e) = result {
        panic!(
            "browser test failed: {e}; the page showed:\n{page_log}\ndaisi dev logs:\n{}",
            dev.process.logs()
        );
    }
}
