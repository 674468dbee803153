//! Collective steps between dataflows: every worker contributes a value and every worker
//! receives all of them, in worker order. Jobs use this at their barriers (after the
//! survey pass: file observations, the trained models, counts for the report), so that
//! a value computed on one worker reaches the others through timely's own channels,
//! across threads and processes alike.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;
use timely::ExchangeData;

use crate::error::{Error, Result};

/// Longest a worker sleeps waiting for peers before it looks again.
pub const PARK: std::time::Duration = std::time::Duration::from_millis(1);

/// Gathers one value from every worker onto every worker, ordered by worker index.
/// Every worker must call it at the same point of its program.
/// Within a process values move through typed channels (no serialization); between
/// processes timely serializes them with serde.
pub fn all_gather<T: ExchangeData + Clone>(worker: &mut Worker, value: &T) -> Result<Vec<T>> {
    gather(worker, value, Gather::All).map(|v| v.expect("every worker receives"))
}

/// Gathers one value from every worker onto worker 0 only (`Some`, ordered by worker
/// index; the others get `None`): for what only worker 0 needs, so that the others
/// neither receive nor hold it. Every worker must call it at the same point.
pub fn gather_to_leader<T: ExchangeData + Clone>(
    worker: &mut Worker,
    value: &T,
) -> Result<Option<Vec<T>>> {
    gather(worker, value, Gather::Leader)
}

/// Who receives a gather.
#[derive(Clone, Copy, PartialEq)]
enum Gather {
    All,
    Leader,
}

fn gather<T: ExchangeData + Clone>(
    worker: &mut Worker,
    value: &T,
    to: Gather,
) -> Result<Option<Vec<T>>> {
    use timely::dataflow::operators::core::Exchange;
    let received: Rc<RefCell<Vec<(usize, T)>>> = Rc::new(RefCell::new(Vec::new()));
    let sink = received.clone();
    let name = match to {
        Gather::All => "AllGather",
        Gather::Leader => "GatherToLeader",
    };
    let (mut input, probe) = worker.dataflow_named::<u64, _, _>(name, |scope| {
        let (input, stream) = scope.new_input::<(usize, T)>();
        let routed = match to {
            Gather::All => stream.broadcast(),
            Gather::Leader => stream.exchange(|_: &(usize, T)| 0u64),
        };
        let (probe, _) = routed
            .inspect(move |x: &(usize, T)| sink.borrow_mut().push(x.clone()))
            .probe();
        (input, probe)
    });
    input.send((worker.index(), value.clone()));
    drop(input);
    // Park rather than spin while waiting: at a barrier the other workers often wait
    // for worker 0 to finish training, and spinning threads would take its CPU.
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }
    if to == Gather::Leader && worker.index() != 0 {
        return Ok(None);
    }
    let mut got = received.borrow_mut().split_off(0);
    got.sort_by_key(|(i, _)| *i);
    if got.len() != worker.peers() {
        return Err(Error::Worker(format!(
            "{name}: got {} values from {} workers",
            got.len(),
            worker.peers()
        )));
    }
    Ok(Some(got.into_iter().map(|(_, v)| v).collect()))
}

/// Runs `compute` on worker 0 only and hands its result to every worker.
pub fn compute_on_leader<T, F>(worker: &mut Worker, compute: F) -> Result<T>
where
    T: ExchangeData + Clone,
    F: FnOnce() -> Result<T>,
{
    let local: Option<std::result::Result<T, (i32, String)>> = if worker.index() == 0 {
        Some(compute().map_err(|e| (e.exit_code(), e.to_string())))
    } else {
        None
    };
    let mut all = all_gather(worker, &local)?;
    match all.swap_remove(0) {
        Some(Ok(v)) => Ok(v),
        Some(Err((exit_code, message))) => Err(Error::PeerFailed {
            worker: 0,
            exit_code,
            message,
        }),
        None => Err(Error::Worker("worker 0 sent nothing".into())),
    }
}

/// Makes every worker agree on failure: if any worker has an error, all return one
/// (the first by worker index), so that none waits forever for peers that stopped.
pub fn agree_on_errors(worker: &mut Worker, local: Result<()>) -> Result<()> {
    let message: Option<(i32, String)> =
        local.as_ref().err().map(|e| (e.exit_code(), e.to_string()));
    let all = all_gather(worker, &message)?;
    local?;
    for (i, m) in all.into_iter().enumerate() {
        if let Some((code, message)) = m {
            return Err(Error::PeerFailed {
                worker: i,
                exit_code: code,
                message,
            });
        }
    }
    Ok(())
}
