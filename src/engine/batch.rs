//! The batching under group commit: runner tasks that each take the next batch of items
//! waiting on a shared channel (one batch collects while another waits on PostgreSQL), and
//! the rule that a second delivery of an execution never shares its first's batch.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Transactions of one step's group open at once in a process: one group collects while the
/// other waits on PostgreSQL.
const RUNNERS: usize = 2;

/// Starts [`RUNNERS`] tasks on `tasks`, each taking the next batch of up to `max` items from
/// one shared channel and handing it to `work`. They end once every sender is dropped.
pub(super) fn spawn_runners<T, F, Fut>(
    tasks: &mut JoinSet<()>,
    max: usize,
    work: F,
) -> mpsc::Sender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(max * RUNNERS);
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..RUNNERS {
        let (receiver, work) = (receiver.clone(), work.clone());
        tasks.spawn(async move {
            while let Some(items) = next_batch(&receiver, max).await {
                work(items).await;
            }
        });
    }
    sender
}

/// The next items waiting on `receiver`: the first as soon as it comes, then whatever else is
/// already there, up to `max`. `None` once every sender is gone.
async fn next_batch<T>(receiver: &Mutex<mpsc::Receiver<T>>, max: usize) -> Option<Vec<T>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut items = vec![first];
    while items.len() < max {
        match receiver.try_recv() {
            Ok(item) => items.push(item),
            Err(_) => break,
        }
    }
    Some(items)
}

/// Keeps the first item of each step execution (`key`: run and execution number); a second
/// one in the same group (which would not see the first's writes) runs alone, after the
/// group, and finds the step settled.
pub(super) fn split_repeats<T>(items: Vec<T>, key: impl Fn(&T) -> (Uuid, i32)) -> (Vec<T>, Vec<T>) {
    let mut seen = HashSet::new();
    items.into_iter().partition(|item| seen.insert(key(item)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item {
        job: (Uuid, i32),
        job_id: &'static str,
    }

    fn item(run_id: Uuid, n: i32, job_id: &'static str) -> Item {
        Item {
            job: (run_id, n),
            job_id,
        }
    }

    #[test]
    fn a_second_delivery_of_an_execution_runs_after_the_group() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let items = vec![
            item(a, 1, "j1"),
            item(b, 1, "j2"),
            item(a, 1, "j3"),
            item(a, 2, "j4"),
        ];
        let (group, alone) = split_repeats(items, |i| i.job);
        let ids = |v: &[Item]| v.iter().map(|i| i.job_id).collect::<Vec<_>>();
        assert_eq!(ids(&group), ["j1", "j2", "j4"]);
        assert_eq!(ids(&alone), ["j3"]);
    }
}
