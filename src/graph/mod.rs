//! The lead graph, declared once: every step, the queue it runs on, what kind of work it does
//! and what may follow it. Whatever lists steps derives from [`GRAPH`]: the queues and the
//! workers started for them, the metric slots of live workers, replay's prerequisites, the
//! CLI's and the OpenAPI document's step names, the console's filters.
//!
//! A step's [`Kind`] says what the engine may do with it: a database-only step may run inside
//! its predecessor's transaction (route runs in qualify's), and a step with an external effect
//! decides in a transaction and performs the effect after the commit (the callback's call).

mod decision;
mod qualify;
mod route;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use decision::{Decide, Decision, EarlierMatch, Read, Reads, RunContext, Verdict, View};

/// A step of the lead graph. Its position in [`GRAPH`] is its discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Validate,
    Qualify,
    Route,
    Callback,
}

/// What a step does, which decides how the engine runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Runs inline at intake, in the transaction that stores the lead: the sender gets its
    /// verdict in the answer. No queue, no worker.
    Intake,
    /// Reads and writes the database only: it may run inside its predecessor's transaction.
    Database,
    /// Has an effect outside the database (a phone call): decided in a transaction, performed
    /// after the commit, its answer recorded in a transaction of its own.
    Effect,
}

/// One step of the graph.
#[derive(Debug)]
pub struct Node {
    pub step: Step,
    /// How the step is named in the database, logs, metrics, the CLI and the API.
    pub name: &'static str,
    /// The apalis queue its jobs run on (named explicitly: apalis's default is a type path).
    pub queue: &'static str,
    pub kind: Kind,
    /// The steps a run may go on to from this one.
    pub next: &'static [Step],
    /// Whether a settled execution, by its recorded output, produced what the step after it
    /// needs: a replay may start from that next step only then.
    pub passed: fn(&serde_json::Value) -> bool,
    /// A database-only step's decision ([`Kind::Database`] steps have one, the others none).
    pub decide: Option<Decide>,
    /// What the engine reads for the step's runs before it decides.
    pub reads: &'static [Read],
}

/// The lead graph: validate → qualify → route → callback.
pub const GRAPH: [Node; 4] = [
    Node {
        step: Step::Validate,
        name: "validate",
        queue: "leadflow.validate",
        kind: Kind::Intake,
        next: &[Step::Qualify],
        passed: |_| true,
        decide: None,
        reads: &[],
    },
    Node {
        step: Step::Qualify,
        name: "qualify",
        queue: "leadflow.qualify",
        kind: Kind::Database,
        next: &[Step::Route],
        passed: |output| output["qualified"] == true,
        decide: Some(qualify::decide),
        reads: qualify::READS,
    },
    Node {
        step: Step::Route,
        name: "route",
        queue: "leadflow.route",
        kind: Kind::Database,
        next: &[Step::Callback],
        passed: |output| output["team"].is_string(),
        decide: Some(route::decide),
        reads: route::READS,
    },
    Node {
        step: Step::Callback,
        name: "callback",
        queue: "leadflow.callback",
        kind: Kind::Effect,
        next: &[],
        passed: |_| true,
        decide: None,
        reads: &[],
    },
];

/// How many steps run on workers (every step but intake's).
pub const WORKER_COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < GRAPH.len() {
        if !matches!(GRAPH[i].kind, Kind::Intake) {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The steps that run on workers, each on its own queue, in graph order.
pub const WORKER_STEPS: [Step; WORKER_COUNT] = {
    let mut steps = [GRAPH[0].step; WORKER_COUNT];
    let (mut i, mut j) = (0, 0);
    while i < GRAPH.len() {
        if !matches!(GRAPH[i].kind, Kind::Intake) {
            steps[j] = GRAPH[i].step;
            j += 1;
        }
        i += 1;
    }
    steps
};

impl Step {
    /// Every step, in graph order.
    pub const ALL: [Step; GRAPH.len()] = {
        let mut steps = [GRAPH[0].step; GRAPH.len()];
        let mut i = 0;
        while i < GRAPH.len() {
            steps[i] = GRAPH[i].step;
            i += 1;
        }
        steps
    };

    /// The step's entry in [`GRAPH`].
    pub fn node(self) -> &'static Node {
        &GRAPH[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.node().name
    }

    pub fn queue(self) -> &'static str {
        self.node().queue
    }

    pub fn kind(self) -> Kind {
        self.node().kind
    }

    /// Whether the step runs on workers, on its queue.
    pub fn on_workers(self) -> bool {
        self.kind() != Kind::Intake
    }

    /// The step a run goes on to from this one, if any.
    pub fn following(self) -> Option<Step> {
        self.node().next.first().copied()
    }

    /// The first step on workers: the one intake hands its leads to.
    pub fn first_on_workers() -> Step {
        WORKER_STEPS[0]
    }

    /// The step a run comes to this one from, if any.
    pub fn previous(self) -> Option<Step> {
        GRAPH
            .iter()
            .find(|n| n.next.contains(&self))
            .map(|n| n.step)
    }

    /// The worker step whose queue is `queue`.
    pub fn of_queue(queue: &str) -> Option<Step> {
        WORKER_STEPS.into_iter().find(|s| s.queue() == queue)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step name that is not in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStep(pub String);

impl fmt::Display for UnknownStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
        write!(
            f,
            "unknown step {:?}; expected one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownStep {}

impl FromStr for Step {
    type Err = UnknownStep;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Step::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStep(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_sits_at_its_own_place_in_the_graph() {
        for (i, node) in GRAPH.iter().enumerate() {
            assert_eq!(node.step as usize, i, "{}", node.name);
            assert_eq!(node.name.parse::<Step>(), Ok(node.step));
            assert_eq!(node.queue, format!("leadflow.{}", node.name));
        }
        assert!("done".parse::<Step>().is_err());
    }

    #[test]
    fn the_graph_starts_at_intake_and_every_later_step_has_one_way_in() {
        assert_eq!(GRAPH[0].kind, Kind::Intake);
        assert_eq!(Step::ALL[0].previous(), None);
        for step in Step::ALL.into_iter().skip(1) {
            let ways_in = GRAPH.iter().filter(|n| n.next.contains(&step)).count();
            assert_eq!(ways_in, 1, "{step}");
            let before = step.previous().map(|p| p as usize);
            assert!(
                before.is_some_and(|b| b < step as usize),
                "{step} after its predecessor"
            );
        }
        assert!(GRAPH.iter().skip(1).all(|n| n.kind != Kind::Intake));
    }

    #[test]
    fn database_steps_and_only_they_decide_purely_and_each_goes_on_one_way() {
        for node in &GRAPH {
            assert_eq!(
                node.decide.is_some(),
                node.kind == Kind::Database,
                "{}",
                node.name
            );
            assert!(node.kind == Kind::Database || node.reads.is_empty());
            assert!(
                node.next.len() <= 1,
                "{}: a decision goes on one way",
                node.name
            );
        }
        assert_eq!(Step::first_on_workers(), Step::ALL[0].following().unwrap());
    }

    #[test]
    fn workers_run_every_step_but_intakes() {
        let expected: Vec<Step> = Step::ALL.into_iter().filter(|s| s.on_workers()).collect();
        assert_eq!(WORKER_STEPS.to_vec(), expected);
        for step in WORKER_STEPS {
            assert_eq!(Step::of_queue(step.queue()), Some(step));
        }
        assert_eq!(Step::of_queue(Step::Validate.queue()), None);
    }
}
