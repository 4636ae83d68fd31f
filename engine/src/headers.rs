//! How the engine reads request headers, so any header map (hyper's, a test's slice) fits.

/// Request headers as the engine sees them.
pub trait RequestHeaders {
    /// The first value of the header `name` (given in lower case), compared without regard
    /// to case; `None` when absent.
    fn get(&self, name: &str) -> Option<&str>;
}

impl RequestHeaders for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> RequestHeaders for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        RequestHeaders::get(self.as_slice(), name)
    }
}

impl RequestHeaders for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RequestHeaders for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        RequestHeaders::get(self.as_slice(), name)
    }
}

/// No headers at all.
impl RequestHeaders for () {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}
