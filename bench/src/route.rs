//! The four producer routes as the generator calls them: name, endpoint and request shape, from
//! the README's producer API. The gateway's own route table is not public API, so the generator
//! keeps this small copy of the contract; the end-to-end tests run it against a real gateway on
//! every route, which is what keeps the two in step.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A producer route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    RouterBroadcast,
    ScopedBroadcast,
    UserEvent,
    Broadcast,
}

/// A route name that is not one of the four.
#[derive(Debug, thiserror::Error)]
#[error("no route {0:?}: one of router_broadcast, scoped_broadcast, user_event, broadcast")]
pub struct UnknownRoute(String);

impl Route {
    pub const ALL: [Route; 4] = [
        Route::RouterBroadcast,
        Route::ScopedBroadcast,
        Route::UserEvent,
        Route::Broadcast,
    ];

    /// The name the flags, the admin API and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Route::RouterBroadcast => "router_broadcast",
            Route::ScopedBroadcast => "scoped_broadcast",
            Route::UserEvent => "user_event",
            Route::Broadcast => "broadcast",
        }
    }

    /// The single-event endpoint; its batch endpoint is this with `/batch` appended.
    pub fn endpoint(self) -> &'static str {
        match self {
            Route::RouterBroadcast => "/v1/legacy/router/broadcast",
            Route::ScopedBroadcast => "/v1/legacy/scoped/broadcast",
            Route::UserEvent => "/v1/legacy/user-event",
            Route::Broadcast => "/v1/broadcast",
        }
    }

    /// The endpoint for requests of `batch` events.
    pub fn endpoint_for(self, batch: usize) -> String {
        if batch > 1 {
            format!("{}/batch", self.endpoint())
        } else {
            self.endpoint().to_owned()
        }
    }

    /// Appends one request item for `user` carrying `event` (JSON text) to `body`, in the shape
    /// this route takes: a `user_context` on the scoped and user-event routes, a `user_id` on the
    /// others. Written by hand rather than through `serde_json::Value`: the generator shares the
    /// machine's cores with the gateway, so every microsecond it spends is one the gateway loses.
    /// `user` is one of the generator's own ids, with nothing in it to escape.
    pub fn write_item(self, body: &mut String, user: &str, event: fmt::Arguments<'_>) {
        use fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = match self {
            Route::ScopedBroadcast | Route::UserEvent => write!(
                body,
                r#"{{"user_context":{{"user_id":"{user}","thread_id":"bench","run_id":"bench"}},"event":{event}}}"#
            ),
            Route::RouterBroadcast | Route::Broadcast => {
                write!(body, r#"{{"user_id":"{user}","event":{event}}}"#)
            }
        };
    }
}

impl FromStr for Route {
    type Err = UnknownRoute;

    fn from_str(name: &str) -> Result<Route, UnknownRoute> {
        Route::ALL
            .into_iter()
            .find(|route| route.name() == name)
            .ok_or_else(|| UnknownRoute(name.to_owned()))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_are_refused() {
        for route in Route::ALL {
            assert_eq!(route.name().parse::<Route>().unwrap(), route);
            assert_eq!(
                serde_json::to_value(route).unwrap(),
                serde_json::json!(route.name())
            );
        }
        let error = "user-event".parse::<Route>().unwrap_err();
        assert!(error.to_string().contains("user_event"), "{error}");
    }

    #[test]
    fn items_are_json_in_each_route_shape() {
        for route in Route::ALL {
            let mut body = String::new();
            route.write_item(&mut body, "bench-00001", format_args!(r#"{{"type":"x"}}"#));
            let item: serde_json::Value = serde_json::from_str(&body).unwrap();
            let user = match route {
                Route::ScopedBroadcast | Route::UserEvent => &item["user_context"]["user_id"],
                Route::RouterBroadcast | Route::Broadcast => &item["user_id"],
            };
            assert_eq!(user, "bench-00001", "{route}: {body}");
            assert_eq!(item["event"]["type"], "x", "{route}: {body}");
        }
        assert_eq!(
            Route::UserEvent.endpoint_for(10),
            "/v1/legacy/user-event/batch"
        );
        assert_eq!(Route::UserEvent.endpoint_for(1), "/v1/legacy/user-event");
    }
}
