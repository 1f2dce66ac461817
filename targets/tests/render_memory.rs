//! Memory of a large fleet's lowering and compose rendering, counted by a global allocator
//! (this test binary's own): what `infra preview --out` holds at its peak.
//!
//! The budgets sit between what the code needs now and what it needed before it shared
//! strings and streamed the compose file (lowering about 6.9 KB per agent, the compose
//! rendering peaking at about 5.5 times the file's size).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use orchestrator::docker;
use rivet_targets::render::compose;

/// Counts the bytes live and the most live at once since the last [`reset_peak`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    // Grows in place as the system allocator does (not as a new block plus a copy).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

const AGENTS: usize = 1000;

fn config() -> String {
    let mut text = String::from(
        "deployment:\n  target: docker\n  docker: {project_name: mem, network: mem-net, postgres_port: 0}\nagents:\n",
    );
    for i in 0..AGENTS {
        text.push_str(&format!("  agent{i:04}: {{provider: anthropic, model: claude-opus-4}}\n"));
    }
    text
}

// One test in this binary: the counters are process-wide.
#[test]
fn a_thousand_agents_lower_and_render_within_budget() {
    let text = config();
    let fleet = support::fleet(&text);
    assert_eq!(fleet.agents.len(), AGENTS);

    let before = live();
    let resources = docker::resources(&fleet);
    let per_agent = (live() - before) / AGENTS;
    eprintln!("lowering: {per_agent} bytes per agent");
    assert!(per_agent < 5000, "lowering holds {per_agent} bytes per agent (budget 5,000)");

    // What `infra preview --out` does: each file written as it is rendered.
    let before = live();
    reset_peak();
    let mut sink = Discard::default();
    compose::write(&fleet, &resources, "rivet.config.yaml", &text, &mut sink).unwrap();
    let rendering = peak() - before;
    let compose = sink.sizes.iter().find(|(path, _)| path == "docker-compose.yaml").expect("a compose file").1;
    let ratio = rendering as f64 / compose as f64;
    eprintln!("rendering: {rendering} bytes at the peak, {ratio:.2} times the {compose} byte compose file");
    assert!(ratio < 0.25, "rendering peaked at {rendering} bytes for a {compose} byte compose file (budget 25 %)");

    // In memory, the files are held once (not copied through rendering contexts).
    let before = live();
    reset_peak();
    let files = compose::artifacts(&fleet, &resources, "rivet.config.yaml", &text).unwrap();
    let held = peak() - before;
    let total: usize = files.iter().map(|f| f.contents.len()).sum();
    assert!(held < 3 * total, "artifacts peaked at {held} bytes for {total} bytes of files (budget 3 times)");
}

/// Counts what is written, keeps nothing.
#[derive(Default)]
struct Discard {
    sizes: Vec<(String, usize)>,
}

impl compose::Sink for Discard {
    type Error = rivet_targets::render::RenderError;

    fn start(&mut self, path: &str, _secret: bool) -> Result<(), Self::Error> {
        self.sizes.push((path.to_string(), 0));
        Ok(())
    }

    fn write(&mut self, text: &str) -> Result<(), Self::Error> {
        self.sizes.last_mut().expect("started").1 += text.len();
        Ok(())
    }
}
