//! The browser harness itself: Chromium starts headless as root, loads a page, reads it back and
//! takes a screenshot. Skips, saying why, without `chromium` and `chromedriver`.

#![cfg(feature = "browser")]

use test_support::browser::{unavailable, Browser};

#[tokio::test]
async fn chromium_loads_a_page_and_takes_a_screenshot() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let b = Browser::start().await.unwrap();
    b.client
        .goto("data:text/html,<title>t</title><h1 id=h>hello</h1>")
        .await
        .unwrap();
    assert_eq!(b.client.title().await.unwrap(), "t");
    let h = b.client.find(fantoccini::Locator::Id("h")).await.unwrap();
    assert_eq!(h.text().await.unwrap(), "hello");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("shot.png");
    b.screenshot(&png).await.unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    b.close().await;
}
