//! `collect_examples`: sends training examples to worker 0, which trains the models
//! (sparse examples for the built-in models, whole pairs for encoder heads) (training is cheap next to reading; one trainer keeps it deterministic
//! whatever the worker count).

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use timely::ExchangeData;

use crate::Rows;

pub trait CollectExamples<T> {
    fn collect_examples(self, name: &str, into: Rc<RefCell<Vec<T>>>);
}

impl<T: ExchangeData> CollectExamples<T> for Rows<'_, T> {
    fn collect_examples(self, name: &str, into: Rc<RefCell<Vec<T>>>) {
        self.sink(Exchange::new(|_: &T| 0u64), name, move |(input, _)| {
            let mut v = into.borrow_mut();
            input.for_each(|_, data| v.append(data));
        });
    }
}
