//! Core ML identifier rules: names of functions, values and ops must match
//! `[A-Za-z_][A-Za-z0-9_@]*` and be unique within their scope (docs/coreml-format.md §3.1).

use std::collections::HashSet;

/// Make `name` a valid MIL identifier: characters outside `[A-Za-z0-9_@]` become `_`, and a name
/// that does not start with a letter or `_` gets a `var_` prefix (Core ML rejects names that start
/// with a digit).
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '@' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert_str(0, "var_");
    }
    s
}

/// Is `name` already a valid identifier?
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
}

/// Hands out unique sanitized names within one function.
#[derive(Debug, Default, Clone)]
pub struct NameScope {
    used: HashSet<String>,
}

impl NameScope {
    /// A unique identifier derived from `hint` (`hint`, then `hint_1`, `hint_2`, ...).
    pub fn fresh(&mut self, hint: &str) -> String {
        let base = sanitize(hint);
        if self.used.insert(base.clone()) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.used.contains(n))
            .inspect(|n| {
                self.used.insert(n.clone());
            })
            .expect("infinite range")
    }

    /// Claim an exact name; false when it is taken.
    pub fn claim(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }

    /// Release a name (after a rename).
    pub fn release(&mut self, name: &str) {
        self.used.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_to_core_ml_identifiers() {
        assert_eq!(sanitize("layers.0.attn"), "layers_0_attn");
        assert_eq!(sanitize("0_out"), "var_0_out");
        assert_eq!(sanitize(""), "var_");
        assert_eq!(sanitize("x@1"), "x@1");
        assert_eq!(sanitize("@x"), "var_@x");
        for n in ["layers.0", "0abc", "a-b c", "ünï"] {
            assert!(is_valid(&sanitize(n)), "{n}");
        }
        let mut s = NameScope::default();
        assert_eq!(s.fresh("x"), "x");
        assert_eq!(s.fresh("x"), "x_1");
        assert_eq!(s.fresh("x.0"), "x_0");
    }
}
