//! One function per subcommand.

use std::io::{IsTerminal, Read, Write};

use anyhow::anyhow;
use freshcache::fetch::{FetchOptions, Fetcher};
use freshcache::maintenance::{CleanupOptions, Mode};
use freshcache::{Cache, Key, KeyPrefix, Lookup, Value};

use crate::output;
use crate::{Cli, CmdResult, Command, ConfigCommand, Failure, load_config};

pub(crate) async fn run(cli: Cli) -> CmdResult {
    let config = load_config(&cli.config)?;
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { json },
        } => {
            output::config_summary(&config, json.json);
            Ok(())
        }
        Command::Serve { listen } => {
            let cache = Cache::builder(config).connect().await?;
            crate::server::serve(cache, listen).await
        }
        command => {
            let cache = Cache::builder(config).connect().await?;
            let result = run_entry_command(&cache, command).await;
            if let Err(e) = cache.flush() {
                tracing::warn!(error = %e, "could not persist counters");
            }
            result
        }
    }
}

// A dispatch, not logic: one arm per command that needs an open cache, each handing its
// arguments to the command's own function; it is long because the commands are many.
async fn run_entry_command(cache: &Cache, command: Command) -> CmdResult {
    match command {
        Command::Get { key, json } => get(cache, &key, json.json).await,
        Command::Set {
            jsonl: Some(path),
            json,
            ..
        } => {
            let text = String::from_utf8(read_input(Some(&path))?)
                .map_err(|_| Failure::Invalid(anyhow!("{} is not UTF-8", path.display())))?;
            let items = crate::items::parse_lines(&text).map_err(|bad| {
                Failure::Invalid(anyhow!(
                    "{} bad lines, nothing stored:\n{}",
                    bad.len(),
                    bad.join("\n")
                ))
            })?;
            let stored = cache.set_many(items).await?;
            output::stored_many(stored.len(), json.json);
            Ok(())
        }
        Command::Set {
            key,
            file,
            ttl,
            codec,
            as_of,
            json,
            ..
        } => {
            let Some(key) = key else {
                return Err(Failure::Invalid(anyhow!(
                    "a KEY or --jsonl FILE is required"
                )));
            };
            let key = Key::parse(&key)?;
            let bytes = read_input(file.as_deref())?;
            let mut value = Value::bytes(bytes).codec(codec.into());
            if let Some(t) = ttl {
                value = value.ttl(t);
            }
            if let Some(t) = as_of {
                value = value.as_of(t);
            }
            let entry = cache.set(&key, value).await?;
            output::stored(&key, &entry, json.json);
            Ok(())
        }
        Command::Del { key, json } => {
            let key = Key::parse(&key)?;
            let existed = cache.delete(&key).await?;
            output::deleted(&key, existed, json.json);
            Ok(())
        }
        Command::Invalidate {
            prefix,
            all,
            yes,
            json,
        } => {
            let removed = if all {
                confirm_flush(yes)?;
                cache.invalidate_all().await?
            } else {
                let p = prefix
                    .ok_or_else(|| Failure::Invalid(anyhow!("a PREFIX or --all is required")))?;
                cache.invalidate_prefix(&KeyPrefix::parse(&p)?).await?
            };
            output::invalidated(removed, json.json);
            Ok(())
        }
        Command::Cleanup {
            dry_run,
            orphan_grace,
            json,
        } => {
            let opts = CleanupOptions {
                mode: if dry_run { Mode::DryRun } else { Mode::Apply },
                orphan_grace,
            };
            // Phases show as a bar on a terminal only; logs and pipes get the report alone.
            let progress = output::Progress::new(3, json.json, false);
            let report = cache.cleanup_at(cache.now(), opts, |phase| {
                output::progress(&progress, phase);
            });
            progress.finish();
            let report = report?;
            output::cleanup(&report, json.json);
            Ok(())
        }
        Command::Doctor {
            repair,
            orphan_grace,
            json,
        } => {
            let mode = if repair { Mode::Apply } else { Mode::DryRun };
            let report = cache.doctor(mode, orphan_grace)?;
            output::doctor(&report, repair, json.json);
            if report.is_clean() || repair {
                Ok(())
            } else {
                Err(Failure::Miss)
            }
        }
        Command::Inspect { key, json } => {
            let key = Key::parse(&key)?;
            let ins = cache.inspect(&key)?;
            output::inspect(&key, &ins, json.json);
            if ins.entry.is_some() {
                Ok(())
            } else {
                Err(Failure::Miss)
            }
        }
        Command::Check { keys, run_id, json } => {
            let keys = keys
                .iter()
                .map(|k| Key::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let run_id = run_id.unwrap_or_else(|| format!("cli-{}", cache.now().as_millis()));
            let (report, _) = cache.check_freshness(&run_id, &keys).await?;
            output::freshness(&report, json.json);
            if report.all_fresh() {
                Ok(())
            } else {
                Err(Failure::Miss)
            }
        }
        Command::Audit { run_id, json } => {
            let rows = cache.audit(&run_id)?;
            output::audit(&run_id, &rows, json.json);
            if rows.is_empty() {
                Err(Failure::Miss)
            } else {
                Ok(())
            }
        }
        Command::Fetch { url, key, json } => fetch(cache, &url, &key, json.json).await,
        Command::Warm { manifest, json } => {
            let items = freshcache::warm::load_manifest(&manifest)?;
            let fetcher = Fetcher::new(FetchOptions::default())?;
            // A bar on a terminal; one line per item on a pipe unless the result is `--json`.
            let progress = output::Progress::new(
                items.len() as u64,
                json.json,
                std::io::stderr().is_terminal() || !json.json,
            );
            let report = cache
                .warm(&items, &fetcher, |done, total, r| {
                    output::warm_progress(&progress, done, total, r);
                })
                .await;
            progress.finish();
            let report = report?;
            output::warm_summary(&report, json.json);
            if report.all_ok() {
                Ok(())
            } else {
                Err(Failure::Miss)
            }
        }
        Command::Stats { json } => {
            let report = cache.stats()?;
            output::stats(&report, json.json);
            Ok(())
        }
        Command::Serve { .. } | Command::Config { .. } => Ok(()),
    }
}

async fn get(cache: &Cache, key: &str, json: bool) -> CmdResult {
    let key = Key::parse(key)?;
    match cache.get(&key).await? {
        Lookup::Fresh(hit) => {
            if json {
                output::hit_json(&key, &hit);
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(hit.value())?;
                out.flush()?;
            }
            Ok(())
        }
        Lookup::Stale(_) | Lookup::Miss => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"key": key.as_str(), "found": false})
                );
            } else {
                eprintln!("miss: {key}");
            }
            Err(Failure::Miss)
        }
    }
}

async fn fetch(cache: &Cache, url: &str, key: &str, json: bool) -> CmdResult {
    let key = Key::parse(key)?;
    let fetcher = Fetcher::new(FetchOptions::default())?;
    let outcome = fetcher.fetch(cache, &key, url).await?;
    output::fetched(&key, url, &outcome, json);
    Ok(())
}

fn read_input(file: Option<&std::path::Path>) -> Result<Vec<u8>, Failure> {
    match file {
        None => read_stdin(),
        Some(p) if p.as_os_str() == "-" => read_stdin(),
        Some(p) => std::fs::read(p)
            .map_err(|e| Failure::Invalid(anyhow!("cannot read {}: {e}", p.display()))),
    }
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf)?;
    Ok(buf)
}

fn confirm_flush(yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Invalid(anyhow!(
            "invalidate --all removes every entry; pass --yes to confirm when not on a terminal"
        )));
    }
    eprint!("Remove EVERY entry from every tier? Type 'yes' to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Failure::Invalid(anyhow!("not confirmed; nothing removed")))
    }
}
