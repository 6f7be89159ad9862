//! Human-readable output of the operator commands, made from the admin API's JSON answers (the
//! same ones `--json` prints), so a command reads the same against any gateway it reaches. A
//! field an answer lacks is shown as `?` rather than failing: the text is for people.

use std::fmt::Write as _;

use serde_json::Value;

/// What kind of answer a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    /// `GET /admin/flags`: a header and a table of routes.
    Flags,
    /// A change summary: one `changed: …` line.
    Summary,
    Audit,
    Cohort,
    Stats,
    Mismatches,
    Faults,
}

impl Render {
    /// The text for `answer`.
    pub(crate) fn text(self, answer: &Value) -> String {
        match self {
            Render::Flags => flags(answer),
            Render::Summary => summary(answer),
            Render::Audit => audit(answer),
            Render::Cohort => cohort(answer),
            Render::Stats => stats(answer),
            Render::Mismatches => mismatches(answer),
            Render::Faults => faults(answer),
        }
    }
}

/// A JSON value in one short piece: strings bare, numbers as they are, the rest compact.
fn short(value: &Value) -> String {
    match value {
        Value::Null => "none".to_owned(),
        Value::String(text) if text.is_empty() => "\"\"".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        Value::Array(items) => items.iter().map(short).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A list of user ids, comma-separated, inside the brackets `flags show` puts around it: empty
/// for none (`short` would spell an empty list `[]`, giving `[[]]`).
fn ids(value: &Value) -> String {
    match value {
        Value::Array(items) if items.is_empty() => String::new(),
        other => short(other),
    }
}

/// A percentage without needless decimals: `1`, `12.5`.
fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "?".to_owned(), |p| format!("{p}"))
}

/// A ratio as a percentage with two decimals, `-` when there is none.
fn ratio(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// Rows as a table with columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn flags(answer: &Value) -> String {
    let kill_switch = &answer["kill_switch"];
    let mut out = format!(
        "flags version {} ({} by {} at {}; {})\n",
        short(&answer["version"]),
        short(&answer["source"]),
        short(&answer["actor"]),
        short(&answer["changed_at"]),
        if answer["persisted"] == true {
            "persisted"
        } else {
            "NOT PERSISTED"
        }
    );
    if kill_switch["engaged"] == true {
        let _ = writeln!(
            out,
            "KILL SWITCH ENGAGED: every route on legacy ({})",
            short(&kill_switch["reason"])
        );
    }
    let mut rows = vec![
        ["route", "legacy / ssot", "shadow", "latch", "ramp", "pins"]
            .map(str::to_owned)
            .to_vec(),
    ];
    if let Some(routes) = answer["routes"].as_object() {
        for (name, route) in routes {
            rows.push(route_row(name, route));
        }
    }
    out.push_str(&table(&rows));
    out
}

/// One route of `flags show`: the path split, shadow, latch, ramp and pins.
fn route_row(name: &str, route: &Value) -> Vec<String> {
    let ssot = route["ssot_percent"].as_f64().unwrap_or(0.0);
    let split = format!("{} / {}", 100.0 - ssot, percent(&route["ssot_percent"]));
    let shadow = if route["shadow"] == true {
        format!("on {}%", percent(&route["shadow_sample_percent"]))
    } else {
        "off".to_owned()
    };
    let latch = match &route["latch"] {
        Value::Null => "-".to_owned(),
        latch => format!(
            "LATCHED by {} ({})",
            short(&latch["actor"]),
            short(&latch["reason"])
        ),
    };
    let ramp = match &route["ramp"] {
        Value::Null => "-".to_owned(),
        ramp => {
            let steps = ramp["steps"].as_array().map_or(0, Vec::len);
            let next = match &ramp["next_percent"] {
                Value::Null => String::new(),
                next => format!(
                    ", next {}% from {}",
                    percent(next),
                    short(&ramp["next_advance_at"])
                ),
            };
            format!(
                "step {}/{steps} at {}%{next}",
                short(&ramp["step"]),
                percent(&ramp["step_percent"])
            )
        }
    };
    let pins = format!(
        "ssot [{}] legacy [{}]",
        ids(&route["pin_ssot"]),
        ids(&route["pin_legacy"])
    );
    vec![
        name.to_owned(),
        format!("{split} %"),
        shadow,
        latch,
        ramp,
        pins,
    ]
}

fn summary(answer: &Value) -> String {
    let versions = format!(
        "version {} → {}",
        short(&answer["old_version"]),
        short(&answer["version"])
    );
    let outcome = match answer["outcome"].as_str() {
        Some(outcome) => format!("reload {outcome}; "),
        None => String::new(),
    };
    let changes: Vec<String> = answer["changes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|change| {
            format!(
                "{} {} → {}",
                short(&change["key"]),
                change_value(&change["old"]),
                change_value(&change["new"])
            )
        })
        .collect();
    let persisted = if answer["persisted"] == false {
        " (NOT written to the flags file)"
    } else {
        ""
    };
    if changes.is_empty() {
        format!(
            "{outcome}no change (version {}){persisted}",
            short(&answer["version"])
        )
    } else {
        format!(
            "{outcome}changed ({versions}): {}{persisted}",
            changes.join("; ")
        )
    }
}

