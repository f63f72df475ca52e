//! The course of one callback execution: begin or retry its attempt, wait for its time or
//! its outcome, follow up, and end the step or plan the next attempt.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sqlx::PgConnection;

use super::machine::{Event, Then, Timing, Write};
use super::plan::{Plan, Rule};
use super::policy::{Next, Outcome};
use super::state::{AttemptRow, State};
use super::{Exec, ToPlace, attempt, blocked, machine, outcome, plan, policy};
use crate::engine::queue::{self, StepJob};
use crate::engine::{Engine, RunContext, StepError};
use crate::graph::Step;
use crate::lead::{RunStatus, StepStatus};
use crate::metrics::{Observation, Pending};
use crate::timeline;

impl Exec<'_> {
    /// A fresh execution: call now if the hours allow (the attempt row is returned, committed
    /// by the caller before the provider is called; in a group, the attempt to write with the
    /// group's others), else wait for the time.
    pub(super) async fn begin_attempt(
        &self,
        tx: &mut PgConnection,
        now: Timestamp,
    ) -> Result<ToPlace, StepError> {
        let blocked = match self.group {
            Some(read) => read.blocked(self.ctx.run_id),
            None => blocked(tx, &self.ctx).await?,
        };
        if let Some(what) = blocked {
            let reason = format!("the lead's {what} is on the block list");
            self.end_without_attempt(tx, RunStatus::Unreachable, &reason)
                .await?;
            return Ok(ToPlace::Nothing);
        }
        let Some(plan) = self.plan(tx, now, Rule::Now).await? else {
            return Ok(ToPlace::Nothing);
        };
        if plan.at > now + SignedDuration::from_secs(1) {
            self.wait(tx, plan.at, Some(&plan)).await?;
            return Ok(ToPlace::Nothing);
        }
        let provider = self.engine.provider.name();
        let new =
            attempt::NewAttempt::planned(&self.ctx, self.job, &self.team_id, provider, &plan, now);
        if self.group.is_some() {
            return Ok(ToPlace::New(Box::new(new)));
        }
        let row = attempt::create(tx, new).await?;
        crate::engine::touch_run(tx, self.ctx.run_id, Some(RunStatus::Calling), None).await?;
        Ok(ToPlace::Row(row))
    }

    /// The provider did not take the call last time: ask again, still inside hours.
    pub(super) async fn retry_attempt(
        &self,
        tx: &mut PgConnection,
        a: AttemptRow,
        now: Timestamp,
    ) -> Result<Option<AttemptRow>, StepError> {
        let Some(plan) = self.plan(tx, now, Rule::Now).await? else {
            return Ok(None);
        };
        if plan.at > now + SignedDuration::from_secs(1) {
            self.wait(tx, plan.at, Some(&plan)).await?;
            return Ok(None);
        }
        Ok(Some(attempt::mark_placing(tx, a.id, now).await?))
    }

    /// When to call, or `None` (the run is failed) when the hours never allow it.
    pub(super) async fn plan(
        &self,
        tx: &mut PgConnection,
        earliest: Timestamp,
        asked: Rule,
    ) -> Result<Option<Plan>, StepError> {
        let recent = match self.group {
            Some(read) => read.recent_calls(self.ctx.lead_id),
            None => attempt::recent_calls(tx, self.ctx.lead_id, self.engine.clock.now()).await?,
        };
        let e164 = self.ctx.phone_e164.as_deref().unwrap_or_default();
        let plan = plan::when(
            self.team,
            &self.workflow.quiet_hours,
            e164,
            self.ctx.phone_region.as_deref(),
            earliest,
            asked,
            &recent,
        );
        match plan {
            Ok(plan) => Ok(Some(plan)),
            Err(no) => {
                self.end_without_attempt(tx, RunStatus::Failed, &no.to_string())
                    .await?;
                Ok(None)
            }
        }
    }

    /// Hands the step a follow-up job due at `until`; the current job then ends.
    pub(super) async fn wait(
        &self,
        tx: &mut PgConnection,
        until: Timestamp,
        plan: Option<&Plan>,
    ) -> Result<(), StepError> {
        let due = self.engine.clock.to_real(until);
        // The follow-up's id is known before its key (which counts the waits), so the step
        // row takes both in one statement.
        let job_id = queue::new_job_id();
        let (waits,): (i32,) = sqlx::query_as(
            "UPDATE steps SET waits = waits + 1, job_id = $3, status = $6, \
             next_run_at = $4, attempts = GREATEST(attempts, $5), \
             started_at = COALESCE(started_at, now()) \
             WHERE run_id = $1 AND name = $7 AND n = $2 RETURNING waits",
        )
        .bind(self.job.run_id)
        .bind(self.job.n)
        .bind(job_id.to_string())
        .bind(jiff_sqlx::Timestamp::from(due))
        .bind(self.attempt as i32)
        .bind(StepStatus::Waiting.as_str())
        .bind(Step::Callback.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let key = format!("{}:wait:{waits}", self.job.idempotency_key(Step::Callback));
        let max = self.workflow.retry.max_attempts;
        queue::push_step_keyed(tx, Step::Callback, self.job, job_id, &key, Some(due), max).await?;
        if let Some(plan) = plan {
            let attempt = attempt::count(tx, self.ctx.run_id).await? + 1;
            schedule_run(tx, &self.ctx, plan, attempt, None).await?;
        }
        Ok(())
    }

    /// A placed call whose final status has not come, its check due: ask the provider how it
    /// stands, and act on the answer as [`machine::next`] says.
    pub(super) async fn follow_up(
        &self,
        tx: &mut PgConnection,
        a: AttemptRow,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let sid = a.provider_call_id.clone().unwrap_or_default();
        let asked = self.engine.provider.status(&sid).await;
        if let Err(e) = &asked {
            tracing::warn!(attempt_id = %a.id, error = %e, "could not ask the provider about the call");
        }
        let message = asked.as_ref().err().map(|e| e.to_string());
        let event = match &asked {
            Ok(status) => Event::Asked(Ok(status.as_ref())),
            Err(_) => Event::Asked(Err(message.as_deref().unwrap_or_default())),
        };
        let timing = Timing::of(&self.engine.callbacks);
        let step = machine::next(&a, event, now, &timing, rand::random());
        let a = match (step.write, &asked) {
            (Write::Status, Ok(Some(event))) => {
                let events = std::slice::from_ref(event);
                outcome::apply_on(tx, self.engine, &self.ctx, a.id, events, self.pending).await?;
                let detail = json!({ "attempt": a.n, "status": event.call_status.as_str(), "source": "provider" });
                let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
                timeline::record(tx, lead, run, "call.reconciled", timeline::SYSTEM, detail)
                    .await?;
                match attempt::current(tx, self.job).await? {
                    Some(settled) => settled,
                    None => return Ok(()),
                }
            }
            (Write::Settle(outcome), _) => self.settle(tx, a.id, outcome, now).await?,
            _ => a,
        };
        self.then(tx, &a, step.then, now).await
    }

    /// Carries out what an attempt's transition says to do next ([`machine::Then`]), `a`
    /// being the attempt as now written. Asking the provider is not among them: the
    /// execution does that itself ([`prepare`]).
    pub(super) async fn then(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        then: Then,
        now: Timestamp,
    ) -> Result<(), StepError> {
        match then {
            Then::Nothing => Ok(()),
            Then::Wait(until) => self.wait(tx, until, None).await,
            Then::Decide => self.decide(tx, a, now).await,
            Then::DecideOrWait(_) if a.state == State::Done => self.decide(tx, a, now).await,
            Then::DecideOrWait(until) => self.wait(tx, until, None).await,
            Then::Fail(reason) if a.outcome.is_some() => {
                self.finish(tx, RunStatus::Failed, &reason, a).await
            }
            Then::Fail(reason) => {
                let output = json!({ "attempt": a.n, "outcome": null });
                self.close(tx, RunStatus::Failed, &reason, output, Some(a.n))
                    .await
            }
            Then::PlaceAgain | Then::LookUp | Then::AskStatus => {
                tracing::error!(?then, attempt_id = %a.id, "not an action for after a write");
                Ok(())
            }
        }
    }

    /// The attempt is settled: end the run, or schedule the next attempt.
    pub(super) async fn decide(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let outcome = a.outcome.unwrap_or(Outcome::Lost);
        let earlier = attempt::earlier_outcomes(tx, self.ctx.run_id, a.n).await?;
        match policy::next(outcome, &earlier, &self.team.callback) {
            Next::Finish { status, reason } => self.finish(tx, status, &reason, a).await,
            Next::Retry { after, reason } => {
                let after = SignedDuration::try_from(after).unwrap_or(SignedDuration::ZERO);
                let earliest = now.checked_add(after).unwrap_or(now);
                let Some(plan) = self.plan(tx, earliest, Rule::RetryDelay).await? else {
                    return Ok(());
                };
                let next = StepJob {
                    run_id: self.job.run_id,
                    n: self.job.n + 1,
                };
                let due = self.engine.clock.to_real(plan.at);
                crate::engine::enqueue(
                    tx,
                    Step::Callback,
                    next,
                    Some(due),
                    self.workflow.retry.max_attempts,
                )
                .await?;
                let output = json!({ "attempt": a.n, "outcome": outcome.as_str(), "next_attempt_at": plan.at, "rule": plan.rule });
                crate::engine::set_step(
                    tx,
                    Step::Callback,
                    self.job,
                    StepStatus::Ok,
                    self.attempt,
                    Some(&output),
                    None,
                )
                .await?;
                schedule_run(tx, &self.ctx, &plan, a.n + 1, Some(&reason)).await?;
                Ok(())
            }
        }
    }

    pub(super) async fn finish(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
        a: &AttemptRow,
    ) -> Result<(), StepError> {
        let outcome = a.outcome.unwrap_or(Outcome::Lost);
        let output = json!({ "attempt": a.n, "outcome": outcome.as_str() });
        self.close(tx, status, reason, output, Some(a.n)).await
    }

    /// Ends the run unless something (an operator, say) already did; counted once committed.
    pub(super) async fn end_run(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        if let Some(ended) =
            crate::engine::touch_run(tx, self.ctx.run_id, Some(status), Some(reason)).await?
        {
            self.pending.push(ended);
        }
        Ok(())
    }

    /// Gives an attempt the final outcome leadflow decided (the provider never told).
    pub(super) async fn settle(
        &self,
        tx: &mut PgConnection,
        id: uuid::Uuid,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<AttemptRow, sqlx::Error> {
        let row = attempt::settle(tx, id, outcome, now).await?;
        self.pending.push(Observation::CallbackAttempt {
            team: self.team_id.clone(),
            outcome: outcome.as_str(),
        });
        Ok(row)
    }

    pub(super) async fn end_without_attempt(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
    ) -> Result<(), StepError> {
        self.close(tx, status, reason, json!({ "reason": reason }), None)
            .await
    }

    /// Settles the step with `output` and ends the run, in the run and its timeline.
    pub(super) async fn close(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
        output: serde_json::Value,
        attempts: Option<i32>,
    ) -> Result<(), StepError> {
        let step = Step::Callback;
        let ok = StepStatus::Ok;
        crate::engine::set_step(tx, step, self.job, ok, self.attempt, Some(&output), None).await?;
        self.end_run(tx, status, reason).await?;
        let detail = json!({ "status": status, "reason": reason, "attempts": attempts });
        let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
        timeline::record(tx, lead, run, "callback.finished", timeline::SYSTEM, detail).await?;
        Ok(())
    }
}

/// A final status settled attempt `a`, whose step execution `job` waits for it: decide what
/// comes next now, inside the status's transaction, which holds the step's and the run's locks.
/// `false` when this process cannot decide for the run (its workflow or team is no longer
/// loaded): the caller wakes the step's job instead, whose failure and retries operators see,
/// and the status itself is still recorded.
pub(super) async fn settle_waiting(
    tx: &mut PgConnection,
    engine: &Engine,
    ctx: RunContext,
    job: StepJob,
    a: &AttemptRow,
    pending: &Pending,
) -> Result<bool, StepError> {
    // The job's delivery count is not known here; `set_step` keeps the larger one recorded.
    let exec = match Exec::new(engine, ctx, job, 0, pending) {
        Ok(exec) => exec,
        Err(e) => {
            tracing::warn!(run_id = %job.run_id, error = %e, "final status not settled here");
            return Ok(false);
        }
    };
    exec.decide(tx, a, engine.clock.now()).await?;
    Ok(true)
}

/// The run waits for its next call: `scheduled`, with the time and what set it, in the run
/// and in the lead's timeline (`because`: the outcome that led to a retry).
pub(super) async fn schedule_run(
    tx: &mut PgConnection,
    ctx: &RunContext,
    plan: &Plan,
    attempt: i32,
    because: Option<&str>,
) -> Result<(), sqlx::Error> {
    let entry = mark_scheduled(tx, ctx, plan, attempt, because).await?;
    timeline::record_many(tx, timeline::SYSTEM, vec![entry]).await
}

/// [`schedule_run`]'s write to the run; returns its timeline entry, to be written by the
/// caller.
pub(super) async fn mark_scheduled(
    tx: &mut PgConnection,
    ctx: &RunContext,
    plan: &Plan,
    attempt: i32,
    because: Option<&str>,
) -> Result<timeline::Entry, sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET status = $4, scheduled_for = $2, schedule_rule = $3, updated_at = now() \
         WHERE id = $1 AND status = ANY($5)",
    )
    .bind(ctx.run_id)
    .bind(jiff_sqlx::Timestamp::from(plan.at))
    .bind(plan.rule.as_str())
    .bind(RunStatus::Scheduled.as_str())
    .bind(RunStatus::active_names())
    .execute(&mut *tx)
    .await?;
    let detail = json!({
        "at": plan.at, "rule": plan.rule, "attempt": attempt,
        "lead_zone": plan.zone, "zone_rule": plan.zone_rule, "because": because,
    });
    Ok(timeline::Entry {
        lead_id: ctx.lead_id,
        run_id: Some(ctx.run_id),
        event: "callback.scheduled".to_owned(),
        detail,
    })
}
