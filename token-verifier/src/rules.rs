//! Which paths are public and which need a role; and which paths are refused outright.

use crate::settings::RouteRule;

/// Public paths and role rules.
pub struct Rules {
    public: Vec<String>,
    // Longest path first, so the most specific rule wins.
    rules: Vec<RouteRule>,
}

/// Whether `prefix` covers `path` on a segment boundary (`/admin` covers `/admin` and `/admin/x`,
/// not `/administrator`).
fn covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len() || prefix.ends_with('/') || path.as_bytes()[prefix.len()] == b'/')
}

/// Whether a path can be matched against prefixes safely: no dot segments, no empty segments, no
/// backslashes and no encoded `.`, `/` or `\`, which an upstream might resolve differently (so
/// `/public/../admin` can never pass as public).
pub fn is_safe_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return false;
    }
    // Encoded dots, slashes, backslashes and NULs, in either case.
    let encoded_separator = |triple: &[u8]| {
        matches!(
            (triple[0], triple[1], triple[2].to_ascii_lowercase()),
            (b'%', b'2', b'e' | b'f') | (b'%', b'5', b'c') | (b'%', b'0', b'0')
        )
    };
    if path.as_bytes().windows(3).any(encoded_separator) {
        return false;
    }
    !path.split('/').any(|segment| segment == "." || segment == "..")
}

impl Rules {
    /// Rules from settings.
    pub fn new(public: Vec<String>, mut rules: Vec<RouteRule>) -> Self {
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.path.len()));
        Self { public, rules }
    }

    /// Whether `path` needs no token.
    pub fn is_public(&self, path: &str) -> bool {
        self.public.iter().any(|prefix| covers(prefix, path))
    }

    /// The roles one of which a request needs, if a rule applies.
    pub fn required_roles(&self, method: &str, path: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .find(|rule| {
                covers(&rule.path, path)
                    && (rule.methods.is_empty()
                        || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            })
            .map(|rule| rule.roles.as_slice())
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

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let rules = Rules::new(vec!["/public".into(), "/assets/".into()], vec![]);
        assert!(rules.is_public("/public"));
        assert!(rules.is_public("/public/x"));
        assert!(!rules.is_public("/publicity"));
        assert!(rules.is_public("/assets/app.js"));
    }

    #[test]
    fn the_most_specific_rule_wins_and_methods_narrow_it() {
        let rules = Rules::new(
            vec![],
            vec![
                rule("/admin", &[], &["admin"]),
                rule("/admin/reports", &["GET"], &["auditor", "admin"]),
            ],
        );
        assert_eq!(
            rules.required_roles("GET", "/admin/reports/1").unwrap(),
            ["auditor", "admin"]
        );
        assert_eq!(
            rules.required_roles("POST", "/admin/reports/1").unwrap(),
            ["admin"]
        );
        assert_eq!(rules.required_roles("GET", "/app"), None);
    }

    #[test]
    fn ambiguous_paths_are_unsafe() {
        for unsafe_path in [
            "/public/../admin",
            "/public/./x",
            "//admin",
            "/a%2F..%2Fadmin",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/a%5Cb",
            "/a%00b",
            "/a\\b",
            "relative",
        ] {
            assert!(!is_safe_path(unsafe_path), "{unsafe_path}");
        }
        for safe in ["/", "/admin/x", "/files/a.b/c..d", "/q%20x"] {
            assert!(is_safe_path(safe), "{safe}");
        }
    }
}
