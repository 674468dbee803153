//! `synpref explain curate ARGS`: the dataflow graphs a curate run builds, by operator
//! names and edges, without reading a row or training a model. The graphs are built
//! by the same code as a run (`survey::build`, `dataflow::build`), recorded through
//! timely's logging of operator and channel creation, and printed in a stable text
//! form (golden-file tested).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use synpref_operators::consistency_rule::RuleInputs;
use synpref_operators::models::builtin::HashedBtModel;
use synpref_operators::models::RewardModel;
use synpref_operators::write_parts::OutputSinks;
use timely::logging::{TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

use super::plan::CuratePlan;
use super::{dataflow, survey};

/// Builds curate's dataflows on one worker with empty inputs and returns their graphs.
pub fn explain_worker(worker: &mut Worker, plan: &CuratePlan) -> String {
    let events: Rc<RefCell<Vec<TimelyEvent>>> = Rc::default();
    {
        let events = events.clone();
        worker
            .log_register()
            .expect("a worker has a log registry")
            .insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
                if let Some(data) = data {
                    events
                        .borrow_mut()
                        .extend(data.iter().map(|(_, e)| e.clone()));
                }
            });
    }
    let collectors = survey::Collectors::new();
    let (input, _probe, _) = survey::build(worker, plan, &collectors);
    drop(input);
    collectors.content_index.borrow_mut().seal();
    collectors.pair_index.borrow_mut().seal();
    // Placeholder models: the graph does not depend on the weights.
    let zero: Arc<dyn RewardModel> = Arc::new(HashedBtModel::zero(10));
    let graph = dataflow::Graph {
        selection: survey::Selection {
            content_index: collectors.content_index.clone(),
            pair_index: collectors.pair_index.clone(),
            deciders: Default::default(),
            near: Default::default(),
        },
        sinks: Rc::new(RefCell::new(OutputSinks::new(Vec::new(), None))),
        scorers: (zero.clone(), zero),
        failure: Rc::default(),
        schema: synpref_engine::output::OutputSchema {
            has_prompt: true,
            prompt: synpref_engine::output::ConvForm::Text,
            chosen: synpref_engine::output::ConvForm::Text,
            rejected: synpref_engine::output::ConvForm::Text,
            attributes: [false; 6],
            format: plan.spec.format,
            file_format: plan.spec.file_format(),
            matched_ngram: !plan.spec.decontaminate.is_empty(),
            duplicate_of: plan.spec.near_dup.enabled,
        },
        extras: Arc::new(
            synpref_engine::extras::ExtrasCodec::new(Vec::new()).expect("no extra columns"),
        ),
        file_urls: Arc::default(),
        rule: Arc::new(RuleInputs {
            settings: plan.spec.rule(),
            gold: plan.gold.clone(),
            judges: plan.judges.clone(),
        }),
    };
    let (input, _probe, _) =
        dataflow::GraphBuilder::build(&dataflow::CurateGraph, worker, plan, graph);
    drop(input);
    while !worker.installed_dataflows().is_empty() {
        worker.step();
    }
    // Dropping the logger flushes what it still buffers.
    drop(worker.log_register().expect("registry").remove("timely"));
    let events = events.borrow();
    render(&events)
}

/// The graphs as text: per dataflow, its operators by index and its edges.
fn render(events: &[TimelyEvent]) -> String {
    let mut names: BTreeMap<Vec<usize>, String> = BTreeMap::new();
    let mut edges: BTreeMap<Vec<usize>, Vec<((usize, usize), (usize, usize))>> = BTreeMap::new();
    for e in events {
        match e {
            TimelyEvent::Operates(o) => {
                names.insert(o.addr.clone(), o.name.clone());
            }
            TimelyEvent::Channels(c) => {
                edges
                    .entry(c.scope_addr.clone())
                    .or_default()
                    .push((c.source, c.target));
            }
            _ => {}
        }
    }
    let mut out = String::new();
    for (addr, name) in &names {
        let depth = addr.len();
        if depth == 1 {
            out.push_str(&format!("dataflow {name}\n"));
            continue;
        }
        let indent = "  ".repeat(depth - 1);
        out.push_str(&format!("{indent}{:>2} {name}\n", addr[depth - 1]));
        // Edges of a scope after its operators, when its last operator is printed.
        let scope = &addr[..depth - 1];
        let next_is_same_scope = names
            .range(addr.clone()..)
            .nth(1)
            .is_some_and(|(a, _)| a.len() >= depth && a[..depth - 1] == *scope);
        if !next_is_same_scope {
            if let Some(list) = edges.get(scope) {
                let mut list = list.clone();
                list.sort();
                let label = |op: usize| -> String {
                    if op == 0 {
                        "(scope)".to_string()
                    } else {
                        let mut a = scope.to_vec();
                        a.push(op);
                        names.get(&a).cloned().unwrap_or_else(|| format!("#{op}"))
                    }
                };
                for ((s, sp), (t, tp)) in list {
                    out.push_str(&format!(
                        "{indent}   {}[{s}].{sp} -> {}[{t}].{tp}\n",
                        label(s),
                        label(t)
                    ));
                }
            }
        }
    }
    out
}
