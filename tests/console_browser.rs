//! The console end to end, in a real headless Chromium: log in, find the failed lead, click
//! Retry, and watch its run complete. On failure a screenshot is saved to
//! target/console-browser-failure.png. Needs Debian's `chromium` and `chromium-driver`: in
//! CI (`CI` set) their absence fails the test; elsewhere it is skipped, loudly.

mod common;
mod operator_support;
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestApp};
use operator_support::{app, failed_lead};
use webdriver::{Driver, Session, find_chromium};

#[tokio::test]
async fn an_operator_retries_a_failed_lead_in_the_browser() {
    let Some((chromium, chromedriver)) = find_chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI must run the browser test: install chromium and chromium-driver (.ci/run does)"
            );
        }
        eprintln!(
            "\n*** SKIPPED an_operator_retries_a_failed_lead_in_the_browser: no chromium/chromedriver \
             (apt-get install chromium chromium-driver) ***\n"
        );
        return;
    };
    let started = Instant::now();
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let (lead, _job) = failed_lead(&app, &hook.token, "website-form", 1).await;

    let driver = Driver::start(&chromedriver).await.expect("chromedriver");
    let profile =
        std::env::temp_dir().join(format!("lf-chromium-{}", uuid::Uuid::new_v4().simple()));
    let browser = driver
        .session(&chromium, &profile)
        .await
        .expect("a Chromium session");
    let outcome = retry_in_browser(&browser, &app, &lead).await;
    if let Err(why) = &outcome {
        let shot =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-browser-failure.png");
        match browser.screenshot(&shot).await {
            Ok(()) => eprintln!("screenshot of the failure: {}", shot.display()),
            Err(e) => eprintln!("no screenshot: {e}"),
        }
        eprintln!("page at failure: {:?}", browser.url().await);
        browser.quit().await;
        let _ = std::fs::remove_dir_all(&profile);
        panic!("{why}");
    }
    browser.quit().await;
    let _ = std::fs::remove_dir_all(&profile);
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

async fn retry_in_browser(b: &Session<'_>, app: &TestApp, lead: &str) -> webdriver::Result<()> {
    // Any console page sends a stranger to the log-in form.
    b.goto(&app.url("/console")).await?;
    if !b.url().await?.ends_with("/console/login") {
        return Err(format!("not sent to log in: {}", b.url().await?));
    }
    b.type_into("#token", ADMIN_TOKEN).await?;
    b.type_into("#name", "e2e").await?;
    b.click("#login").await?;
    b.text("#queues").await?;
    b.wait_for_url("/console", Duration::from_secs(10)).await?;

    // Find the failed lead: Leads, filter by status, open it.
    b.click("header a[href='/console/leads']").await?;
    b.click("select[name=status] option[value=failed]").await?;
    b.click("form[action='/console/leads'] button").await?;
    // The unfiltered list has the same link: click it only once the filtered page is in.
    b.wait_for_url("status=failed", Duration::from_secs(10))
        .await?;
    b.click(&format!("#leads a[href='/console/leads/{lead}']"))
        .await?;
    b.wait_for_text("#run-status", "failed", Duration::from_secs(5))
        .await?;

    // Retry its failed step; the page comes back with the notice and refreshes itself
    // until the run completes.
    b.click("#steps button").await?;
    b.wait_for_url(&format!("/console/leads/{lead}"), Duration::from_secs(10))
        .await?;
    let notice = b.text("p.notice").await?;
    if !notice.contains("queued again") {
        return Err(format!("unexpected notice: {notice}"));
    }
    b.wait_for_text("#run-status", "routed", Duration::from_secs(30))
        .await?;
    let timeline = b.text("#timeline").await?;
    if !timeline.contains("operator.retry") || !timeline.contains("console:e2e") {
        return Err(format!("the retry is not in the timeline: {timeline}"));
    }
    Ok(())
}
