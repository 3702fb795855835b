//! `allow` patterns: `METHOD /path` where `*` matches any run of
//! characters (the empty run and '/' included). Pure.

#![forbid(unsafe_code)]

/// Whether `pattern` is usable: non-empty, printable ASCII.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || !pattern.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err("expected \"METHOD /path\" patterns of printable text".into());
    }
    Ok(())
}

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Greedy with backtracking to the last '*': linear for one star,
    // O(p·t) at worst.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let table = [
            ("POST /chat/completions", "POST /chat/completions", true),
            ("POST /chat/completions", "POST /chat/completions/x", false),
            ("POST /chat/completions", "GET /chat/completions", false),
            ("GET /models*", "GET /models", true),
            ("GET /models*", "GET /models/gpt-4o", true),
            ("GET /models*", "GET /modelsx", true),
            ("GET /models*", "POST /models", false),
            ("*", "DELETE /anything/at/all", true),
            ("* /v1/*", "PUT /v1/x/y", true),
            ("* /v1/*", "PUT /v2/x", false),
            ("POST /a*b*c", "POST /aXbYc", true),
            ("POST /a*b*c", "POST /aXbY", false),
            ("POST /a*b*c", "POST /abbbc", true),
            ("", "", true),
            ("GET /", "GET /", true),
        ];
        for (p, t, want) in table {
            assert_eq!(matches(p, t), want, "{p} vs {t}");
        }
        assert!(check_pattern("GET /x").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("GET /\n").is_err());
    }
}
