//! `flags.toml` as text: reading it (an error names the file, the line and the key), writing it
//! from scratch, and writing a change back into the file as it is, in place (`toml_edit`): only
//! the settings that changed change, and the operator's comments, ordering and blank lines stay.
//!
//! Both writers and [`FlagSet::diff`] work from one list of settings ([`settings`]), each a
//! typed TOML value, so the file, the audit's "key: old → new" lines and the in-place edits spell
//! every value the same way.
//!
//! Every file switchyard writes starts with [`MANAGED_HEADER`] and holds the [`END_MARKER`] line,
//! so a copy of it cut short (the line lost) is recognised: a TOML file cut short between two
//! tables still parses, to fewer settings than were written.

use std::collections::BTreeMap;

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

use super::raw::{FieldError, RawFlags};
use super::{FlagSet, FlagsDocument, FlagsError, Percent};
use crate::route::Route;
use crate::timestamp::rfc3339;

/// The first line of every flags file switchyard writes. A file that starts with it must still
/// hold the [`END_MARKER`] line; one that does not was cut short. Operators may add settings
/// anywhere, after the marker too: only its absence says the file was cut.
pub(super) const MANAGED_HEADER: &str = "# switchyard routing flags, written by switchyard; keep the `# end of flags` line: a file without it is taken as cut short.";

/// The lines below the header in a file switchyard writes.
pub(super) const HEADER_NOTE: &str = "# `version` is managed: it is bumped on every applied change, and \
changes made through\n# the admin API or by the guard are written back here.";

/// The last line of every flags file switchyard writes.
pub(super) const END_MARKER: &str = "# end of flags";

/// One setting as the file spells it: the table it sits in, its key and its value.
pub(super) struct Setting {
    pub(super) table: Vec<&'static str>,
    pub(super) key: &'static str,
    pub(super) value: Value,
}

impl Setting {
    /// The dotted key, as the audit names it.
    pub(super) fn dotted_key(&self) -> String {
        let mut key = self.table.join(".");
        key.push('.');
        key.push_str(self.key);
        key
    }
}

/// Parses and validates a flags document; `origin` names it in errors.
pub(super) fn parse_document(text: &str, origin: &str) -> Result<FlagsDocument, FlagsError> {
    check_complete(text, origin)?;
    let raw: RawFlags = toml::from_str(text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let line = line_of(text, span.start);
        let message = error.message().trim().to_owned();
        // A value of the wrong type is reported at the value: name its key too.
        match key_at(text, span.start) {
            Some(key) if !message.starts_with("unknown field") => FlagsError::Invalid {
                origin: origin.to_owned(),
                line,
                key,
                message,
            },
            _ => FlagsError::Syntax {
                origin: origin.to_owned(),
                line,
                message,
            },
        }
    })?;
    FlagsDocument::try_from(raw).map_err(|error| FlagsError::Invalid {
        origin: origin.to_owned(),
        line: line_of_key(text, error.line_key.as_ref().unwrap_or(&error.key)),
        key: error.dotted_key(),
        message: error.message,
    })
}

/// Every setting of `flags` but `version`, in the file's order.
pub(super) fn settings(flags: &FlagSet) -> Vec<Setting> {
    let mut out = Vec::new();
    let mut add = |table: &[&'static str], key, value: Value| {
        out.push(Setting {
            table: table.to_vec(),
            key,
            value,
        });
    };
    add(&["rollout"], "salt", flags.salt.as_str().into());
    add(
        &["kill_switch"],
        "engaged",
        flags.kill_switch.engaged.into(),
    );
    add(
        &["kill_switch"],
        "reason",
        flags.kill_switch.reason.as_str().into(),
    );
    for route in Route::ALL {
        let r = flags.route(route);
        let table = ["routes", route.as_str()];
        add(&table, "ssot_percent", percent(r.ssot_percent));
        add(&table, "shadow", r.shadow.into());
        add(
            &table,
            "shadow_sample_percent",
            percent(r.shadow_sample_percent),
        );
        add(&table, "pin_ssot", strings(r.pin_ssot.iter()));
        add(&table, "pin_legacy", strings(r.pin_legacy.iter()));
        add(&table, "ignore_fields", strings(r.ignore_fields.iter()));
        if let Some(latch) = &r.latch {
            let table = ["routes", route.as_str(), "latch"];
            add(&table, "reason", latch.reason.as_str().into());
            add(&table, "trigger", latch.trigger.as_str().into());
            add(&table, "actor", latch.actor.as_str().into());
            add(&table, "at", rfc3339(latch.at).into());
        }
        if let Some(ramp) = &r.ramp {
            let table = ["routes", route.as_str(), "ramp"];
            let steps: Array = ramp.steps.iter().map(|step| percent(*step)).collect();
            add(&table, "steps", formatted(steps));
            add(&table, "step_seconds", integer(ramp.step_seconds));
            if let Some(at) = ramp.at {
                add(&table, "step", integer(at.step as u64));
                add(&table, "since", integer(at.since));
            }
        }
    }
    let g = &flags.guard;
    add(&["guard"], "enabled", g.enabled.into());
    add(
        &["guard"],
        "min_delivery_ratio",
        g.min_delivery_ratio.into(),
    );
    add(
        &["guard"],
        "max_mismatch_ratio",
        g.max_mismatch_ratio.into(),
    );
    add(&["guard"], "window_seconds", integer(g.window_seconds));
    add(&["guard"], "min_events", integer(g.min_events));
    add(
        &["guard"],
        "consecutive_breaches",
        integer(u64::from(g.consecutive_breaches)),
    );
    out
}

