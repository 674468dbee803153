//! `collect_examples`: sends training examples to worker 0, which trains the built-in
//! models (training is cheap next to reading; one trainer keeps it deterministic
//! whatever the worker count).

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::models::builtin::TrainExample;
use crate::Rows;

pub trait CollectExamples {
    fn collect_examples(self, name: &str, into: Rc<RefCell<Vec<TrainExample>>>);
}

impl CollectExamples for Rows<'_, TrainExample> {
    fn collect_examples(self, name: &str, into: Rc<RefCell<Vec<TrainExample>>>) {
        self.sink(
            Exchange::new(|_: &TrainExample| 0u64),
            name,
            move |(input, _)| {
                let mut v = into.borrow_mut();
                input.for_each(|_, data| v.append(data));
            },
        );
    }
}
