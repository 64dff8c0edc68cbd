//! `*` and `?` patterns in the last segment of a `LIST`/`NLST` path.
//!
//! The classic command-line clients (tnftp, inetutils `ftp`, ncftp) expand
//! `mget *.txt` by sending `NLST *.txt` and fetching whatever names come
//! back; wu-ftpd, vsftpd and ProFTPD expand the pattern against the
//! directory listing. Only the last segment is a pattern (`logs/*.txt`,
//! not `*/today.txt`), and only `*` (any run of characters) and `?` (one
//! character): bracket classes are left literal, as too many real file
//! names contain `[`. A pattern also matches itself, so a name that really
//! contains `*` or `?` is still found.

use std::path::{Path, PathBuf};

/// Whether a name holds a pattern character.
pub(crate) fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// Splits `dir/pat*` into (`dir`, `pat*`) when the last segment is a
/// pattern; `None` for a plain path.
pub(crate) fn split(path: &Path) -> Option<(PathBuf, String)> {
    let last = path.file_name()?.to_str()?;
    if !is_pattern(last) {
        return None;
    }
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Some((parent, last.to_string()))
}

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one
/// character, everything else literal). Iterative with one backtrack
/// point, so no pattern can make it exponential.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character.
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_question_mark() {
        assert!(matches("*.txt", "a.txt"));
        assert!(matches("*.txt", ".txt"));
        assert!(!matches("*.txt", "a.txt.gz"));
        assert!(matches("m?.txt", "m1.txt"));
        assert!(!matches("m?.txt", "m10.txt"));
        assert!(matches("m*", "m"));
        assert!(matches("*a*b*", "xxaYYbzz"));
        assert!(!matches("*a*b*", "xxbYYazz"));
        assert!(matches("caméra-?.jpg", "caméra-1.jpg"));
        assert!(matches("[1].txt", "[1].txt"));
        assert!(!matches("[1].txt", "1.txt"));
        // A pattern matches a name that literally contains it.
        assert!(matches("a*b", "a*b"));
        // No blow-up on adversarial input.
        assert!(!matches(&"*a".repeat(50), &format!("{}b", "a".repeat(60))));
        assert!(matches(&"*a".repeat(50), &"a".repeat(60)));
    }

    #[test]
    fn only_the_last_segment_is_a_pattern() {
        assert_eq!(
            split(Path::new("/logs/*.txt")),
            Some((PathBuf::from("/logs"), "*.txt".to_string()))
        );
        assert_eq!(split(Path::new("/logs/today.txt")), None);
        assert_eq!(split(Path::new("/*/today.txt")), None);
        assert_eq!(
            split(Path::new("m*")),
            Some((PathBuf::new(), "m*".to_string()))
        );
    }
}
