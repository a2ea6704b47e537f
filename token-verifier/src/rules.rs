//! Which paths are public and which need a role, matched on canonical paths (see [`crate::path`]).
//!
//! Each comparison leans the safe way when an upstream might fold case: a role rule matches
//! case-insensitively (`/ADMIN` is as protected as `/admin`, unless configured case-sensitive),
//! while a public path must match exactly (`/PUBLIC` is not public).

use crate::path::{CanonicalPath, canonicalize};
use crate::settings::RouteRule;

/// Public paths (decoded, exact) and role rules (decoded, folded unless case-sensitive).
pub struct Rules {
    public: Vec<String>,
    // Longest path first, so the most specific rule wins.
    rules: Vec<Rule>,
    case_sensitive: bool,
}

struct Rule {
    key: String,
    // Upper case; empty for every method.
    methods: Vec<String>,
    roles: Vec<String>,
}

impl Rule {
    // A `GET` rule covers `HEAD`, which every server answers like a `GET`.
    fn applies_to(&self, method: &str) -> bool {
        self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m == method || (method == "HEAD" && m == "GET"))
    }
}

/// The methods an app may treat a request as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// The request's method and any override it names, upper-cased.
    Named(Vec<String>),
    /// Any method: the app may take one from a body the verifier does not see.
    Any,
}

fn fold(path: String, case_sensitive: bool) -> String {
    if case_sensitive { path } else { path.to_lowercase() }
}

/// Whether `prefix` covers `path` on a segment boundary (`/admin` covers `/admin` and `/admin/x`,
/// not `/administrator`).
fn covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len() || prefix.ends_with('/') || path.as_bytes()[prefix.len()] == b'/')
}

/// The decoded form of a configured path, which must be its own canonical spelling.
fn configured(path: &str) -> Result<String, String> {
    match canonicalize(path) {
        Ok(canonical) if canonical.spelling == path => Ok(canonical.decoded),
        Ok(canonical) => Err(format!("path {path} should be written {}", canonical.spelling)),
        Err(error) => Err(format!("path {path}: {error}")),
    }
}

impl Rules {
    /// Rules from settings; every path must be canonical.
    pub fn new(public: &[String], rules: &[RouteRule], case_sensitive: bool) -> Result<Self, String> {
        let public = public
            .iter()
            .map(|path| configured(path))
            .collect::<Result<_, _>>()?;
        let mut rules = rules
            .iter()
            .map(|rule| {
                Ok(Rule {
                    key: fold(configured(&rule.path)?, case_sensitive),
                    methods: rule.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                    roles: rule.roles.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.key.len()));
        Ok(Self {
            public,
            rules,
            case_sensitive,
        })
    }

    /// Whether `path` needs no token.
    pub fn is_public(&self, path: &CanonicalPath) -> bool {
        self.public.iter().any(|prefix| covers(prefix, &path.decoded))
    }

    /// The most specific rule for `method` on `key` (the folded path).
    fn rule_for(&self, method: &str, key: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| covers(&rule.key, key) && rule.applies_to(method))
    }

    /// The role sets a request must each satisfy (any one role of each): the most specific rule
    /// for every method the app may treat it as. `methods` is asked only when a rule covers the
    /// path: most requests pass through with no rule at all, and reading overrides costs.
    pub fn required_roles(&self, methods: impl FnOnce() -> Methods, path: &CanonicalPath) -> Vec<&[String]> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let key = fold(path.decoded.clone(), self.case_sensitive);
        if !self.rules.iter().any(|rule| covers(&rule.key, &key)) {
            return Vec::new();
        }
        // A method no rule names stands for every other method.
        let unnamed = String::new();
        let methods = methods();
        let candidates: Vec<&String> = match &methods {
            Methods::Named(named) => named.iter().collect(),
            Methods::Any => self
                .rules
                .iter()
                .flat_map(|rule| &rule.methods)
                .chain([&unnamed])
                .collect(),
        };
        let mut required: Vec<&[String]> = Vec::new();
        for method in candidates {
            if let Some(rule) = self.rule_for(method, &key)
                && !required
                    .iter()
                    .any(|roles| std::ptr::eq(*roles, rule.roles.as_slice()))
            {
                required.push(&rule.roles);
            }
        }
        required
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, methods: &[&str], roles: &[&str]) -> RouteRule {
        RouteRule {
            path: path.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn path(raw: &str) -> CanonicalPath {
        canonicalize(raw).unwrap()
    }

    fn named(methods: &[&str]) -> Methods {
        Methods::Named(methods.iter().map(|m| (*m).to_owned()).collect())
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let rules = Rules::new(&["/public".into(), "/assets/".into()], &[], false).unwrap();
        assert!(rules.is_public(&path("/public")));
        assert!(rules.is_public(&path("/public/x")));
        assert!(!rules.is_public(&path("/PUBLIC/x")), "public paths match exactly");
        assert!(!rules.is_public(&path("/publicity")));
        assert!(rules.is_public(&path("/assets/app.js")));
    }

    #[test]
    fn the_most_specific_rule_wins_and_methods_narrow_it() {
        let rules = Rules::new(
            &[],
            &[
                rule("/admin", &[], &["admin"]),
                rule("/admin/reports", &["GET"], &["auditor", "admin"]),
            ],
            false,
        )
        .unwrap();
        let reports = path("/admin/reports/1");
        assert_eq!(
            rules.required_roles(|| named(&["GET"]), &reports),
            [["auditor", "admin"]]
        );
        assert_eq!(
            rules.required_roles(|| named(&["HEAD"]), &reports),
            [["auditor", "admin"]],
            "GET rules cover HEAD"
        );
        assert_eq!(rules.required_roles(|| named(&["POST"]), &reports), [["admin"]]);
        assert_eq!(
            rules.required_roles(|| named(&["POST"]), &path("/ADMIN/Reports/1")),
            [["admin"]],
            "role rules match in any case"
        );
        let any = rules.required_roles(|| Methods::Any, &reports);
        assert_eq!(any.len(), 2, "the rules of every method apply");
        assert!(any.contains(&&["admin".to_owned()][..]));
        assert!(rules.required_roles(|| named(&["GET"]), &path("/app")).is_empty());
    }

    #[test]
    fn an_override_cannot_escape_a_method_scoped_rule() {
        let rules = Rules::new(&[], &[rule("/reports", &["delete"], &["admin"])], false).unwrap();
        let reports = path("/reports/1");
        assert!(rules.required_roles(|| named(&["POST"]), &reports).is_empty());
        assert_eq!(
            rules.required_roles(|| named(&["POST", "DELETE"]), &reports),
            [["admin"]]
        );
        assert_eq!(rules.required_roles(|| Methods::Any, &reports), [["admin"]]);
    }

    #[test]
    fn configured_paths_must_be_canonical() {
        assert!(Rules::new(&["/%61dmin".into()], &[], false).is_err());
        assert!(Rules::new(&[], &[rule("/a/../b", &[], &["x"])], false).is_err());
        let exact = Rules::new(&[], &[rule("/Admin", &[], &["admin"])], true).unwrap();
        assert!(
            exact
                .required_roles(|| named(&["GET"]), &path("/admin"))
                .is_empty()
        );
    }
}
