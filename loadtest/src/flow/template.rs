//! Templates (`{{name}}` in urls, headers, bodies, tokens, channels and metadata) and captures
//! (JSON pointers into a response), sans IO.
//!
//! A template is parsed once, when the scenario is loaded, against the names known at that
//! point of the flow: constants (`[flow.vars]`, substituted right away) and slots, the values
//! each user fills in as it runs (`{{user}}`, `{{run}}`, then every capture of an earlier step).
//! Rendering is then a copy of text and slot values, with no lookup by name.

use std::collections::BTreeMap;

/// What a name stands for while templates are parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// A constant of `[flow.vars]`, written into the template when it is parsed.
    Const(String),
    /// The user's value in this slot of its [`Slots`].
    Slot(usize),
}

/// The names a template may use at one point of the flow.
pub type Scope = BTreeMap<String, Binding>;

/// The slot of `{{user}}`: the user's number, from 0, unique within a run.
pub const USER_SLOT: usize = 0;
/// The slot of `{{run}}`: an id drawn once per run, so re-runs do not collide on emails.
pub const RUN_SLOT: usize = 1;

/// One user's values, by slot.
pub type Slots = Vec<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(usize),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{name}}` names nothing known at this point of the flow.
    Unknown {
        /// The name.
        name: String,
        /// The names that are known, for the message.
        known: Vec<String>,
    },
    /// A `{{` without its `}}`, or a name that is not an identifier.
    Malformed(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Unknown { name, known } => write!(
                f,
                "unknown variable `{name}` (no earlier step captures it; known here: {})",
                known.join(", ")
            ),
            TemplateError::Malformed(why) => f.write_str(why),
        }
    }
}

/// Whether `name` can be a variable: ASCII letters, digits and `_`, not starting with a digit.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `text` against `scope`.
    pub fn parse(text: &str, scope: &Scope) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                TemplateError::Malformed(format!("`{{{{` without `}}}}` in `{text}`"))
            })?;
            let name = after[..close].trim();
            if !is_identifier(name) {
                return Err(TemplateError::Malformed(format!(
                    "`{{{{{name}}}}}` is not a variable (letters, digits and _)"
                )));
            }
            match scope.get(name) {
                Some(Binding::Const(value)) => literal.push_str(value),
                Some(Binding::Slot(slot)) => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Slot(*slot));
                }
                None => {
                    return Err(TemplateError::Unknown {
                        name: name.to_string(),
                        known: scope.keys().cloned().collect(),
                    })
                }
            }
            rest = &after[close + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text before the first slot (all of it when there is none).
    pub fn leading_text(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// Whether every part is constant text.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The template without its first `n` bytes, which must lie in [`Self::leading_text`].
    pub fn without_prefix(&self, n: usize) -> Template {
        let mut parts = self.parts.clone();
        if let Some(Part::Text(t)) = parts.first_mut() {
            t.drain(..n.min(t.len()));
        }
        Template { parts }
    }

    /// Writes the template with `slots` filled in, appending to `out`.
    pub fn render_into(&self, slots: &[String], out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Slot(s) => out.push_str(slots.get(*s).map_or("", String::as_str)),
            }
        }
    }

    /// The template with `slots` filled in.
    pub fn render(&self, slots: &[String]) -> String {
        let mut out = String::new();
        self.render_into(slots, &mut out);
        out
    }
}

/// Why a capture's JSON pointer is refused; each message quotes the pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer that does not start with `/`.
    #[error("`{0}` is not a JSON pointer (it must start with `/`, e.g. \"/user/id\")")]
    NoLeadingSlash(String),
    /// A `~` not followed by `0` or `1`.
    #[error("`{0}`: `~` must be followed by 0 or 1 in a JSON pointer")]
    BadEscape(String),
}

/// Checks an RFC 6901 JSON pointer: empty (the whole document) or `/`-separated tokens in which
/// `~` is only ever followed by `0` or `1`.
pub fn check_pointer(pointer: &str) -> Result<(), PointerError> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(PointerError::NoLeadingSlash(pointer.to_string()));
    }
    let bytes = pointer.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(PointerError::BadEscape(pointer.to_string()));
        }
    }
    Ok(())
}

/// The value at `pointer` as a slot value: strings as they are, anything else as JSON text.
/// `None` when there is nothing there (or it is `null`).
pub fn capture(document: &serde_json::Value, pointer: &str) -> Option<String> {
    match document.pointer(pointer)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let mut s = Scope::new();
        s.insert("user".into(), Binding::Slot(USER_SLOT));
        s.insert("run".into(), Binding::Slot(RUN_SLOT));
        s.insert("host".into(), Binding::Const("127.0.0.1:8000".into()));
        s.insert("token".into(), Binding::Slot(2));
        s
    }

    #[test]
    fn templates_render_slots_and_fold_constants() {
        let t = Template::parse("http://{{host}}/u/{{ user }}?r={{run}}", &scope()).unwrap();
        assert_eq!(t.leading_text(), "http://127.0.0.1:8000/u/");
        assert!(!t.is_constant());
        let slots = vec!["7".to_string(), "ab12".to_string(), "T".to_string()];
        assert_eq!(t.render(&slots), "http://127.0.0.1:8000/u/7?r=ab12");
        let path = t.without_prefix("http://127.0.0.1:8000".len());
        assert_eq!(path.render(&slots), "/u/7?r=ab12");
        let constant = Template::parse("{{host}}", &scope()).unwrap();
        assert!(constant.is_constant());
        assert_eq!(constant.render(&[]), "127.0.0.1:8000");
        assert_eq!(Template::parse("", &scope()).unwrap().render(&[]), "");
        assert_eq!(
            Template::parse("{{token}}{{user}}", &scope())
                .unwrap()
                .render(&slots),
            "T7"
        );
    }

    #[test]
    fn unknown_and_malformed_variables_are_errors() {
        let err = Template::parse("Bearer {{tokn}}", &scope()).unwrap_err();
        assert!(matches!(&err, TemplateError::Unknown { name, .. } if name == "tokn"));
        assert!(err
            .to_string()
            .contains("known here: host, run, token, user"));
        assert!(matches!(
            Template::parse("{{user", &scope()),
            Err(TemplateError::Malformed(_))
        ));
        assert!(matches!(
            Template::parse("{{a b}}", &scope()),
            Err(TemplateError::Malformed(_))
        ));
    }

    #[test]
    fn pointers_are_checked_and_captured() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/user/id").is_ok());
        assert!(check_pointer("/a~1b/~0").is_ok());
        assert_eq!(
            check_pointer("access_token"),
            Err(PointerError::NoLeadingSlash("access_token".into()))
        );
        assert_eq!(
            check_pointer("/a~2"),
            Err(PointerError::BadEscape("/a~2".into()))
        );
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"user":{"id":"u1","n":3,"ok":true},"x":null}"#).unwrap();
        assert_eq!(capture(&doc, "/user/id").as_deref(), Some("u1"));
        assert_eq!(capture(&doc, "/user/n").as_deref(), Some("3"));
        assert_eq!(capture(&doc, "/user/ok").as_deref(), Some("true"));
        assert_eq!(capture(&doc, "/x"), None);
        assert_eq!(capture(&doc, "/nope"), None);
    }
}
