//! Retention prunes old finished jobs and webhook-log bodies, keeps recent ones, and only one
//! process does it at a time.

mod common;

use std::time::Duration;

use common::{TestApp, sample, us_phone};

#[tokio::test]
async fn old_jobs_and_bodies_are_pruned_by_one_process() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "always-open", false).await;
    let mut leads = Vec::new();
    for i in 0..2 {
        let mut lead = sample("website-form", &us_phone(i));
        lead["is_auto"] = serde_json::json!(0);
        let (code, body) = app.post_json(&hook.token, &lead).await;
        assert_eq!(code, 200);
        leads.push(body["lead_id"].as_str().expect("id").to_owned());
    }
    for lead in &leads {
        app.wait_for_run(lead, "routed", Duration::from_secs(10))
            .await;
    }
    // The first lead is 40 days old.
    let old = &leads[0];
    sqlx::query(
        "UPDATE webhook_log SET received_at = now() - interval '40 days' WHERE lead_id = $1::uuid",
    )
    .bind(old)
    .execute(&app.db.pool)
    .await
    .expect("age the log");
    sqlx::query(
        "UPDATE apalis.jobs SET done_at = now() - interval '40 days' WHERE id IN \
         (SELECT s.job_id FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.lead_id = $1::uuid)",
    )
    .bind(old)
    .execute(&app.db.pool)
    .await
    .expect("age the jobs");

    // While another process holds the lock, this one skips.
    let mut other = app.db.pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(0x6c66_7265_7465_6e74_i64)
        .execute(&mut *other)
        .await
        .expect("lock");
    let skipped = leadflow::engine::retention::prune(&app.db.pool, 30)
        .await
        .expect("prune");
    assert!(!skipped.ran);
    other.rollback().await.expect("release");

    let pruned = leadflow::engine::retention::prune(&app.db.pool, 30)
        .await
        .expect("prune");
    assert!(pruned.ran);
    assert_eq!(pruned.jobs, 2, "the old lead's qualify and route jobs");
    assert_eq!(pruned.webhook_bodies, 1);
    let bodies: Vec<(String, bool)> =
        sqlx::query_as("SELECT lead_id::text, body IS NOT NULL FROM webhook_log ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .expect("log");
    assert_eq!(
        bodies,
        vec![(leads[0].clone(), false), (leads[1].clone(), true)]
    );
    // The lead itself and its history stay: retention takes raw bodies and job rows only.
    let (code, view) = app.get_lead(old).await;
    assert_eq!(code, 200);
    assert_eq!(view["run"]["status"], "routed");
}
