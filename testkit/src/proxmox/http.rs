//! HTTPS and the envelope of PVE's API server (pveproxy): `/api2/json`, parameters from the
//! query string or a form body, `{"data": …}` answers, errors with the message as the HTTP
//! reason phrase and in the body, API-token authentication, and the request log.

use std::collections::BTreeMap;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Logged;
use super::api;
use super::state::Shared;

const BASE: &str = "/api2/json";
/// pveproxy refuses larger request bodies too (its limit is 64 KiB for form data).
const MAX_BODY: usize = 64 * 1024;

/// What a handler answers.
pub(crate) enum Reply {
    Data(Value),
    /// Status and message (PVE's `die` text).
    Error(u16, String),
    /// Parameter → message: 400 "Parameter verification failed.".
    Invalid(BTreeMap<String, String>),
    /// Close the connection without an answer.
    Drop,
}

impl Reply {
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error(status, message.into())
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Reply {
        Reply::Invalid(BTreeMap::from([(param.to_string(), message.into())]))
    }

    fn status(&self) -> u16 {
        match self {
            Reply::Data(_) => 200,
            Reply::Error(status, _) => *status,
            Reply::Invalid(_) => 400,
            Reply::Drop => 0,
        }
    }
}

/// Accepts connections until the task is aborted; each connection is its own task, aborted
/// with this one (the JoinSet drops them).
pub(crate) async fn serve(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let (acceptor, shared) = (acceptor.clone(), Arc::clone(&shared));
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { handle(&shared, request).await }
            });
            // An error here is a client gone away, or the dropped answer of a fault.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// The error that makes hyper close the connection without writing an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped on purpose (complete_but_drop_next_create)")
    }
}

impl std::error::Error for DropConnection {}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, DropConnection> {
    let method = request.method().as_str().to_string();
    let uri = request.uri().clone();
    let authorization =
        request.headers().get(hyper::header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    let raw_path = percent_decode(uri.path());
    let path = raw_path.strip_prefix(BASE).filter(|p| p.is_empty() || p.starts_with('/'));
    let mut params: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let index = {
        let mut state = shared.state();
        let logged = path.unwrap_or(&raw_path).to_string();
        state.requests.push(Logged { method: method.clone(), path: logged, params: BTreeMap::new(), status: 0 });
        state.requests.len() - 1
    };

    let reply = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Err(_) => Reply::error(413, "request entity too large"),
        Ok(body) => {
            let body = body.to_bytes();
            let form = content_type.as_deref().is_none_or(|t| t.starts_with("application/x-www-form-urlencoded"));
            if !body.is_empty() && !form {
                // PVE would take JSON too; the fake holds clients to the form encoding.
                Reply::error(415, format!("unsupported content type {}", content_type.unwrap_or_default()))
            } else {
                if matches!(method.as_str(), "POST" | "PUT") {
                    params.extend(form_urlencoded::parse(&body).into_owned());
                }
                match path {
                    None => Reply::error(501, format!("Method '{method} {raw_path}' not implemented")),
                    Some(path) => {
                        let path = if path.is_empty() { "/" } else { path };
                        api::respond(shared, &method, path, &params, authorization.as_deref()).await
                    }
                }
            }
        }
    };

    {
        let mut state = shared.state();
        let logged = &mut state.requests[index];
        logged.params = params;
        logged.status = reply.status();
    }
    match reply {
        Reply::Drop => Err(DropConnection),
        Reply::Data(data) => Ok(answer(200, "OK", json!({ "data": data }))),
        Reply::Error(status, message) => {
            let message = format!("{}\n", message.trim_end_matches('\n'));
            Ok(answer(status, &message, json!({ "data": null, "message": message })))
        }
        Reply::Invalid(errors) => {
            let message = "Parameter verification failed.\n";
            Ok(answer(400, message, json!({ "data": null, "errors": errors, "message": message })))
        }
    }
}

fn answer(status: u16, message: &str, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json;charset=UTF-8".parse().unwrap());
    // PVE's reason phrase is the first line of the message, like "HTTP/1.1 401 No ticket".
    let reason: String = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c == '\t' || (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// Percent-decoding of the request path (UPIDs arrive with `%3A` and `%21`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The check of pveproxy for `Authorization: PVEAPIToken=<user>@<realm>!<name>=<secret>`.
pub(crate) fn authenticate(shared: &Shared, header: Option<&str>) -> Result<(), Reply> {
    let Some(header) = header else { return Err(Reply::error(401, "No ticket")) };
    let valid = header
        .strip_prefix("PVEAPIToken=")
        .and_then(|rest| rest.split_once('='))
        .is_some_and(|(id, secret)| id == shared.token_id && secret == shared.token_secret);
    if !valid {
        return Err(Reply::error(401, "invalid token value!"));
    }
    if shared.state().faults.token_expired {
        return Err(Reply::error(401, "token expired"));
    }
    Ok(())
}
