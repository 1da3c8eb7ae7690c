//! `serve --config tickwire.toml`: every `serve` setting from a TOML file.
//!
//! A key is a flag's long name (`max-connections = 5000`, or `max_connections`);
//! a table prefixes its keys (`[jwt] audience = "desk"` is `jwt-audience`). An
//! array gives a repeatable or list setting its values. Precedence, highest
//! first: the command line, `TICKWIRE_*` variables, the file, the defaults.
//!
//! The file is applied by rewriting the command line: a value from the file is
//! appended as `--key=value` only where neither the command line nor the
//! environment set that key, so clap parses and validates file values exactly
//! as it does flags (a bad value names the key). An unknown key is an error,
//! never ignored: a typo must not silently leave a limit at its default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// Why a config file could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown setting `{key}` (settings are `serve` flags without the dashes)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: `{key}` takes one value, not a list")]
    NotAList { path: PathBuf, key: String },
    #[error("config file {path}: `{key}` must be a string, number, boolean or a list of them")]
    BadValue { path: PathBuf, key: String },
}

/// The name of the setting that names the file itself.
const CONFIG_FLAG: &str = "config";

/// `argv` with the settings of the `--config` file of sub-command `subcommand`
/// appended where nothing else set them. Unchanged when the command line does
/// not parse (clap reports that) or names no file.
pub fn apply(root: &clap::Command, subcommand: &str, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let Ok(matches) = root.clone().try_get_matches_from(argv.iter()) else { return Ok(argv) };
    let Some((name, sub_matches)) = matches.subcommand() else { return Ok(argv) };
    if name != subcommand {
        return Ok(argv);
    }
    let Some(path) = sub_matches.get_one::<PathBuf>(CONFIG_FLAG) else { return Ok(argv) };
    let command = root.find_subcommand(subcommand).expect("the sub-command just matched");
    let table = read(path)?;
    let mut argv = argv;
    for (key, value) in flatten(&table) {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long().is_some_and(|long| long == key) && key != CONFIG_FLAG)
            .ok_or_else(|| ConfigFileError::UnknownKey { path: path.clone(), key: key.clone() })?;
        let id = arg.get_id().as_str();
        if matches!(sub_matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue; // the command line or the environment wins
        }
        argv.extend(values(path, &key, arg, value)?);
    }
    Ok(argv)
}

fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.into(), source })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigFileError::Parse { path: path.into(), message: error.to_string() })
}

/// Every leaf of `table` with its flag name: `a_b` → `a-b`, `[t] k` → `t-k`.
fn flatten(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    fn walk<'a>(prefix: &str, table: &'a toml::Table, out: &mut Vec<(String, &'a toml::Value)>) {
        for (key, value) in table {
            let key = key.replace('_', "-");
            let name = if prefix.is_empty() { key } else { format!("{prefix}-{key}") };
            match value {
                toml::Value::Table(inner) => walk(&name, inner, out),
                value => out.push((name, value)),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// The command-line words that give `arg` the file's `value`.
fn values(path: &Path, key: &str, arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, ConfigFileError> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(ConfigFileError::BadValue { path: path.into(), key: key.into() }),
    };
    if !arg.get_action().takes_values() {
        // A switch (`--flag`): `true` sets it; `false` leaves it off.
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err(ConfigFileError::BadValue { path: path.into(), key: key.into() }),
        };
    }
    let items = match value {
        toml::Value::Array(items) => {
            let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
            if !repeatable {
                return Err(ConfigFileError::NotAList { path: path.into(), key: key.into() });
            }
            items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
        }
        value => vec![scalar(value)?],
    };
    Ok(items.into_iter().map(|item| format!("--{key}={item}").into()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Serve(Box<crate::config::ServeArgs>),
    }

    struct File(PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> File {
            let path = std::env::temp_dir().join(format!("tickwire-{name}-{}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            File(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `serve ARGS` with the file applied, parsed as the binary parses it.
    fn serve(file: &File, args: &[&str]) -> Result<crate::config::ServeArgs, String> {
        let argv: Vec<OsString> = ["tickwire", "serve", "--config", file.0.to_str().unwrap()]
            .iter()
            .chain(args)
            .map(OsString::from)
            .collect();
        let argv = apply(&Cli::command(), "serve", argv).map_err(|e| e.to_string())?;
        let matches = Cli::command().try_get_matches_from(argv).map_err(|e| e.to_string())?;
        let Command::Serve(args) = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?.command;
        Ok(*args)
    }

    #[test]
    fn file_settings_apply_under_the_command_line() {
        let file = File::new(
            "config-apply",
            r#"
            listen = "127.0.0.1:9000"
            max_connections = 5000
            allowed-origin = ["https://a.example", "https://b.example"]
            feed = ["simulator", "kraken:BTC/USD"]
            profile = "development"
            [jwt]
            audience = "desk"
            "#,
        );
        let args = serve(&file, &[]).unwrap();
        assert_eq!(args.listen.port(), 9000);
        assert_eq!(args.max_connections, 5000);
        assert_eq!(args.allowed_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(args.feeds().len(), 2);
        assert_eq!(args.jwt_audience.as_deref(), Some("desk"), "a table prefixes its keys");
        assert_eq!(args.rate, 1_000, "what the file does not set keeps its default");
        let args = serve(&file, &["--max-connections", "7"]).unwrap();
        assert_eq!(args.max_connections, 7, "the command line wins");
        assert_eq!(args.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let file = File::new("config-unknown", "max_conections = 5\n");
        let error = serve(&file, &[]).unwrap_err();
        assert!(error.contains("unknown setting `max-conections`"), "{error}");
        let file = File::new("config-bad", "max-connections = \"many\"\n");
        let error = serve(&file, &[]).unwrap_err();
        assert!(error.contains("--max-connections"), "{error}");
        let file = File::new("config-list", "rate = [1, 2]\n");
        let error = serve(&file, &[]).unwrap_err();
        assert!(error.contains("`rate` takes one value"), "{error}");
        let file = File::new("config-toml", "rate = \n");
        assert!(serve(&file, &[]).unwrap_err().contains("not valid TOML"));
        let error = serve(&File(PathBuf::from("/nonexistent/tickwire.toml")), &[]).unwrap_err();
        assert!(error.contains("cannot read config file"), "{error}");
    }
}
