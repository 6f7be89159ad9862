//! The OpenAPI 3.1 description of both listeners, served at `GET /admin/openapi.json`.
//!
//! It is built from the endpoint tables the routers are built from (`server::public_endpoints`,
//! `server::admin_endpoints`): each [`Endpoint`](crate::server::Endpoint) carries a [`Doc`] naming
//! its request and answer types, whose schemas come from the types themselves
//! (`utoipa::ToSchema` on `server::protocol`). So a route cannot be served without being
//! described, and a field added to an answer type shows up in the document by itself. The
//! producer routes' request bodies are parsed by hand (`protocol::RouteRequest`), so their
//! shapes are described by the small documentation types here.

use std::borrow::Cow;

use axum::http::Method;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::server::Endpoint;
use crate::server::protocol::{ErrorBody, ErrorDetail};

/// What the document says of one endpoint.
#[derive(Clone, Copy)]
pub(crate) struct Doc {
    pub(crate) summary: &'static str,
    /// Query parameters: name and what it does; all optional but where the text says otherwise.
    pub(crate) query: &'static [(&'static str, &'static str)],
    pub(crate) request: Option<TypeDoc>,
    pub(crate) answer: Answer,
    pub(crate) auth: Auth,
}

/// An endpoint's successful answer.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    /// A JSON document of this type.
    Json(TypeDoc),
    /// A JSON array of this type.
    JsonList(TypeDoc),
    /// Plain text (`/metrics`, health).
    Text,
    /// A static file of this media type (the console's page, script and style sheet).
    Asset(&'static str),
    /// A redirect (303) to another endpoint.
    Redirect,
    /// A WebSocket upgrade.
    WebSocket,
}

/// Which credentials an endpoint takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    Producer,
    Admin,
    /// A client JWT (or dev mode's `?user_id=`).
    Client,
}

/// A request or answer type, by its schema.
#[derive(Clone, Copy)]
pub(crate) struct TypeDoc {
    name: fn() -> Cow<'static, str>,
    schema: fn() -> RefOr<Schema>,
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
}

/// The schema of `T`.
pub(crate) fn type_doc<T: ToSchema>() -> TypeDoc {
    TypeDoc {
        name: T::name,
        schema: T::schema,
        schemas: T::schemas,
    }
}

impl Doc {
    pub(crate) const fn new(summary: &'static str, answer: Answer, auth: Auth) -> Doc {
        Doc {
            summary,
            query: &[],
            request: None,
            answer,
            auth,
        }
    }

    pub(crate) const fn with_query(self, query: &'static [(&'static str, &'static str)]) -> Doc {
        Doc { query, ..self }
    }

    pub(crate) const fn with_request(self, request: TypeDoc) -> Doc {
        Doc {
            request: Some(request),
            ..self
        }
    }
}

/// The document for every endpoint of both listeners.
pub(crate) fn document(public: &[Endpoint], admin: &[Endpoint]) -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas = vec![
        (ErrorBody::name().into_owned(), ErrorBody::schema()),
        (ErrorDetail::name().into_owned(), ErrorDetail::schema()),
    ];
    for (listener, endpoints) in [("public", public), ("admin", admin)] {
        for endpoint in endpoints {
            let doc = &endpoint.doc;
            for type_doc in doc.request.iter().chain(answer_type(&doc.answer)) {
                schemas.push(((type_doc.name)().into_owned(), (type_doc.schema)()));
                (type_doc.schemas)(&mut schemas);
            }
            paths.add_path_operation(
                &endpoint.path,
                vec![http_method(&endpoint.method)],
                operation(listener, endpoint),
            );
        }
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme("admin_token", bearer("an admin token (auth.admin_tokens)"))
        .security_scheme(
            "producer_token",
            bearer("a producer token (auth.producer_tokens)"),
        )
        .security_scheme(
            "client_jwt",
            bearer("a client JWT whose sub is the user id"),
        );
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("switchyard")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Both listeners: the public one (server.listen: /ws, /v1/...) and the \
                     admin one (server.admin_listen: /metrics, /healthz, /readyz, /admin/...). \
                     Every error is {\"error\": {\"code\", \"message\"}}.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

fn answer_type(answer: &Answer) -> Option<&TypeDoc> {
    match answer {
        Answer::Json(type_doc) | Answer::JsonList(type_doc) => Some(type_doc),
        Answer::Text | Answer::Asset(_) | Answer::Redirect | Answer::WebSocket => None,
    }
}

fn bearer(description: &str) -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(description))
            .build(),
    )
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// One operation: its summary, listener tag, credentials, path parameters, body and answers.
fn operation(listener: &str, endpoint: &Endpoint) -> utoipa::openapi::path::Operation {
    let doc = &endpoint.doc;
    let reference = |type_doc: &TypeDoc| RefOr::Ref(Ref::from_schema_name((type_doc.name)()));
    let mut builder = OperationBuilder::new()
        .summary(Some(doc.summary))
        .tag(listener)
        .operation_id(Some(format!(
            "{} {}",
            endpoint.method.as_str().to_lowercase(),
            endpoint.path
        )));
    for name in endpoint
        .path
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
    {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(String::schema())),
        );
    }
    for (name, description) in doc.query {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(String::schema())),
        );
    }
    let scheme = match doc.auth {
        Auth::None => None,
        Auth::Producer => Some("producer_token"),
        Auth::Admin => Some("admin_token"),
        Auth::Client => Some("client_jwt"),
    };
    if let Some(scheme) = scheme {
        builder = builder.security(SecurityRequirement::new(scheme, Vec::<String>::new()));
    }
    if let Some(request) = &doc.request {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", Content::new(Some(reference(request))))
                .required(Some(Required::True))
                .build(),
        ));
    }
    let (status, ok) = success(&doc.answer, reference);
    let error = ResponseBuilder::new()
        .description("an error: {\"error\": {\"code\", \"message\"}}")
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(Ref::from_schema_name(ErrorBody::name())))),
        );
    builder
        .response(status, ok.build())
        .response("default", error.build())
        .build()
}