/// Renders `flags` as a new `flags.toml`: the header, `version`, one table per section (every
/// setting spelled out), each followed by a blank line, and the end marker.
pub(super) fn render(flags: &FlagSet) -> String {
    let mut out = format!(
        "{MANAGED_HEADER}\n{HEADER_NOTE}\nversion = {}\n",
        flags.version
    );
    let mut table: Option<Vec<&str>> = None;
    for setting in settings(flags) {
        if table.as_ref() != Some(&setting.table) {
            out.push_str(&format!("\n[{}]", setting.table.join(".")));
            out.push_str(match setting.table.last() {
                Some(&"latch") => "   # rolled back to legacy until an operator clears it",
                Some(&"ramp") => "   # the guard raises ssot_percent step by step",
                _ => "",
            });
            out.push('\n');
            table = Some(setting.table.clone());
        }
        out.push_str(&format!("{} = {}", setting.key, setting.value));
        out.push_str(match (setting.table.last(), setting.key) {
            (Some(&"ramp"), "step") => "   # managed: the step being held",
            (Some(&"ramp"), "since") => "   # managed: unix seconds it began",
            _ => "",
        });
        out.push('\n');
    }
    out.push_str(&format!("\n{END_MARKER}\n"));
    out
}

/// `text`, a flags file that describes `old`, edited in place to describe `new`: `version` and
/// the settings whose values differ are set (a value keeps the comment beside it), settings
/// `new` no longer has are removed (with their table, once empty), missing tables are added
/// after their siblings, and `clear_latch` actions, done once read, are dropped. The header and
/// the end marker are added if the file lacks them. `None` if `text` is not TOML or is shaped
/// so that a setting cannot be placed (an inline table, say): then the file is written anew.
pub(super) fn rewrite(text: &str, old: &FlagSet, new: &FlagSet) -> Option<String> {
    let mut document: DocumentMut = text.parse().ok()?;
    let root = document.as_table_mut();
    drop_clear_latches(root);
    set(root, &[], "version", integer(new.version))?;
    let old_values: BTreeMap<String, String> = settings(old)
        .iter()
        .map(|setting| (setting.dotted_key(), setting.value.to_string()))
        .collect();
    let new_settings = settings(new);
    for setting in &new_settings {
        if old_values.get(&setting.dotted_key()) != Some(&setting.value.to_string()) {
            set(root, &setting.table, setting.key, setting.value.clone())?;
        }
    }
    for setting in settings(old) {
        let key = setting.dotted_key();
        if !new_settings.iter().any(|s| s.dotted_key() == key) {
            remove(root, &setting.table, setting.key);
        }
    }
    let mut text = document.to_string();
    if text.lines().next() != Some(MANAGED_HEADER) {
        text = format!("{MANAGED_HEADER}\n{HEADER_NOTE}\n{text}");
    }
    if !text.lines().any(|line| line.trim() == END_MARKER) {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("\n{END_MARKER}\n"));
    }
    Some(text)
}

/// Sets `key` in the table at `path` (made if missing) to `value`, keeping the comment and
/// spacing around the value it replaces.
fn set(root: &mut Table, path: &[&str], key: &str, mut value: Value) -> Option<()> {
    let mut table: &mut dyn TableLike = root;
    for name in path {
        if !table.contains_key(name) {
            let mut new = Table::new();
            // A table with no keys of its own (`routes`) gets no header.
            new.set_implicit(true);
            table.insert(name, Item::Table(new));
        }
        table = table.get_mut(name)?.as_table_like_mut()?;
    }
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        Some(_) => return None,
        None => {
            table.insert(key, Item::Value(value));
        }
    }
    Some(())
}

/// Removes `key` from the table at `path`, and the table too once it holds nothing.
fn remove(root: &mut Table, path: &[&str], key: &str) {
    let Some((name, parents)) = path.split_last() else {
        root.remove(key);
        return;
    };
    let mut parent: &mut dyn TableLike = root;
    for segment in parents {
        let Some(next) = parent.get_mut(segment).and_then(Item::as_table_like_mut) else {
            return;
        };
        parent = next;
    }
    let Some(table) = parent.get_mut(name).and_then(Item::as_table_like_mut) else {
        return;
    };
    table.remove(key);
    if table.is_empty() {
        parent.remove(name);
    }
}

