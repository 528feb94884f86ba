//! The browser chat client (`web/`): its built files, served from a folder
//! (`WEB_DIR`) as the router's fallback. No API route changes, and a path
//! that is neither a route nor a file still gets the API's JSON 404.

use std::path::Path;

use axum::{
    Router,
    extract::Request,
    handler::HandlerWithoutStateExt,
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::services::ServeDir;

use crate::error::ApiError;

/// Vite names each file under `assets/` by a hash of its content, so a
/// browser may keep it for good; a new build brings new names.
const HASHED: &str = "public, max-age=31536000, immutable";
/// `index.html` and the other unhashed files: checked again on every load,
/// so a new build is seen at once (a 304 when nothing changed).
const UNHASHED: &str = "no-cache";
/// The client loads nothing but its own files and talks only to this
/// gateway (REST and WebSocket on the same origin): no CDN, no inline code.
const POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files of `dir`, `/` being its `index.html`, with their content types
/// and cache headers; any other request (a missing file, a method other
/// than GET and HEAD) gets the API's `404 no such endpoint`.
pub fn files(dir: &Path) -> Router {
    if dir.join("index.html").is_file() {
        tracing::info!(web_dir = %dir.display(), "serving the web client");
    } else {
        tracing::warn!(web_dir = %dir.display(), "no index.html in WEB_DIR: the web client is not served");
    }
    let serve = ServeDir::new(dir).call_fallback_on_method_not_allowed(true).fallback(not_found.into_service());
    Router::new().fallback_service(serve).layer(middleware::from_fn(cache_headers))
}

/// What every unknown path answers, as before the client was served.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Sets the cache policy (by the path) and the content policy on the files
/// served; an error keeps the API's headers.
async fn cache_headers(request: Request, next: Next) -> Response {
    let hashed = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(if hashed { HASHED } else { UNHASHED }));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Method};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A folder shaped like Vite's output, removed when dropped.
    struct Built(std::path::PathBuf);

    impl Built {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("chat-web-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(dir.join("assets")).unwrap();
            std::fs::write(dir.join("index.html"), "<!doctype html><title>chat</title>").unwrap();
            std::fs::write(dir.join("assets/index-Ab12Cd34.js"), "console.log(1)").unwrap();
            std::fs::write(dir.join("assets/index-Ef56Gh78.css"), "body{}").unwrap();
            std::fs::write(dir.join("favicon.svg"), "<svg/>").unwrap();
            Self(dir)
        }
    }

    impl Drop for Built {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn call(dir: &Path, method: Method, path: &str) -> (StatusCode, header::HeaderMap, String) {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let response = files(dir).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (parts.status, parts.headers, body)
    }

    fn header(headers: &header::HeaderMap, name: header::HeaderName) -> &str {
        headers.get(name).map_or("", |value| value.to_str().unwrap())
    }

    #[tokio::test]
    async fn the_page_is_revalidated_and_hashed_assets_are_kept() {
        let built = Built::new();
        let (status, headers, body) = call(&built.0, Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>chat</title>"), "{body}");
        assert_eq!(header(&headers, header::CONTENT_TYPE), "text/html");
        assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
        assert!(header(&headers, header::CONTENT_SECURITY_POLICY).starts_with("default-src 'self'"));

        let (status, headers, _) = call(&built.0, Method::GET, "/assets/index-Ab12Cd34.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, header::CONTENT_TYPE), "text/javascript");
        assert_eq!(header(&headers, header::CACHE_CONTROL), HASHED);
        let (_, headers, _) = call(&built.0, Method::HEAD, "/assets/index-Ef56Gh78.css").await;
        assert_eq!(header(&headers, header::CONTENT_TYPE), "text/css");
        assert_eq!(header(&headers, header::CACHE_CONTROL), HASHED);
        let (_, headers, _) = call(&built.0, Method::GET, "/favicon.svg").await;
        assert_eq!(header(&headers, header::CONTENT_TYPE), "image/svg+xml");
        assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
    }

    #[tokio::test]
    async fn anything_else_is_the_apis_json_404_and_never_cached() {
        let built = Built::new();
        let outside = built.0.parent().unwrap().join(format!("{}-secret", uuid::Uuid::new_v4()));
        std::fs::write(&outside, "secret").unwrap();
        let escape = format!("/../{}", outside.file_name().unwrap().to_str().unwrap());
        let cases = [
            (Method::GET, "/nope"),
            (Method::GET, "/assets/index-00000000.js"),
            (Method::GET, escape.as_str()),
            (Method::GET, "/%2e%2e/etc/passwd"),
            (Method::POST, "/"),
            (Method::PUT, "/assets/index-Ab12Cd34.js"),
            (Method::DELETE, "/index.html"),
        ];
        for (method, path) in cases {
            let (status, headers, body) = call(&built.0, method.clone(), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(body, r#"{"Error":"no such endpoint"}"#, "{method} {path}");
            assert_eq!(header(&headers, header::CACHE_CONTROL), "", "{method} {path}");
        }
        std::fs::remove_file(outside).unwrap();
    }

    #[tokio::test]
    async fn without_a_build_every_path_is_404_as_before() {
        let missing = std::env::temp_dir().join(format!("chat-web-missing-{}", uuid::Uuid::new_v4()));
        for path in ["/", "/index.html", "/assets/index-Ab12Cd34.js"] {
            let (status, _, body) = call(&missing, Method::GET, path).await;
            assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, r#"{"Error":"no such endpoint"}"#), "{path}");
        }
    }
}
