//! A signed-in browser by hand, for the portal's tests: the session cookie kept from the login's
//! `Set-Cookie`, forms posted with the page's CSRF token, redirects not followed.

use reqwest::blocking::{Client, Response};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use super::Cp;

pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn url(cp: &Cp, path: &str) -> String {
    format!("http://{}{path}", cp.addr)
}

/// A signed-in browser, by hand: the session cookie and the page's CSRF token.
pub struct Browser {
    pub cookie: String,
}

impl Browser {
    pub fn get(&self, cp: &Cp, path: &str) -> Response {
        client()
            .get(url(cp, path))
            .header(COOKIE, &self.cookie)
            .send()
            .unwrap()
    }

    pub fn page(&self, cp: &Cp, path: &str) -> (u16, String) {
        let r = self.get(cp, path);
        (r.status().as_u16(), r.text().unwrap())
    }

    pub fn api(&self, cp: &Cp, path: &str) -> (u16, Value) {
        let r = self.get(cp, path);
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// The CSRF token of the session, from the logout form of the overview.
    pub fn csrf(&self, cp: &Cp) -> String {
        let (_, body) = self.page(cp, "/");
        let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        body[at..].split('"').next().unwrap().to_string()
    }

    pub fn post(
        &self,
        cp: &Cp,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> u16 {
        let mut r = client()
            .post(url(cp, path))
            .header(COOKIE, &self.cookie)
            .form(form);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().unwrap().status().as_u16()
    }
}

pub fn login_response(cp: &Cp, login: &str, password: &str) -> Response {
    client()
        .post(url(cp, "/login"))
        .form(&[("login", login), ("password", password)])
        .send()
        .unwrap()
}

pub fn session_cookie(r: &Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("oca_session="))
}

pub fn login(cp: &Cp, (user, password): (&str, &str)) -> Browser {
    let r = login_response(cp, user, password);
    assert_eq!(r.status().as_u16(), 303, "{user} signs in");
    assert_eq!(r.headers()[LOCATION], "/");
    let set = session_cookie(&r).expect("a session cookie");
    Browser {
        cookie: set.split(';').next().unwrap().to_string(),
    }
}

impl Browser {
    /// Posts a form; the status, the `Location` and the body.
    pub fn post_page(&self, cp: &Cp, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let r = client()
            .post(url(cp, path))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .unwrap();
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), location, r.text().unwrap())
    }

    /// Posts JSON with `X-CSRF-Token: csrf` (none: without it); the status and the answer.
    pub fn post_json(&self, cp: &Cp, path: &str, body: &Value, csrf: Option<&str>) -> (u16, Value) {
        let mut r = client()
            .post(url(cp, path))
            .header(COOKIE, &self.cookie)
            .json(body);
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }
}
