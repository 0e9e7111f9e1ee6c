//! Just enough POSIX shell to find simple commands in maintainer scripts.
//!
//! [`commands`] joins backslash-newline continuations, drops comments,
//! splits on `;`, `&&`, `||`, `|`, `&`, newlines and the shell's reserved
//! words (`if`, `then`, `else`, ...), and splits each command into words
//! with single and double quotes removed. A word that needs the shell to
//! expand it (`$`, a backquote, a glob) is kept as it is and
//! [`Command::literal`] is false, so callers can refuse to guess what it
//! would have been.

/// One simple command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The words, with quotes removed.
    pub words: Vec<String>,
    /// False if any word needs expansion (`$`, backquote, `*`, `?`, `[`).
    pub literal: bool,
    /// 1-based line of the command's first word.
    pub line: usize,
}

impl Command {
    /// The words after the first occurrence of `program` (so that
    /// `in_sysroot adduser ...` and `command -v x && adduser ...` both
    /// find `adduser`'s arguments), if it is there.
    pub fn args_of(&self, program: &str) -> Option<&[String]> {
        let i = self.words.iter().position(|w| w == program)?;
        Some(&self.words[i + 1..])
    }
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac", "!",
    "{", "}", "(", ")",
];

/// At most this many bytes of script are read (the largest Debian
/// maintainer scripts are tens of KiB).
pub const MAX_SCRIPT: usize = 1 << 20;

/// The simple commands of `script`, in order.
pub fn commands(script: &str) -> Vec<Command> {
    let script = &script[..floor_char_boundary(script, MAX_SCRIPT)];
    let mut out = Vec::new();
    let mut words: Vec<(String, bool)> = Vec::new();
    let mut literal = true;
    let mut word = String::new();
    let mut in_word = false;
    let mut line = 1;
    let mut start_line = 1;
    let mut chars = script.chars().peekable();

    // `literal` is the current word's flag; each finished word keeps its own.
    let flush_word = |word: &mut String,
                      in_word: &mut bool,
                      literal: &mut bool,
                      words: &mut Vec<(String, bool)>| {
        if *in_word {
            words.push((std::mem::take(word), *literal));
            *in_word = false;
        }
        *literal = true;
    };
    let flush_cmd = |words: &mut Vec<(String, bool)>, out: &mut Vec<Command>, at| {
        words.retain(|(w, _)| !is_dpkg_root(w));
        // Leading reserved words (`if adduser ...`, `then foo`) are not
        // part of the command.
        while words
            .first()
            .is_some_and(|(w, _)| RESERVED.contains(&w.as_str()))
        {
            words.remove(0);
        }
        if !words.is_empty() {
            out.push(Command {
                literal: words.iter().all(|(_, l)| *l),
                words: words.drain(..).map(|(w, _)| w).collect(),
                line: at,
            });
        }
        words.clear();
    };

    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') => line += 1, // continuation
                Some(n) => {
                    if !in_word {
                        start_line = if words.is_empty() { line } else { start_line };
                    }
                    word.push(n);
                    in_word = true;
                }
                None => {}
            },
            '\'' => {
                if words.is_empty() && !in_word {
                    start_line = line;
                }
                in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    if n == '\n' {
                        line += 1;
                    }
                    word.push(n);
                }
            }
            '"' => {
                if words.is_empty() && !in_word {
                    start_line = line;
                }
                in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('\n') => line += 1,
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => {}
                        },
                        '$' | '`' => {
                            literal = false;
                            word.push(n);
                        }
                        '\n' => {
                            line += 1;
                            word.push(n);
                        }
                        _ => word.push(n),
                    }
                }
            }
            '#' if !in_word => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                flush_word(&mut word, &mut in_word, &mut literal, &mut words);
                flush_cmd(&mut words, &mut out, start_line);
                line += 1;
            }
            '\n' | ';' | '&' | '|' => {
                flush_word(&mut word, &mut in_word, &mut literal, &mut words);
                flush_cmd(&mut words, &mut out, start_line);
                if c == '\n' {
                    line += 1;
                }
            }
            ' ' | '\t' => flush_word(&mut word, &mut in_word, &mut literal, &mut words),
            _ => {
                if words.is_empty() && !in_word {
                    start_line = line;
                }
                if matches!(c, '$' | '`' | '*' | '?' | '[') {
                    literal = false;
                }
                word.push(c);
                in_word = true;
            }
        }
    }
    flush_word(&mut word, &mut in_word, &mut literal, &mut words);
    flush_cmd(&mut words, &mut out, start_line);
    out
}

/// `$DPKG_ROOT`, `${DPKG_ROOT}` or `${DPKG_ROOT:+anything}`: empty when
/// dpkg installs into the running system.
fn is_dpkg_root(w: &str) -> bool {
    w == "$DPKG_ROOT"
        || w == "${DPKG_ROOT}"
        || (w.starts_with("${DPKG_ROOT:+") && w.ends_with('}') && w.matches('}').count() == 1)
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<String>> {
        commands(s).into_iter().map(|c| c.words).collect()
    }

    #[test]
    fn splits_commands_and_quotes() {
        let s = "if [ \"$1\" = configure ]; then\n  adduser --system --home /run/sshd \\\n    --gecos 'SSH daemon' sshd || true\nfi # done\n";
        let c = commands(s);
        assert_eq!(c[0].words, ["[", "$1", "=", "configure", "]"]);
        assert!(!c[0].literal);
        assert_eq!(
            c[1].words,
            [
                "adduser",
                "--system",
                "--home",
                "/run/sshd",
                "--gecos",
                "SSH daemon",
                "sshd"
            ]
        );
        assert!(c[1].literal);
        assert_eq!(c[1].line, 2);
        assert_eq!(c[2].words, ["true"]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn reserved_words_and_prefixes() {
        assert_eq!(
            words("    in_sysroot adduser --system messagebus\nthen echo ok; fi"),
            [
                vec!["in_sysroot", "adduser", "--system", "messagebus"],
                vec!["echo", "ok"]
            ]
        );
        let c = &commands("x && addgroup --system kvm")[1];
        assert_eq!(c.args_of("addgroup").unwrap(), ["--system", "kvm"]);
        assert!(!commands("rm -f /x/*")[0].literal);
        let c = &commands(
            "systemctl ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} enable getty@tty1.service || true",
        )[0];
        assert_eq!(c.words, ["systemctl", "enable", "getty@tty1.service"]);
        assert!(c.literal);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["\\", "'unterminated", "\"also", "a\\\n", "#", "é\"\\é", ""] {
            let _ = commands(s);
        }
    }
}
