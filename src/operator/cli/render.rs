//! How each operator result reads as text.

use super::table::{Table, age, at, cell, opt, opt_at};
use crate::operator::jobs::{JobDetail, JobSummary};
use crate::operator::lead_list::LeadRow;
use crate::operator::leads::LeadView;
use crate::operator::queues::QueueStats;
use crate::operator::state::JobState;
use crate::operator::webhook_log::LogEntry;

pub fn more(next_cursor: &Option<String>) {
    if let Some(cursor) = next_cursor {
        println!("(more: --cursor {cursor})");
    }
}

pub fn queues(all: &[QueueStats]) -> Table {
    let mut headers = vec!["QUEUE", "PAUSED"];
    headers.extend(JobState::ALL.iter().map(|s| match s {
        JobState::Available => "AVAILABLE",
        JobState::Scheduled => "SCHEDULED",
        JobState::Running => "RUNNING",
        JobState::Retrying => "RETRYING",
        JobState::Failed => "FAILED",
        JobState::Completed => "COMPLETED",
        JobState::Cancelled => "CANCELLED",
    }));
    headers.push("OLDEST WAITING");
    let mut t = Table::new(&headers);
    for q in all {
        let mut row = vec![
            q.queue.to_owned(),
            if q.paused { "yes" } else { "no" }.to_owned(),
        ];
        row.extend(
            JobState::ALL
                .iter()
                .map(|s| q.counts.get(s.as_str()).copied().unwrap_or(0).to_string()),
        );
        row.push(q.oldest_wait_s.map(age).unwrap_or_else(|| "-".into()));
        t.row(row);
    }
    t
}

pub fn jobs(all: &[JobSummary]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "QUEUE",
        "STATE",
        "ATTEMPTS",
        "RUN AT",
        "LEAD",
        "WORKER",
        "LAST ERROR",
    ]);
    for j in all {
        t.row(vec![
            j.id.clone(),
            j.step.clone(),
            j.state.clone(),
            format!("{}/{}", j.attempts, j.max_attempts),
            at(&j.run_at),
            j.lead_id
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(&j.worker),
            cell(j.last_error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    t
}

pub fn job(j: &JobDetail) {
    let s = &j.summary;
    println!("job        {}", s.id);
    println!("queue      {} ({})", s.queue, s.state);
    println!("status     {}", j.status);
    println!("args       {}", j.args);
    println!("attempts   {}/{}", s.attempts, s.max_attempts);
    println!("run at     {}", at(&s.run_at));
    println!("next run   {}", opt_at(&j.next_run_at));
    println!("worker     {}", opt(&s.worker));
    println!(
        "lead       {}",
        s.lead_id
            .map(|l| l.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "run        {}",
        s.run_id
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!("last error {}", opt(&s.last_error));
    if let Some(step) = &j.step_execution {
        println!(
            "step       {} #{}: {} ({}/{} attempts){}",
            s.step,
            s.n.unwrap_or_default(),
            step.status,
            step.attempts,
            step.max_attempts,
            match &step.job_id {
                Some(current) if current != &s.id => format!("; superseded by job {current}"),
                _ => String::new(),
            }
        );
    }
}

pub fn leads(all: &[LeadRow]) -> Table {
    let mut t = Table::new(&[
        "ID", "RECEIVED", "HOOK", "PHONE", "EMAIL", "STATUS", "REASON",
    ]);
    for l in all {
        t.row(vec![
            l.id.to_string(),
            at(&l.received_at),
            l.hook.clone(),
            opt(&l.phone),
            opt(&l.email),
            opt(&l.status),
            cell(l.reason.as_deref().unwrap_or("-"), 60),
        ]);
    }
    t
}

pub fn lead(v: &LeadView) {
    let l = &v.lead;
    println!("lead      {}", l.id);
    println!("received  {} via {}", at(&l.received_at), l.hook);
    println!("name      {}", opt(&l.name));
    println!("phone     {}", opt(&l.phone));
    println!("email     {}", opt(&l.email));
    println!("company   {}", opt(&l.company));
    if let Some(run) = &v.run {
        println!(
            "run       {} {}{}",
            run.id,
            run.status,
            run.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("\nSTEPS");
    let mut steps = Table::new(&[
        "STEP", "N", "STATUS", "ATTEMPTS", "FINISHED", "JOB", "ERROR",
    ]);
    for s in &v.steps {
        steps.row(vec![
            s.name.clone(),
            s.n.to_string(),
            s.status.clone(),
            s.attempts.to_string(),
            opt_at(&s.finished_at),
            opt(&s.job_id),
            cell(s.error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    steps.print();
    if !v.callback.attempts.is_empty() {
        println!("\nCALL ATTEMPTS");
        let mut calls = Table::new(&["N", "STATE", "OUTCOME", "SCHEDULED", "PLACED", "PROVIDER"]);
        for a in &v.callback.attempts {
            calls.row(vec![
                a.n.to_string(),
                a.state.clone(),
                opt(&a.outcome),
                at(&a.scheduled_for),
                opt_at(&a.placed_at),
                a.provider.clone(),
            ]);
        }
        calls.print();
    }
    if v.runs.len() > 1 {
        println!("\nRUNS");
        let mut runs = Table::new(&["RUN", "STATUS", "STARTED", "REPLAYS"]);
        for r in &v.runs {
            runs.row(vec![
                r.id.to_string(),
                r.status.clone(),
                at(&r.created_at),
                r.replay_of
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        runs.print();
    }
    println!("\nTIMELINE");
    let mut timeline = Table::new(&["AT", "EVENT", "BY", "DETAIL"]);
    for e in &v.timeline {
        timeline.row(vec![
            at(&e.at),
            e.event.clone(),
            e.actor.clone(),
            cell(&e.detail.to_string(), 80),
        ]);
    }
    timeline.print();
}

pub fn log(all: &[LogEntry]) -> Table {
    let mut t = Table::new(&[
        "ID", "RECEIVED", "HOOK", "STATUS", "OUTCOME", "LEAD", "REASON",
    ]);
    for e in all {
        t.row(vec![
            e.id.to_string(),
            at(&e.received_at),
            opt(&e.hook),
            e.status_code.to_string(),
            e.outcome.clone(),
            e.lead_id
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            cell(e.reason.as_deref().unwrap_or("-"), 60),
        ]);
    }
    t
}
