//! Change summaries: what a change did, setting by setting, old → new, in the shape
//! `GET /admin/flags` shows the flags. Every change endpoint answers with one
//! ([`ChangeSummaryView`]) instead of the whole flag set, so an operator (and the CLI's
//! `changed: …` line) sees at once what moved and that nothing else did.
//!
//! The summary compares two renderings of the flags as JSON documents rather than the flag
//! types field by field, so a new setting shows up in it without code here: whatever
//! `GET /admin/flags` shows, a summary names when it changes.

use serde_json::Value;

use crate::route::Route;
use crate::server::protocol::{ChangeSummaryView, ChangeView};

/// The settings that differ between `old` and `new`, two JSON documents of the same shape:
/// objects are compared key by key down to their leaves; anything else (a number, a list, an
/// object that appears or disappears, such as a latch) is one setting. Keys are dotted paths.
pub(crate) fn changes(old: &Value, new: &Value) -> Vec<ChangeView> {
    let mut out = Vec::new();
    diff_into(&mut out, String::new(), old, new);
    out
}

/// A summary of the change from version `old_version` to `version`.
pub(crate) fn summary(
    old_version: u64,
    version: u64,
    persisted: bool,
    changes: Vec<ChangeView>,
) -> ChangeSummaryView {
    ChangeSummaryView {
        old_version,
        version,
        persisted,
        outcome: None,
        changes,
    }
}

/// One changed setting under `key`.
pub(crate) fn change(key: String, old: Value, new: Value) -> ChangeView {
    ChangeView {
        route: route_of(&key),
        key,
        old,
        new,
    }
}

fn diff_into(out: &mut Vec<ChangeView>, key: String, old: &Value, new: &Value) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for name in keys {
                let child = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                let old = old.get(name).unwrap_or(&Value::Null);
                let new = new.get(name).unwrap_or(&Value::Null);
                diff_into(out, child, old, new);
            }
        }
        (old, new) if old != new => out.push(change(key, old.clone(), new.clone())),
        _ => {}
    }
}

/// `routes.<route>.…` belongs to that route, and so does `faults.<route>.…`.
fn route_of(key: &str) -> Option<&'static str> {
    let mut parts = key.split('.');
    match (parts.next(), parts.next()) {
        (Some("routes" | "faults"), Some(name)) => Route::from_name(name).map(Route::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_leaf_that_moved_and_nothing_else() {
        let old = json!({
            "kill_switch": {"engaged": false, "reason": ""},
            "routes": {
                "user_event": {"ssot_percent": 1.0, "shadow": true, "ignore_fields": ["timestamp"], "latch": null},
                "broadcast": {"ssot_percent": 100.0, "latch": null}
            }
        });
        let new = json!({
            "kill_switch": {"engaged": true, "reason": "incident"},
            "routes": {
                "user_event": {"ssot_percent": 1.0, "shadow": true, "ignore_fields": ["timestamp"], "latch": null},
                "broadcast": {"ssot_percent": 100.0, "latch": {"reason": "r", "actor": "ops"}}
            }
        });
        assert_eq!(
            changes(&old, &new),
            [
                change("kill_switch.engaged".into(), json!(false), json!(true)),
                change("kill_switch.reason".into(), json!(""), json!("incident")),
                change(
                    "routes.broadcast.latch".into(),
                    Value::Null,
                    json!({"reason": "r", "actor": "ops"})
                ),
            ]
        );
        assert_eq!(changes(&new, &new), []);
        assert_eq!(
            changes(&old, &new)[2].route,
            Some("broadcast"),
            "a route's setting names its route"
        );
        assert_eq!(changes(&old, &new)[0].route, None);
    }

    #[test]
    fn a_key_on_one_side_only_is_one_change_from_or_to_null() {
        // An object that appears whole (a latch, a ramp) is one setting, not one per field.
        assert_eq!(
            changes(
                &json!({"faults": {"user_event": {"ssot": null}}}),
                &json!({"faults": {"user_event": {"ssot": {"drop_ratio": 0.2}}}})
            ),
            [change(
                "faults.user_event.ssot".into(),
                Value::Null,
                json!({"drop_ratio": 0.2})
            )]
        );
        assert_eq!(
            changes(
                &json!({"routes": {}}),
                &json!({"routes": {"user_event": {"ramp": {"steps": [1, 5]}}}})
            ),
            [change(
                "routes.user_event".into(),
                Value::Null,
                json!({"ramp": {"steps": [1, 5]}})
            )]
        );
    }
}
