//! A posted form (`application/x-www-form-urlencoded`) or a query string,
//! as name/value pairs.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use super::layout::error_page;

/// Largest form body read: a bulk action on a few thousand devices fits.
const MAX_FORM: usize = 2 << 20;

/// Name/value pairs, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The query string of `uri`.
    pub(crate) fn query(uri: &http::Uri) -> Form {
        Form::parse(uri.query().unwrap_or("").as_bytes())
    }

    /// The first value of `name`.
    pub(crate) fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value of `name`, else "".
    pub(crate) fn text(&self, name: &str) -> &str {
        self.one(name).map(str::trim).unwrap_or("")
    }

    /// Every value of `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the form a request posted.
pub(crate) async fn read(req: Request<Incoming>) -> Result<Form, Response<Full<Bytes>>> {
    match http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
    {
        Ok(b) => Ok(Form::parse(&b.to_bytes())),
        Err(e) => Err(error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Refused",
            &format!("The form could not be read ({e}); select fewer devices at once."),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_in_order_with_repeats() {
        let f = Form::parse(b"id=a&id=b&q=x+y%21&csrf=t");
        assert_eq!(f.all("id").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(f.one("q"), Some("x y!"));
        assert_eq!(f.text("missing"), "");
    }
}
