//! Progress of long work: a line per object on a terminal (indicatif), one line per
//! event elsewhere (CI logs), JSON Lines on stdout with `--output json`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchestrator::port::ImageEvent;
use orchestrator::resource::ResourceKey;
use serde::Serialize;

use crate::execute::StepEvent;
use crate::printer::Printer;

/// One event in `--output json` (docs/output.md).
#[derive(Serialize)]
struct EventDocument<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    elapsed_ms: u128,
    node: &'a str,
    object: &'a str,
    name: &'a str,
    status: &'a str,
    detail: &'a str,
}

/// A step event as progress shows it: its object, status word and detail.
pub trait ShownStep {
    fn shown(&self) -> (&ResourceKey, &'static str, &str);
}

impl ShownStep for StepEvent {
    fn shown(&self) -> (&ResourceKey, &'static str, &str) {
        (&self.key, self.status.as_str(), &self.detail)
    }
}

/// Reports events of one command.
pub struct Progress<'a> {
    printer: &'a Printer,
    start: Instant,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl<'a> Progress<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        let multi = (printer.interactive && !printer.json())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)))
            .filter(|m| !m.is_hidden());
        Progress { printer, start: Instant::now(), multi, bars: Mutex::new(HashMap::new()) }
    }

    fn bar(&self, id: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().expect("progress lock");
        Some(
            bars.entry(id.to_string())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:.dim}")
                            .expect("template"),
                    );
                    bar.set_prefix(id.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
                .clone(),
        )
    }

    fn emit(&self, kind: &str, key: &ResourceKey, status: &str, detail: &str) {
        if self.printer.json() {
            let _ = self.printer.json_line(&EventDocument {
                kind,
                elapsed_ms: self.start.elapsed().as_millis(),
                node: &key.node,
                object: &key.kind,
                name: &key.name,
                status,
                detail,
            });
            return;
        }
        let id = format!("{} {}", key.kind, key.name);
        match self.bar(&id) {
            Some(bar) => {
                let mark = match status {
                    "done" => "✓",
                    "failed" => "✗",
                    _ => "",
                };
                if matches!(status, "done" | "failed") {
                    bar.finish_with_message(format!("{mark} {detail}"));
                } else {
                    bar.set_message(detail.to_string());
                }
            }
            None => self.printer.info(&format!("[{:>6.1}s] {id}: {detail}", self.start.elapsed().as_secs_f64())),
        }
    }

    /// An event of a plan step.
    pub fn step(&self, event: &impl ShownStep) {
        let (key, status, detail) = event.shown();
        self.emit("step", key, status, detail);
    }

    /// An event of providing images (a build or ship step, a line of build output).
    pub fn image(&self, event: &ImageEvent<'_>) {
        match *event {
            ImageEvent::Note { step, node, image, status, detail } => {
                let key = ResourceKey { node: node.to_string(), kind: "image".into(), name: image.to_string() };
                self.note(step, &key, status, detail);
            }
            ImageEvent::BuildLine { image, line } => self.build_line(image, line),
        }
    }

    /// A line of build output: steps are shown, the rest only with -v.
    pub fn build_line(&self, image: &str, line: &str) {
        let key = ResourceKey { node: String::new(), kind: "image".into(), name: image.to_string() };
        let is_step = line.starts_with("Step ");
        // JSON and CI logs get the Dockerfile steps (the rest with -v); a terminal shows every
        // line on the image's progress bar.
        let shown =
            if self.printer.json() { is_step } else { self.multi.is_some() || is_step || self.printer.verbose > 0 };
        if shown {
            self.emit("build", &key, "building", line);
        }
    }

    /// A one-off event about an object.
    pub fn note(&self, kind: &str, key: &ResourceKey, status: &str, detail: &str) {
        self.emit(kind, key, status, detail);
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops bars that are still drawing (finished lines stay on screen).
    pub fn finish(&self) {
        for bar in self.bars.lock().expect("progress lock").values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}