/// Removes every route's `clear_latch`: an action the reload that read it has done.
fn drop_clear_latches(root: &mut Table) {
    let Some(routes) = root.get_mut("routes").and_then(Item::as_table_like_mut) else {
        return;
    };
    for (_, route) in routes.iter_mut() {
        if let Some(route) = route.as_table_like_mut() {
            route.remove("clear_latch");
        }
    }
}

/// A share as the file writes it, with two decimals.
fn percent(share: Percent) -> Value {
    format!("{:.2}", share.as_f64())
        .parse()
        .unwrap_or_else(|_| share.as_f64().into())
}

/// An integer setting. Every one is validated to fit TOML's signed 64 bits.
fn integer(value: u64) -> Value {
    i64::try_from(value).unwrap_or(i64::MAX).into()
}

fn strings<'a>(items: impl Iterator<Item = &'a String>) -> Value {
    formatted(items.map(String::as_str).collect())
}

/// An array spaced as people write one: `["a", "b"]`.
fn formatted(mut array: Array) -> Value {
    array.fmt();
    Value::Array(array)
}

/// Refuses a file switchyard wrote that has lost its end.
fn check_complete(text: &str, origin: &str) -> Result<(), FlagsError> {
    if text.lines().next() != Some(MANAGED_HEADER)
        || text.lines().any(|line| line.trim() == END_MARKER)
    {
        return Ok(());
    }
    Err(FlagsError::Syntax {
        origin: origin.to_owned(),
        line: text.lines().count(),
        message: format!(
            "the file starts as switchyard writes it but has lost its {END_MARKER:?} line: \
             it was cut short (a partial copy or write?); restore it whole"
        ),
    })
}

/// The line of the key at `path` in `text`; of its nearest table when the key is not written
/// (a default), line 1 when not even that is.
fn line_of_key(text: &str, path: &[String]) -> usize {
    let Ok(document) = toml_edit::Document::parse(text) else {
        return 1;
    };
    let mut table: &dyn TableLike = document.as_table();
    let mut found = None;
    for segment in path {
        let Some((key, item)) = table.get_key_value(segment) else {
            break;
        };
        let span = match item {
            Item::Table(table) => table.span(),
            item => item.span(),
        };
        found = span
            .filter(|span| !span.is_empty())
            .or(key.span())
            .or(found);
        let Some(next) = item.as_table_like() else {
            break;
        };
        table = next;
    }
    found.map_or(1, |span| line_of(text, span.start))
}

/// The dotted key of the value at `offset` in `text`: what a TOML type error at a value is
/// about. `None` when no value is there (or the text is not TOML).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = toml_edit::Document::parse(text).ok()?;
    let mut path = Vec::new();
    value_at(document.as_table(), offset, &mut path).then(|| path.join("."))
}

/// Finds the value holding `offset` below `table`, leaving its key's path in `path`.
fn value_at(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, item) in table.iter() {
        path.push(key.to_owned());
        let found = match item {
            Item::Table(table) => value_at(table, offset, path),
            Item::Value(value) => {
                let inside = value.span().is_some_and(|span| span.contains(&offset));
                let deeper = match value {
                    Value::InlineTable(inline) => inside && value_at(inline, offset, path),
                    _ => false,
                };
                deeper || inside
            }
            _ => false,
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].matches('\n').count() + 1
}

impl FlagSet {
    /// A new `flags.toml` for the set (see [`render`]); also how a fleet shares it.
    pub(crate) fn to_toml(&self) -> String {
        render(self)
    }

    /// The text to write for the set: `previous` (a file's text and the set it describes)
    /// edited in place, or a new file when there is none or the edit cannot be made. An edit
    /// that would not read back as exactly this set (a layout the editor mishandles) is not
    /// written: the file is written anew instead, and that is logged.
    pub(crate) fn write_back(&self, previous: Option<(&str, &FlagSet)>) -> String {
        let Some((text, old)) = previous else {
            return render(self);
        };
        match rewrite(text, old, self) {
            Some(edited) if parse_document(&edited, "").is_ok_and(|read| read.flags == *self) => {
                edited
            }
            _ => {
                tracing::warn!(
                    "the flags file cannot be edited in place; writing it anew (its comments are lost)"
                );
                render(self)
            }
        }
    }
}

/// `error` in a document that has no lines (an admin API body).
pub(super) fn field_error(origin: &str, error: FieldError) -> FlagsError {
    FlagsError::Field {
        origin: origin.to_owned(),
        key: error.dotted_key(),
        message: error.message,
    }
}
