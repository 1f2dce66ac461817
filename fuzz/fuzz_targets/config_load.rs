//! Fuzzes the config loader: any text must give a config or diagnostics, never a panic,
//! and every diagnostic must render against the text it came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator::config::{self, Variables};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut vars = Variables::default();
    vars.dotenv.insert("POSTGRES_PASSWORD".into(), "pw".into());
    vars.environment.insert("HOME".into(), "/root".into());
    let diagnostics = match config::load(&text, &vars) {
        Ok(loaded) => loaded.warnings,
        Err(all) => all,
    };
    for diagnostic in &diagnostics {
        let _ = diagnostic.render("fuzz.yaml", &text);
    }
});
