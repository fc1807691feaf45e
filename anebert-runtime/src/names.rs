//! How error messages offer a choice of names (a leaf: every layer uses it).

/// `a, b or c`: the names an error message offers.
pub fn one_of(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists() {
        assert_eq!(super::one_of(&["a"]), "a");
        assert_eq!(super::one_of(&["a", "b", "c"]), "a, b or c");
        assert_eq!(super::one_of(&[]), "");
    }
}
