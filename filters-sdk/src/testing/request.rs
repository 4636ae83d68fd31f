//! [`TestRequest`] and [`TestResponse`]: what the harness feeds a filter.

/// A request for [`super::Harness::request`].
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: Vec<(Vec<String>, String)>,
}

impl TestRequest {
    /// A request with `method` and `path` (`:authority` is `localhost`, `:scheme` `http`).
    pub fn new(method: &str, path: &str) -> TestRequest {
        TestRequest {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), "localhost".into()),
                (":scheme".into(), "http".into()),
            ],
            body: Vec::new(),
            properties: vec![
                (vec!["request".into(), "method".into()], method.into()),
                (vec!["request".into(), "path".into()], path.into()),
            ],
        }
    }

    /// A GET.
    pub fn get(path: &str) -> TestRequest {
        TestRequest::new("GET", path)
    }

    /// A POST.
    pub fn post(path: &str) -> TestRequest {
        TestRequest::new("POST", path)
    }

    /// Adds a header (a pseudo-header replaces the one there).
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        let name = name.to_ascii_lowercase();
        if name.starts_with(':') {
            self.headers.retain(|(n, _)| *n != name);
        }
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body (run through the body phase).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestRequest {
        self.body = body.into();
        self
    }

    /// The caller's proved identity (`source.principal`).
    pub fn peer(self, identity: &str) -> TestRequest {
        self.property(&["source", "principal"], identity)
    }

    /// Sets a property for this request.
    pub fn property(mut self, path: &[&str], value: &str) -> TestRequest {
        self.properties
            .push((path.iter().map(|s| s.to_string()).collect(), value.into()));
        self
    }
}

/// A response for [`super::Exchange::respond`] or [`super::Exchange::answer_call`].
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl TestResponse {
    /// A response with `status`.
    pub fn new(status: u16) -> TestResponse {
        TestResponse {
            headers: vec![(":status".into(), status.to_string())],
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> TestResponse {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestResponse {
        self.body = body.into();
        self
    }
}
