//! Logging to stderr, as text (simplelog) or as JSON lines for log
//! shippers (`--log-format json`).
//!
//! A JSON line is one object: `time` (RFC 3339, UTC, milliseconds),
//! `level`, `message`, and the fields the library attaches to a line where
//! it has them (`client`, `peer`, `room`, `status`). Each line is one
//! write, so lines from different threads never interleave.
//!
//! May touch: stderr, the global logger.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use clap::ValueEnum;
use log::kv::{Error as KvError, Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `HH:MM:SS [LEVEL] message`, in colour only at a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging to stderr.
pub fn init(level: log::LevelFilter, format: LogFormat) {
    match format {
        LogFormat::Text => init_text(level),
        LogFormat::Json => {
            // Only fails if a logger is already set, which cannot happen here.
            if log::set_boxed_logger(Box::new(JsonLogger { level })).is_ok() {
                log::set_max_level(level);
            }
        }
    }
}

fn init_text(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // Colours only for a person at a terminal: not into files or journals,
    // and never with NO_COLOR set (termcolor's Auto alone does not look at
    // whether stderr is a terminal).
    let colour = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        simplelog::ColorChoice::Auto
    } else {
        simplelog::ColorChoice::Never
    };
    let _ = simplelog::TermLogger::init(level, config, simplelog::TerminalMode::Stderr, colour);
}

struct JsonLogger {
    level: log::LevelFilter,
}

impl log::Log for JsonLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Map::new();
        line.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("level".into(), record.level().as_str().into());
        line.insert("message".into(), record.args().to_string().into());
        let _ = record.key_values().visit(&mut Fields(&mut line));
        let mut bytes = Json::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&bytes);
    }

    fn flush(&self) {}
}

/// Copies a record's key-values into the JSON object (numbers as numbers,
/// absent values left out, anything else as its text).
struct Fields<'a>(&'a mut Map<String, Json>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), KvError> {
        let json = if let Some(n) = value.to_u64() {
            Json::from(n)
        } else if let Some(n) = value.to_i64() {
            Json::from(n)
        } else if let Some(b) = value.to_bool() {
            Json::from(b)
        } else {
            let text = value.to_string();
            if text == "None" {
                return Ok(());
            }
            Json::from(text)
        };
        self.0.insert(key.as_str().to_string(), json);
        Ok(())
    }
}
