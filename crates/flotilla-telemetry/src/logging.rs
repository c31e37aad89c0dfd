//! Log setup: human-readable lines to stderr and, optionally, JSON lines to a file.

use std::path::{Path, PathBuf};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the background log writer alive; drop it last to flush the file.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Where the JSON log goes when the config does not say: `$XDG_STATE_HOME/flotilla/<name>.log`,
/// else `$HOME/.local/state/flotilla/<name>.log`, else `./<name>.log`.
pub fn default_log_path(name: &str, xdg_state_home: Option<&str>, home: Option<&str>) -> PathBuf {
    let file = format!("{name}.log");
    match (xdg_state_home, home) {
        (Some(x), _) if !x.is_empty() => Path::new(x).join("flotilla").join(file),
        (_, Some(h)) if !h.is_empty() => Path::new(h).join(".local/state/flotilla").join(file),
        _ => PathBuf::from(file),
    }
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as `info` or
/// `flotilla_router=debug`; `RUST_LOG` wins when set. With `json_file`, JSON lines go there too.
pub fn init(filter: &str, json_file: Option<&Path>) -> std::io::Result<LogGuard> {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let (file_layer, guard) = match json_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            let layer = tracing_subscriber::fmt::layer().json().with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // A second init (tests, the demo starting several components) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(env_filter).with(stderr).with(file_layer).try_init();
    Ok(LogGuard { _file: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_path_prefers_xdg_state_home() {
        assert_eq!(default_log_path("gateway", Some("/x"), Some("/home/u")), PathBuf::from("/x/flotilla/gateway.log"));
        assert_eq!(
            default_log_path("gateway", None, Some("/home/u")),
            PathBuf::from("/home/u/.local/state/flotilla/gateway.log")
        );
        assert_eq!(default_log_path("gateway", None, None), PathBuf::from("gateway.log"));
    }
}
