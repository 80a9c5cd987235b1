// Natively only the type-checking matters: the export exists on wasm32.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// Shared by the test-only guests: one transaction per input line, tagged with
// the guest's VERSION, so tests can tell which build answered. A line equal
// to TRIGGER calls `hostile()` instead.
use accord_plugin_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {}

pub struct Echo {
    lines: LineSplitter,
}

fn line(l: Line<'_>, out: &mut Batch) {
    let text = match l.text() {
        Ok(t) => t.trim(),
        Err(e) => return out.reject(e.reject(&l)),
    };
    if text.is_empty() {
        return;
    }
    if text == crate::TRIGGER {
        crate::hostile();
    }
    let tx = Transaction::new(
        text,
        Side::Standalone,
        Kind::Transfer,
        Money::new(1, "EUR"),
        Timestamp::new(0, 0, 0),
    )
    .with_extra("version", crate::VERSION);
    out.accept(l.number, tx);
}

impl Parser for Echo {
    type Config = Config;
    fn open(_: Config) -> Result<Self, PluginError> {
        Ok(Echo {
            lines: LineSplitter::new(),
        })
    }
    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        self.lines.push(chunk, |l| line(l, out));
        Ok(())
    }
    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        self.lines.finish(|l| line(l, out));
        Ok(())
    }
}

accord_plugin_sdk::export_parser!(Echo);
