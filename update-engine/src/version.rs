//! Version ordering: dotted components compared numerically when both are
//! numbers, else as strings ("1.10" > "1.9", "2.0" > "2.0-rc1" is string
//! order on that component).

use std::cmp::Ordering;

/// Compares two OS versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        assert_eq!(compare("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare("2.0", "2.0"), Ordering::Equal);
        assert_eq!(compare("2.0.1", "2.0"), Ordering::Greater);
        assert_eq!(compare("1.0", "2.0"), Ordering::Less);
        assert_eq!(compare("1.a", "1.b"), Ordering::Less);
    }
}