/// A changed value: a latch or ramp as a few words rather than its whole object.
fn change_value(value: &Value) -> String {
    if value.get("reason").is_some() && value.get("actor").is_some() {
        return format!(
            "latched by {} ({})",
            short(&value["actor"]),
            short(&value["reason"])
        );
    }
    if let Some(steps) = value.get("steps") {
        return format!(
            "ramp [{}] every {}s",
            short(steps),
            short(&value["step_seconds"])
        );
    }
    short(value)
}

fn audit(answer: &Value) -> String {
    let mut out = String::new();
    for entry in answer.as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            out,
            "{}  {} ({})  version {} → {}  {}",
            short(&entry["at"]),
            short(&entry["actor"]),
            short(&entry["trigger"]),
            short(&entry["old_version"]),
            short(&entry["version"]),
            short(&entry["reason"])
        );
        for change in entry["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let _ = writeln!(out, "    {}", short(change));
        }
    }
    if out.is_empty() {
        out.push_str("no audit entries\n");
    }
    out
}

fn cohort(answer: &Value) -> String {
    let mut out = format!(
        "user {}: bucket {} of 10000 (salt {}, flags version {}){}\n",
        answer["user_id"],
        short(&answer["bucket"]),
        answer["salt"],
        short(&answer["version"]),
        if answer["kill_switch"] == true {
            ", KILL SWITCH ENGAGED"
        } else {
            ""
        }
    );
    let mut rows = Vec::new();
    if let Some(routes) = answer["routes"].as_object() {
        for (name, route) in routes {
            let shadow = match &route["shadow"] {
                Value::Null => String::new(),
                path => format!(", shadowed by {}", short(path)),
            };
            rows.push(vec![
                format!("  {name}"),
                short(&route["path"]),
                format!(
                    "({}; ssot_percent {}){shadow}",
                    short(&route["reason"]),
                    percent(&route["ssot_percent"])
                ),
            ]);
        }
    }
    out.push_str(&table(&rows));
    out
}

fn stats(answer: &Value) -> String {
    let mut out = format!(
        "over the last {} s (flags version {})\n",
        short(&answer["window_seconds"]),
        short(&answer["flags_version"])
    );
    let mut rows = vec![
        [
            "route",
            "path",
            "events/s",
            "path delivery",
            "client drops",
            "users",
            "mismatches",
            "verdict",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    if let Some(routes) = answer["routes"].as_object() {
        for (name, route) in routes {
            for (path, figures) in route["paths"].as_object().into_iter().flatten() {
                rows.push(vec![
                    name.clone(),
                    path.clone(),
                    figures["events_per_second"]
                        .as_f64()
                        .map_or_else(|| "?".to_owned(), |r| format!("{r:.1}")),
                    ratio(&figures["path_delivery_ratio"]),
                    ratio(&figures["client_drop_ratio"]),
                    short(&route["cohort"][path.as_str()]),
                    ratio(&route["shadow"]["unexpected_mismatch_ratio"]),
                    short(&route["guard"]["verdict"]),
                ]);
            }
        }
    }
    out.push_str(&table(&rows));
    out
}

fn mismatches(answer: &Value) -> String {
    let mut out = String::new();
    for sample in answer.as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            out,
            "{}  {}  user {}  {} vs {}  {}{}",
            short(&sample["at"]),
            short(&sample["route"]),
            sample["user_id"],
            short(&sample["primary_path"]),
            short(&sample["shadow_path"]),
            short(&sample["kinds"]),
            if sample["expected"] == true {
                " (expected)"
            } else {
                " (UNEXPECTED)"
            }
        );
        for diff in sample["diff"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let _ = writeln!(
                out,
                "    {}: {} vs {}",
                short(&diff["pointer"]),
                short(&diff["primary"]),
                short(&diff["shadow"])
            );
        }
    }
    if out.is_empty() {
        out.push_str("no shadow mismatches\n");
    }
    out
}

fn faults(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|fault| {
            vec![
                short(&fault["route"]),
                short(&fault["path"]),
                format!("drop_ratio {}", short(&fault["drop_ratio"])),
                format!("delay_ms {}", short(&fault["delay_ms"])),
            ]
        })
        .collect();
    if rows.is_empty() {
        "no faults\n".to_owned()
    } else {
        table(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_is_one_changed_line() {
        let answer = json!({
            "old_version": 3, "version": 4, "persisted": true,
            "changes": [
                {"key": "routes.user_event.ssot_percent", "route": "user_event", "old": 1.0, "new": 5.0},
                {"key": "routes.user_event.latch", "route": "user_event", "old": null,
                 "new": {"reason": "r", "actor": "ops", "trigger": "api", "at": "t"}},
            ],
        });
        assert_eq!(
            Render::Summary.text(&answer),
            "changed (version 3 → 4): routes.user_event.ssot_percent 1.0 → 5.0; \
             routes.user_event.latch none → latched by ops (r)"
        );
        let unchanged = json!({"old_version": 4, "version": 4, "persisted": true, "outcome": "unchanged", "changes": []});
        assert_eq!(
            Render::Summary.text(&unchanged),
            "reload unchanged; no change (version 4)"
        );
    }

    #[test]
    fn pins_are_listed_inside_their_brackets() {
        let route = json!({"ssot_percent": 5.0, "shadow": false, "latch": null, "ramp": null,
                           "pin_ssot": ["tester-1", "tester-2"], "pin_legacy": []});
        assert_eq!(
            route_row("user_event", &route)[5],
            "ssot [tester-1,tester-2] legacy []"
        );
    }
}
