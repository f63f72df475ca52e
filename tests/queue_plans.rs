//! apalis's own queries stay cheap as apalis.jobs fills up with the jobs a worker has finished
//! (apalis keeps `lock_by` on them): the acknowledgement finds its jobs by primary key, and
//! the rescue of a dead worker's jobs and the hand-back at shutdown use the small index of
//! jobs in flight. Before leadflow's migration the acknowledgement read every job the worker
//! had ever run, on every batch.

mod common;

use std::time::Duration;

use common::TestDb;
use sqlx::PgPool;

/// apalis-postgres 1.0's acknowledgement (`queries/task/handle_result.sql`), with the values
/// a worker binds.
const ACK: &str = "WITH j AS ( \
       SELECT (value ->> 'task_id')::text AS task_id, (value ->> 'attempt')::integer AS attempt, \
              value -> 'result' AS result, value ->> 'status' AS status \
       FROM jsonb_array_elements('[{\"task_id\":\"job-17\",\"attempt\":1,\"result\":null,\"status\":\"Done\"}]'::jsonb) AS value), \
     locked AS ( \
       SELECT jobs.id FROM apalis.jobs AS jobs INNER JOIN j ON j.task_id = jobs.id \
       WHERE jobs.lock_by = 'worker-1' ORDER BY jobs.id FOR UPDATE) \
     UPDATE apalis.jobs AS jobs SET status = j.status, attempts = j.attempt, \
            last_result = j.result, done_at = NOW() \
     FROM j INNER JOIN locked ON locked.id = j.task_id WHERE jobs.id = locked.id";

/// apalis-postgres 1.0's rescue of a silent worker's jobs (`reenqueue_orphaned.sql`), its
/// selecting part.
const RESCUE: &str = "SELECT jobs.id FROM apalis.jobs \
     INNER JOIN apalis.workers ON jobs.lock_by = workers.id \
     WHERE (jobs.status = 'Running' OR jobs.status = 'Queued') \
       AND NOW() - workers.last_seen >= interval '30 seconds' \
       AND workers.worker_type = 'leadflow.qualify' \
     FOR UPDATE OF jobs SKIP LOCKED";

/// leadflow's hand-back of a stopped worker's claimed jobs (`worker.rs`).
const HAND_BACK: &str = "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
     WHERE lock_by = 'worker-1' AND status IN ('Queued', 'Running')";

async fn plan(pool: &PgPool, sql: &str) -> String {
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(pool)
        .await
        .expect("explain");
    rows.into_iter()
        .map(|(l,)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_workers_finished_jobs_are_not_read_by_its_acknowledgements_or_rescues() {
    let db = TestDb::new().await;
    // leadflow's own pool: its connection settings are part of what is tested.
    let pool = leadflow::db::connect(&db.url, 2, Duration::from_secs(10))
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen) \
         VALUES ('worker-1', 'leadflow.qualify', 'test', now() - interval '1 hour')",
    )
    .execute(&pool)
    .await
    .expect("worker");
    // 20,000 finished jobs and a few in flight, all run by the same worker.
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, \
                                  lock_by, done_at) \
         SELECT 'job-' || g, 'leadflow.qualify', '\\x00'::bytea, \
                CASE WHEN g % 5000 = 17 THEN 'Running' ELSE 'Done' END, 1, 5, now(), \
                'worker-1', now() \
         FROM generate_series(1, 20000) g",
    )
    .execute(&pool)
    .await
    .expect("jobs");
    sqlx::query("ANALYZE apalis.jobs")
        .execute(&pool)
        .await
        .expect("analyze");

    let ack = plan(&pool, ACK).await;
    assert!(ack.contains("jobs_pkey"), "{ack}");
    assert!(!ack.contains("Seq Scan on jobs"), "{ack}");
    assert!(
        !ack.contains("Bitmap"),
        "the ack must not gather jobs by lock_by:\n{ack}"
    );

    for sql in [RESCUE, HAND_BACK] {
        let p = plan(&pool, sql).await;
        assert!(p.contains("leadflow_jobs_in_flight_by_worker"), "{p}");
        assert!(!p.contains("Seq Scan on jobs"), "{p}");
    }

    // And they still do their work: the in-flight jobs are found, the finished ones left.
    let rescued: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(RESCUE))
        .fetch_all(&pool)
        .await
        .expect("rescue");
    let mut ids: Vec<String> = rescued.into_iter().map(|(id,)| id).collect();
    ids.sort();
    assert_eq!(ids, ["job-10017", "job-15017", "job-17", "job-5017"]);
}

async fn plan_cache_mode<'c, E: sqlx::PgExecutor<'c>>(conn: E) -> String {
    let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
        .fetch_one(conn)
        .await
        .expect("show");
    mode
}

/// leadflow's connections plan generically (the steps' array statements were planned again
/// at every execution otherwise); the operator's filtered lists, in `custom_plans`, are
/// planned for the filters they set, and only inside that read-only transaction.
#[tokio::test]
async fn the_pool_plans_generically_and_filtered_lists_for_their_filters() {
    let db = TestDb::new().await;
    let pool = leadflow::db::connect(&db.url, 2, Duration::from_secs(10))
        .await
        .expect("connect");
    assert_eq!(plan_cache_mode(&pool).await, "force_generic_plan");

    let mut tx = leadflow::db::custom_plans(&pool).await.expect("begin");
    assert_eq!(plan_cache_mode(&mut *tx).await, "force_custom_plan");
    let write = sqlx::query("CREATE TABLE not_here (x int)")
        .execute(&mut *tx)
        .await
        .expect_err("the transaction is read-only");
    assert!(write.to_string().contains("read-only"), "{write}");
    tx.rollback().await.expect("rollback");

    assert_eq!(plan_cache_mode(&pool).await, "force_generic_plan");
}
