//! Runners of the lease tests: a host, a pid, a clock the test moves and the processes that
//! exist on that host.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;

use super::lease::Runner;

/// A clock a test moves by hand (ms since the epoch).
#[derive(Clone)]
pub struct Clock(Rc<Cell<u64>>);

impl Clock {
    pub fn at(ms: u64) -> Clock {
        Clock(Rc::new(Cell::new(ms)))
    }

    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

/// The processes that exist, shared by the runners of one host.
#[derive(Clone, Default)]
pub struct Processes(Rc<std::cell::RefCell<BTreeSet<u32>>>);

impl Processes {
    pub fn with(pids: &[u32]) -> Processes {
        Processes(Rc::new(std::cell::RefCell::new(pids.iter().copied().collect())))
    }

    pub fn kill(&self, pid: u32) {
        self.0.borrow_mut().remove(&pid);
    }
}

/// Process `pid` on `host`, seeing `clock` and `processes`.
pub fn runner(host: &str, pid: u32, clock: &Clock, processes: &Processes) -> Runner {
    let (clock, processes) = (clock.0.clone(), processes.0.clone());
    Runner {
        host: host.into(),
        pid,
        clock: Box::new(move || clock.get()),
        alive: Box::new(move |pid| processes.borrow().contains(&pid)),
    }
}