/// The success answer of an operation: its status and its response, by the kind of answer.
fn success(
    answer: &Answer,
    reference: impl Fn(&TypeDoc) -> RefOr<Schema>,
) -> (&'static str, ResponseBuilder) {
    let ok = match answer {
        Answer::Json(answer) => ResponseBuilder::new()
            .description("success")
            .content("application/json", Content::new(Some(reference(answer)))),
        Answer::JsonList(item) => ResponseBuilder::new().description("success").content(
            "application/json",
            Content::new(Some(ArrayBuilder::new().items(reference(item)).build())),
        ),
        Answer::Text => ResponseBuilder::new()
            .description("success")
            .content("text/plain", Content::new(Some(String::schema()))),
        Answer::Asset(media_type) => ResponseBuilder::new()
            .description("success")
            .content(*media_type, Content::new(Some(String::schema()))),
        Answer::Redirect => ResponseBuilder::new().description("see the Location header"),
        Answer::WebSocket => ResponseBuilder::new().description("switching to the WebSocket"),
    };
    let status = match answer {
        Answer::WebSocket => "101",
        Answer::Redirect => "303",
        _ => "200",
    };
    (status, ok)
}

pub(crate) use self::bodies::{BatchAnswer, BatchRequest, ContextRequest, UserIdRequest};

/// Documentation types: the schemas of bodies the code reads or writes by other means (the
/// producer bodies are parsed by `RouteRequest`, a batch item by item, and `BatchBody` is generic
/// over the route), so their fields are never read.
#[allow(dead_code, reason = "documentation types: only their schemas are used")]
mod bodies {
    use utoipa::ToSchema;

    use crate::server::protocol::ErrorDetail;

    /// `POST /v1/broadcast` and `/v1/legacy/router/broadcast`: the user and the event.
    #[derive(ToSchema)]
    pub(crate) struct UserIdRequest {
        /// 1-128 characters from letters, digits and `. _ : @ - |`.
        user_id: String,
        /// The event: an object with a `type`.
        #[schema(value_type = Object)]
        event: (),
    }

    /// `POST /v1/legacy/scoped/broadcast` and `/v1/legacy/user-event`: the caller's context and the
    /// event, enriched from it.
    #[derive(ToSchema)]
    pub(crate) struct ContextRequest {
        user_context: UserContextDoc,
        /// The event: an object with a `type`.
        #[schema(value_type = Object)]
        event: (),
    }

    /// `user_context`: whose event, in which thread and run.
    #[derive(ToSchema)]
    pub(crate) struct UserContextDoc {
        user_id: String,
        thread_id: String,
        run_id: String,
        /// Generated when absent.
        request_id: Option<String>,
    }

    /// `POST {route}/batch`: a JSON array of the route's bodies (or NDJSON).
    #[derive(ToSchema)]
    pub(crate) struct BatchRequest(Vec<serde_json::Value>);

    /// A batch's answer: one item per event, in order.
    #[derive(ToSchema)]
    pub(crate) struct BatchAnswer {
        results: Vec<BatchItemDoc>,
    }

    /// One event's answer in a batch: `result` (the route's single-event answer) or `error`.
    #[derive(ToSchema)]
    pub(crate) struct BatchItemDoc {
        status: u16,
        /// `legacy` or `ssot`.
        path: String,
        #[schema(value_type = Option<Object>)]
        result: (),
        error: Option<ErrorDetail>,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::server::{admin_endpoints, public_endpoints};

    /// Every endpoint the routers serve, enumerated from the tables they are built from, is in
    /// the document under its path and method, with its answers; and every schema the document
    /// refers to is in it.
    #[test]
    fn the_document_describes_every_route_of_both_routers() {
        let (public, admin) = (public_endpoints(), admin_endpoints());
        let document = serde_json::to_value(document(&public, &admin)).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut described = 0;
        for endpoint in public.iter().chain(&admin) {
            let method = endpoint.method.as_str().to_lowercase();
            let operation = &document["paths"][&endpoint.path][&method];
            assert!(
                operation["responses"].is_object() && operation["summary"].is_string(),
                "{method} {} is not described: {operation}",
                endpoint.path
            );
            if endpoint.path.contains("{route}") {
                assert_eq!(operation["parameters"][0]["name"], "route");
            }
            let parameters: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let expected: Vec<&str> = endpoint.doc.query.iter().map(|(name, _)| *name).collect();
            assert_eq!(parameters, expected, "{method} {}", endpoint.path);
            described += 1;
        }
        // /ws, four routes twice; 3 open admin endpoints and the console's 4 (`/`, the page, its
        // script and style sheet); 14 under /admin.
        assert_eq!(described, 1 + 8 + 3 + 4 + 14);
        let text = document.to_string();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                schemas.contains_key(name),
                "{name} is referred to but not defined"
            );
        }
        // The answer types' own fields are there, from the types.
        let summary = &schemas["ChangeSummaryView"]["properties"];
        for field in ["old_version", "version", "persisted", "changes"] {
            assert!(summary[field].is_object(), "{field}: {summary}");
        }
        let kill_switch = &document["paths"]["/admin/kill-switch"]["post"];
        assert_eq!(
            kill_switch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            Value::from("#/components/schemas/KillSwitchRequest")
        );
    }
}
