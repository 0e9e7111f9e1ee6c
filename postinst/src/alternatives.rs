//! `update-alternatives --install`, done declaratively: the commands are
//! read from the maintainer scripts, replayed as dpkg 1.21's
//! `update-alternatives` (`utils/update-alternatives.c`) would replay
//! them in auto mode, and the result is the links to create plus the
//! administrative files (`/var/lib/dpkg/alternatives/NAME`).
//!
//! # Reading scripts
//!
//! [`parse`] finds every `update-alternatives` command in a script with
//! just enough POSIX shell: backslash-newline continuations, `'...'` and
//! `"..."` quoting, backslash escapes, comments, here-documents,
//! redirections (`>/dev/null 2>&1` is dropped), `;`, `&&`, `||`, `|`, `&`,
//! parentheses and reserved words (`if`, `then`, `do`, ...) before the
//! command. The command word is `update-alternatives` or a path ending in
//! `/update-alternatives`, after any `VAR=value` assignments and the
//! wrappers `command`, `exec`, `env`, `nice`, `nohup`. Global options may
//! come anywhere (`--quiet`, `--verbose`, `--debug`, `--force`,
//! `--skip-auto`, and `--log`, `--altdir`, `--admindir`, `--instdir`,
//! `--root` with their argument). Each command becomes an [`Item`]:
//!
//! - [`Item::Install`] for `--install LINK NAME PATH PRIORITY [--slave
//!   LINK NAME PATH]...`, checked as `update-alternatives` checks its
//!   arguments (absolute links and paths, names without `/` or blanks,
//!   an `int` priority, no duplicate slave names or links, ...).
//! - [`Item::Other`] for the other actions (`--remove`, `--set`,
//!   `--auto`, `--config`, `--query`, ...): not replayed, but `--set`
//!   and `--config` change a selection the image will not have.
//! - [`Item::Unparsed`] for what cannot be read without running the
//!   script: an argument with `$`, a backquote or a glob; arguments
//!   `update-alternatives` would reject; the command word in an odd place
//!   (`in_chroot update-alternatives --install ...`).
//!
//! # Replaying
//!
//! [`resolve`] replays the installs in the order given, as successive
//! `update-alternatives --install` runs on a system where every file the
//! image has exists, and returns one [`Choice`] per link group:
//!
//! - An install whose PATH does not exist fails (`alternative path ...
//!   doesn't exist`), as does one that mixes up link groups (a NAME that
//!   is another group's slave, a LINK another group manages, ...); both
//!   are reported as [`Problem`]s and change nothing.
//! - The group's master link and each slave's link are those of the last
//!   install that names them; an install of an already registered PATH
//!   replaces that choice (priority and slaves).
//! - Auto mode: the best choice is the current one unless another has a
//!   strictly higher priority (the first of them in the group's list,
//!   which is sorted by path, the newly added choice last). So ties keep
//!   the choice installed first, exactly as with `update-alternatives`,
//!   and the result depends on the order of the installs only for ties.
//! - Slaves: a slave of the best choice whose path does not exist is not
//!   linked (`skip creation of ... because associated file ... doesn't
//!   exist`); slaves the best choice does not have are not linked either.
//! - The administrative file ([`state_file`]) lists the slaves sorted by
//!   name (dropping those no choice provides) and the choices sorted by
//!   path, byte for byte as `update-alternatives` writes it.
//!
//! # Links
//!
//! `update-alternatives` makes `LINK -> /etc/alternatives/NAME ->
//! PATH`. Each [`Link`] carries the three, so the builder can make that
//! chain or link `LINK -> PATH` directly (so that `/usr` alone decides,
//! whatever an old `/etc` holds). `update-alternatives --query NAME`
//! shows the current value by reading `/etc/alternatives/NAME`: without
//! that link it prints `Value: none`, and `--display` "link currently
//! absent"; everything else (`--list`, `Best:`, the choices) works from
//! the administrative file alone.
//!
//! # Known differences
//!
//! - Manual mode (`--set`, `--config`) is not replayed; every group is in
//!   auto mode.
//! - Existing files are not consulted: where the image already has a
//!   non-symlink at LINK, `update-alternatives` leaves it alone ("not
//!   replacing ... with a link"); that decision is the caller's.
//! - Commands are taken from the script text, in text order, whatever
//!   branch they are in (`configure` or `abort-upgrade`), and once even
//!   when a shell function that holds them is called twice.

use std::collections::BTreeMap;

/// Scripts longer than this are read only this far (the largest Debian
/// maintainer scripts are tens of KiB).
pub const MAX_SCRIPT: usize = 1 << 20;

/// Where `update-alternatives` keeps the current selections.
pub const ALT_DIR: &str = "/etc/alternatives";

/// A slave of an install: `--slave LINK NAME PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slave {
    pub link: String,
    pub name: String,
    pub path: String,
}

/// One `update-alternatives --install LINK NAME PATH PRIORITY
/// [--slave LINK NAME PATH]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i32,
    pub slaves: Vec<Slave>,
}

/// An `update-alternatives` command found in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An `--install`.
    Install(Install),
    /// Another action (`remove`, `set`, `auto`, `config`, `query`,
    /// `display`, `list`, `remove-all`, `all`, `get-selections`,
    /// `set-selections`), which is not replayed.
    Other {
        action: String,
        line: usize,
        text: String,
    },
    /// A command that cannot be read without running the script, or that
    /// `update-alternatives` would reject.
    Unparsed {
        line: usize,
        text: String,
        reason: String,
    },
}

/// The [`Install`]s among `items`, in order.
pub fn installs(items: &[Item]) -> Vec<Install> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Install(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------
// Shell words
// ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    /// The word with quotes and escapes removed (expansions kept as
    /// written).
    text: String,
    /// Needs the shell: `$`, a backquote or a glob outside single quotes.
    expands: bool,
    /// Some part was quoted (so it is not a reserved word).
    quoted: bool,
    /// A redirection operator (`>`, `2>&1`, `<<`, ...).
    redirect: bool,
}

#[derive(Debug, Clone)]
struct SimpleCommand {
    words: Vec<Word>,
    line: usize,
    start: usize,
    end: usize,
}

const RESERVED: [&str; 16] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "case", "esac", "for", "!",
    "{", "}", "time",
];

/// Splits `script` into simple commands.
fn simple_commands(script: &str) -> Vec<SimpleCommand> {
    let mut end = script.len().min(MAX_SCRIPT);
    while !script.is_char_boundary(end) {
        end -= 1;
    }
    let src: Vec<char> = script[..end].chars().collect();
    // Byte offset of each char, for the commands' source text.
    let mut offsets = Vec::with_capacity(src.len() + 1);
    let mut o = 0;
    for c in &src {
        offsets.push(o);
        o += c.len_utf8();
    }
    offsets.push(o);

    let mut lx = Lexer {
        src: &src,
        i: 0,
        line: 1,
        out: Vec::new(),
        words: Vec::new(),
        cmd_line: 1,
        cmd_start: 0,
        cmd_end: 0,
        heredocs: Vec::new(),
    };
    lx.run();
    lx.out
        .into_iter()
        .map(|mut c| {
            c.start = offsets[c.start];
            c.end = offsets[c.end];
            c
        })
        .collect()
}

struct Lexer<'a> {
    src: &'a [char],
    i: usize,
    line: usize,
    out: Vec<SimpleCommand>,
    words: Vec<Word>,
    cmd_line: usize,
    cmd_start: usize,
    cmd_end: usize,
    /// Pending here-documents: (delimiter, strip leading tabs).
    heredocs: Vec<(String, bool)>,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.src.get(self.i + k).copied()
    }

    fn finish_command(&mut self) {
        if !self.words.is_empty() {
            self.out.push(SimpleCommand {
                words: std::mem::take(&mut self.words),
                line: self.cmd_line,
                start: self.cmd_start,
                end: self.cmd_end,
            });
        }
    }

    fn push_word(&mut self, w: Word, start: usize) {
        if self.words.is_empty() {
            self.cmd_line = self.line_at(start);
            self.cmd_start = start;
        }
        self.cmd_end = self.i;
        self.words.push(w);
    }

    fn line_at(&self, pos: usize) -> usize {
        // Lines are counted as we go; `self.line` is the line at `self.i`.
        self.line - self.src[pos..self.i].iter().filter(|&&c| c == '\n').count()
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                '\\' if self.peek(1) == Some('\n') => {
                    self.i += 2;
                    self.line += 1;
                }
                ' ' | '\t' | '\r' => self.i += 1,
                '\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.finish_command();
                    self.read_heredocs();
                }
                '#' => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                }
                ';' | '&' | '|' | '(' | ')' => {
                    self.i += 1;
                    if matches!(c, ';' | '&' | '|') && self.peek(0) == Some(c) {
                        self.i += 1;
                    }
                    self.finish_command();
                }
                _ => self.word(),
            }
        }
        self.finish_command();
    }

    /// Consumes the bodies of pending here-documents (at a line start).
    fn read_heredocs(&mut self) {
        for (delim, strip_tabs) in std::mem::take(&mut self.heredocs) {
            while self.i < self.src.len() {
                let start = self.i;
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.i += 1;
                }
                let mut line: String = self.src[start..self.i].iter().collect();
                if self.peek(0) == Some('\n') {
                    self.i += 1;
                    self.line += 1;
                }
                if strip_tabs {
                    line = line.trim_start_matches('\t').to_string();
                }
                if line == delim {
                    break;
                }
            }
        }
    }

    /// Reads one word (or a redirection operator and its target).
    fn word(&mut self) {
        let start = self.i;
        let mut w = Word {
            text: String::new(),
            expands: false,
            quoted: false,
            redirect: false,
        };
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '(' | ')' => break,
                '<' | '>' => {
                    if w.quoted || !w.text.bytes().all(|b| b.is_ascii_digit()) {
                        // `a>b`: the word ends, the redirection follows.
                        break;
                    }
                    self.redirection(start);
                    return;
                }
                '\\' => {
                    match self.peek(1) {
                        Some('\n') => self.line += 1,
                        Some(n) => {
                            w.text.push(n);
                            w.quoted = true;
                        }
                        None => {}
                    }
                    self.i += 2;
                }
                '\'' => {
                    w.quoted = true;
                    self.i += 1;
                    while let Some(c) = self.peek(0) {
                        self.i += 1;
                        if c == '\'' {
                            break;
                        }
                        if c == '\n' {
                            self.line += 1;
                        }
                        w.text.push(c);
                    }
                }
                '"' => {
                    w.quoted = true;
                    self.i += 1;
                    while let Some(c) = self.peek(0) {
                        match c {
                            '"' => {
                                self.i += 1;
                                break;
                            }
                            '\\' => match self.peek(1) {
                                Some('\n') => {
                                    self.i += 2;
                                    self.line += 1;
                                }
                                Some(n @ ('$' | '`' | '"' | '\\')) => {
                                    w.text.push(n);
                                    self.i += 2;
                                }
                                _ => {
                                    w.text.push('\\');
                                    self.i += 1;
                                }
                            },
                            '$' | '`' => {
                                w.expands = true;
                                self.expansion(&mut w.text);
                            }
                            _ => {
                                if c == '\n' {
                                    self.line += 1;
                                }
                                w.text.push(c);
                                self.i += 1;
                            }
                        }
                    }
                }
                '$' | '`' => {
                    w.expands = true;
                    self.expansion(&mut w.text);
                }
                '*' | '?' | '[' => {
                    w.expands = true;
                    w.text.push(c);
                    self.i += 1;
                }
                _ => {
                    w.text.push(c);
                    self.i += 1;
                }
            }
        }
        self.i = self.i.min(self.src.len());
        self.push_word(w, start);
    }

    /// A redirection at `self.i` (`<`, `>>`, `2>&1`, `<<-EOF`, ...): it
    /// becomes a `redirect` word and its target is skipped.
    fn redirection(&mut self, start: usize) {
        let first = self.peek(0);
        self.i += 1;
        let mut heredoc = None;
        let mut dup = false;
        match (first, self.peek(0)) {
            (Some('<'), Some('<')) => {
                self.i += 1;
                let strip = self.peek(0) == Some('-');
                if strip {
                    self.i += 1;
                }
                heredoc = Some(strip);
            }
            (Some('>'), Some('>' | '|')) | (Some('<'), Some('>')) => self.i += 1,
            (_, Some('&')) => {
                self.i += 1;
                dup = true;
            }
            _ => {}
        }
        self.i = self.i.min(self.src.len());
        self.push_word(
            Word {
                text: self.src[start..self.i].iter().collect(),
                expands: false,
                quoted: false,
                redirect: true,
            },
            start,
        );
        // The target word.
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.i += 1;
        }
        if dup && self.peek(0) == Some('-') {
            self.i += 1;
            return;
        }
        if self
            .peek(0)
            .is_none_or(|c| matches!(c, '\n' | ';' | '&' | '|' | '(' | ')'))
        {
            return;
        }
        let before = self.words.len();
        self.word();
        if let Some(target) = self.words.get_mut(before) {
            target.redirect = true;
            if let Some(strip) = heredoc {
                self.heredocs.push((target.text.clone(), strip));
            }
        }
    }

    /// Consumes a `$...` or backquote expansion, appending it as written.
    fn expansion(&mut self, text: &mut String) {
        let c = self.peek(0);
        let start = self.i;
        self.i += 1;
        match (c, self.peek(0)) {
            (Some('`'), _) => {
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    match c {
                        '\\' => self.i += 1,
                        '`' => break,
                        '\n' => self.line += 1,
                        _ => {}
                    }
                }
            }
            (Some('$'), Some(open @ ('(' | '{'))) => {
                let close = if open == '(' { ')' } else { '}' };
                let mut depth = 0usize;
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    match c {
                        '\\' => self.i += 1,
                        '\'' if open == '(' => {
                            while self.peek(0).is_some_and(|c| c != '\'') {
                                if self.peek(0) == Some('\n') {
                                    self.line += 1;
                                }
                                self.i += 1;
                            }
                            self.i += 1;
                        }
                        '\n' => self.line += 1,
                        c if c == open => depth += 1,
                        c if c == close => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            (Some('$'), Some(n)) if n.is_ascii_alphabetic() || n == '_' => {
                while self
                    .peek(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.i += 1;
                }
            }
            (Some('$'), Some(n)) if n.is_ascii_digit() || "@*#?$!-".contains(n) => self.i += 1,
            _ => {}
        }
        self.i = self.i.min(self.src.len());
        text.extend(&self.src[start..self.i]);
    }
}

// ---------------------------------------------------------------------
// update-alternatives arguments
// ---------------------------------------------------------------------

fn is_program(w: &Word) -> bool {
    w.text == "update-alternatives" || w.text.ends_with("/update-alternatives")
}

/// Finds the program word: after reserved words, assignments and
/// wrappers. `Err(())` when the word is elsewhere in the command.
fn program_index(words: &[&Word]) -> Option<Result<usize, ()>> {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        let t = w.text.as_str();
        let reserved = !w.quoted && RESERVED.contains(&t);
        let assignment = !w.quoted
            && t.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !n.as_bytes()[0].is_ascii_digit()
            });
        let wrapper = ["command", "exec", "env", "nice", "nohup"].contains(&t);
        if reserved || assignment || wrapper {
            i += 1;
            continue;
        }
        break;
    }
    if words.get(i).is_some_and(|w| is_program(w)) {
        return Some(Ok(i));
    }
    // Elsewhere: only worth a report if it looks like an invocation.
    let at = words.iter().position(|w| is_program(w))?;
    words[at + 1..]
        .iter()
        .any(|w| w.text.starts_with("--"))
        .then_some(Err(()))
}

/// C `strtol` in base 10 with the whole string consumed, into an `int`.
fn priority(s: &str) -> Result<i32, String> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("priority must be an integer: {s:?}"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse::<i32>()
        .map_err(|_| format!("priority is out of range: {s:?}"))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.contains(['/', ' ', '\t']) {
        return Err(format!(
            "alternative name ({name}) must not contain '/' and spaces"
        ));
    }
    Ok(())
}

fn check_link(link: &str) -> Result<(), String> {
    if !link.starts_with('/') {
        return Err(format!(
            "alternative link is not absolute as it should be: {link}"
        ));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "alternative path is not absolute as it should be: {path}"
        ));
    }
    Ok(())
}

/// What one command line asks for.
enum Parsed {
    Install(Install),
    Other(String),
}

/// `update-alternatives`' option parsing, for the arguments after the
/// program word.
fn parse_args(args: &[&str]) -> Result<Parsed, String> {
    let mut action: Option<String> = None;
    let mut install: Option<Install> = None;
    let mut set_action = |a: &str| match &action {
        Some(old) => Err(format!("two commands specified: --{a} and --{old}")),
        None => {
            action = Some(a.to_string());
            Ok(())
        }
    };
    let mut i = 0;
    let need = |i: usize, n: usize, what: &str| {
        if i + n >= args.len() {
            Err(format!("--{what} needs {n} arguments"))
        } else {
            Ok(())
        }
    };
    while i < args.len() {
        let a = args[i];
        if !a.starts_with("--") {
            return Err(format!("unknown argument '{a}'"));
        }
        let opt = &a[2..];
        match opt {
            "quiet" | "verbose" | "debug" | "force" | "skip-auto" => {}
            "log" | "altdir" | "admindir" | "instdir" | "root" => {
                need(i, 1, opt)?;
                i += 1;
            }
            "help" | "version" => set_action(opt)?,
            "install" => {
                set_action(opt)?;
                need(i, 4, opt)?;
                let (link, name, path) = (args[i + 1], args[i + 2], args[i + 3]);
                if link == path {
                    return Err("<link> and <path> can't be the same".into());
                }
                let priority = priority(args[i + 4])?;
                check_name(name)?;
                check_link(link)?;
                check_path(path)?;
                install = Some(Install {
                    link: link.into(),
                    name: name.into(),
                    path: path.into(),
                    priority,
                    slaves: Vec::new(),
                });
                i += 4;
            }
            "slave" => {
                let Some(inst) = install.as_mut() else {
                    return Err("--slave only allowed with --install".into());
                };
                need(i, 3, opt)?;
                let (link, name, path) = (args[i + 1], args[i + 2], args[i + 3]);
                if link == path {
                    return Err("<link> and <path> can't be the same".into());
                }
                if name == inst.name {
                    return Err(format!("name {name} is both primary and slave"));
                }
                if link == inst.link {
                    return Err(format!("link {link} is both primary and slave"));
                }
                if inst.slaves.iter().any(|s| s.name == name) {
                    return Err(format!("duplicate slave name {name}"));
                }
                if inst.slaves.iter().any(|s| s.link == link) {
                    return Err(format!("duplicate slave link {link}"));
                }
                check_name(name)?;
                check_link(link)?;
                check_path(path)?;
                inst.slaves.push(Slave {
                    link: link.into(),
                    name: name.into(),
                    path: path.into(),
                });
                i += 3;
            }
            "remove" | "set" => {
                set_action(opt)?;
                need(i, 2, opt)?;
                i += 2;
            }
            "display" | "query" | "auto" | "config" | "list" | "remove-all" => {
                set_action(opt)?;
                need(i, 1, opt)?;
                i += 1;
            }
            "all" | "get-selections" | "set-selections" => set_action(opt)?,
            _ => return Err(format!("unknown option '{a}'")),
        }
        i += 1;
    }
    match (install, action) {
        (Some(inst), _) => Ok(Parsed::Install(inst)),
        (None, Some(a)) => Ok(Parsed::Other(a)),
        (None, None) => Err("no action given".into()),
    }
}

/// Every `update-alternatives` command in a maintainer script, in order.
pub fn parse(script: &str) -> Vec<Item> {
    let mut out = Vec::new();
    for cmd in simple_commands(script) {
        let words: Vec<&Word> = cmd.words.iter().filter(|w| !w.redirect).collect();
        let Some(found) = program_index(&words) else {
            continue;
        };
        let text = script[cmd.start..cmd.end].to_string();
        let line = cmd.line;
        let at = match found {
            Ok(at) => at,
            Err(()) => {
                out.push(Item::Unparsed {
                    line,
                    text,
                    reason: "update-alternatives is not the command run here".into(),
                });
                continue;
            }
        };
        let args = &words[at + 1..];
        let plain: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
        let expands = args.iter().any(|w| w.expands);
        match parse_args(&plain) {
            Ok(Parsed::Install(_)) | Err(_) if expands => out.push(Item::Unparsed {
                line,
                text,
                reason:
                    "its arguments need the shell (a variable, a command substitution or a glob)"
                        .into(),
            }),
            Ok(Parsed::Install(i)) => out.push(Item::Install(i)),
            Ok(Parsed::Other(action)) => out.push(Item::Other { action, line, text }),
            Err(reason) => out.push(Item::Unparsed { line, text, reason }),
        }
    }
    out
}

// ---------------------------------------------------------------------
// Replaying
// ---------------------------------------------------------------------

/// One choice of a link group, as in the administrative file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: String,
    pub priority: i32,
    /// `(slave name, slave path)`, in the install's order.
    pub slaves: Vec<(String, String)>,
}

impl Candidate {
    fn slave(&self, name: &str) -> Option<&str> {
        self.slaves
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
            .filter(|p| !p.is_empty())
    }
}

/// A link group after all installs: what its administrative file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// The master link.
    pub link: String,
    /// `(slave name, slave link)`, sorted by name.
    pub slaves: Vec<(String, String)>,
    /// The choices, sorted by path.
    pub choices: Vec<Candidate>,
}

/// A link to create: `link -> alt_link -> path` the way
/// `update-alternatives` does it, or `link -> path` directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The master or slave name (`awk`, `awk.1.gz`).
    pub name: String,
    /// Where the link goes (`/usr/bin/awk`).
    pub link: String,
    /// `/etc/alternatives/<name>`.
    pub alt_link: String,
    /// The chosen file (`/usr/bin/mawk`).
    pub path: String,
}

/// The auto-mode selection of one link group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The master link.
    pub master: Link,
    /// The chosen choice's priority.
    pub priority: i32,
    /// The slave links to create, sorted by slave name.
    pub slaves: Vec<Link>,
    /// Slaves of the chosen choice whose path does not exist, so not
    /// linked (`update-alternatives` warns about each).
    pub skipped_slaves: Vec<Link>,
    /// The whole group, for [`state_file`].
    pub group: Group,
}

impl Choice {
    /// The link group's name.
    pub fn name(&self) -> &str {
        &self.group.name
    }
}

/// An install that `update-alternatives` would have refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub install: Install,
    pub reason: String,
}

/// The outcome of replaying installs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// One per link group, sorted by name.
    pub choices: Vec<Choice>,
    /// Installs that failed, in order.
    pub problems: Vec<Problem>,
}

/// A link group while replaying.
#[derive(Debug, Clone)]
struct State {
    link: String,
    /// In the order `update-alternatives` holds them after loading
    /// (sorted) and adding (at the end).
    slaves: Vec<(String, String)>,
    choices: Vec<Candidate>,
    current: Option<String>,
}

impl State {
    /// What `alternative_save` does before writing: drop slaves no choice
    /// provides, sort slaves by name and choices by path. The next run
    /// loads them in this order.
    fn save(&mut self) {
        let choices = &self.choices;
        self.slaves
            .retain(|(name, _)| choices.iter().any(|c| c.slave(name).is_some()));
        self.slaves.sort_by(|a, b| a.0.cmp(&b.0));
        self.choices.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// Checks an install against the other link groups, as
/// `alternative_check_install_args` does.
fn check_groups(groups: &BTreeMap<String, State>, inst: &Install) -> Result<(), String> {
    // The first group (in name order) where `name` is the master or a
    // slave name; the first where `link` is the master or a slave link.
    let by_name = |name: &str| {
        groups
            .iter()
            .find(|(g, s)| *g == name || s.slaves.iter().any(|(n, _)| n == name))
            .map(|(g, _)| g.as_str())
    };
    let by_link = |link: &str| {
        groups
            .iter()
            .find(|(_, s)| s.link == link || s.slaves.iter().any(|(_, l)| l == link))
    };
    if let Some(g) = by_name(&inst.name) {
        if g != inst.name {
            return Err(format!(
                "alternative {} can't be master: it is a slave of {g}",
                inst.name
            ));
        }
    }
    if let Some((g, _)) = by_link(&inst.link) {
        if *g != inst.name {
            return Err(format!(
                "alternative link {} is already managed by {g}",
                inst.link
            ));
        }
    }
    Ok(())
}

fn check_slaves(groups: &BTreeMap<String, State>, inst: &Install) -> Result<(), String> {
    for sl in &inst.slaves {
        let found = groups
            .iter()
            .find(|(g, s)| **g == sl.name || s.slaves.iter().any(|(n, _)| *n == sl.name));
        if let Some((g, _)) = found {
            if *g != inst.name {
                return Err(if *g == sl.name {
                    format!(
                        "alternative {} can't be slave of {}: it is a master alternative",
                        sl.name, inst.name
                    )
                } else {
                    format!(
                        "alternative {} can't be slave of {}: it is a slave of {g}",
                        sl.name, inst.name
                    )
                });
            }
        }
        let found = groups
            .iter()
            .find(|(_, s)| s.link == sl.link || s.slaves.iter().any(|(_, l)| *l == sl.link));
        if let Some((g, s)) = found {
            if *g != inst.name {
                return Err(format!(
                    "alternative link {} is already managed by {g}",
                    sl.link
                ));
            }
            if let Some((other, _)) = s
                .slaves
                .iter()
                .find(|(n, l)| *l == sl.link && *n != sl.name)
            {
                return Err(format!(
                    "alternative link {} is already managed by {other} (slave of {g})",
                    sl.link
                ));
            }
        }
    }
    Ok(())
}

/// Replays `installs` in order; `exists` tells whether a path exists in
/// the image (following symlinks, as `stat` does).
pub fn resolve(installs: &[Install], exists: impl Fn(&str) -> bool) -> Resolution {
    let mut groups: BTreeMap<String, State> = BTreeMap::new();
    let mut problems = Vec::new();
    for inst in installs {
        let checked = check_groups(&groups, inst)
            .and_then(|()| {
                if exists(&inst.path) {
                    Ok(())
                } else {
                    Err(format!("alternative path {} doesn't exist", inst.path))
                }
            })
            .and_then(|()| check_slaves(&groups, inst));
        if let Err(reason) = checked {
            problems.push(Problem {
                install: inst.clone(),
                reason,
            });
            continue;
        }
        let state = groups.entry(inst.name.clone()).or_insert_with(|| State {
            link: inst.link.clone(),
            slaves: Vec::new(),
            choices: Vec::new(),
            current: None,
        });
        // alternative_evolve: the latest link names win.
        state.link = inst.link.clone();
        for sl in &inst.slaves {
            match state.slaves.iter_mut().find(|(n, _)| *n == sl.name) {
                Some(s) => s.1 = sl.link.clone(),
                None => state.slaves.push((sl.name.clone(), sl.link.clone())),
            }
        }
        // alternative_add_choice: replace in place, or add at the end.
        let cand = Candidate {
            path: inst.path.clone(),
            priority: inst.priority,
            slaves: inst
                .slaves
                .iter()
                .map(|s| (s.name.clone(), s.path.clone()))
                .collect(),
        };
        match state.choices.iter_mut().find(|c| c.path == cand.path) {
            Some(c) => *c = cand,
            None => state.choices.push(cand),
        }
        // alternative_get_best: the current choice, unless another has a
        // strictly higher priority.
        let mut best = state
            .current
            .as_ref()
            .and_then(|cur| state.choices.iter().position(|c| c.path == *cur))
            .unwrap_or(0);
        for (i, c) in state.choices.iter().enumerate() {
            if c.priority > state.choices[best].priority {
                best = i;
            }
        }
        state.current = Some(state.choices[best].path.clone());
        state.save();
    }

    let choices = groups
        .into_iter()
        .filter_map(|(name, state)| {
            let current = state.current?;
            let chosen = state.choices.iter().find(|c| c.path == current)?.clone();
            let link = |name: &str, link: &str, path: &str| Link {
                name: name.to_string(),
                link: link.to_string(),
                alt_link: format!("{ALT_DIR}/{name}"),
                path: path.to_string(),
            };
            let mut slaves = Vec::new();
            let mut skipped_slaves = Vec::new();
            for (sname, slink) in &state.slaves {
                if let Some(spath) = chosen.slave(sname) {
                    let l = link(sname, slink, spath);
                    if exists(spath) {
                        slaves.push(l);
                    } else {
                        skipped_slaves.push(l);
                    }
                }
            }
            Some(Choice {
                master: link(&name, &state.link, &chosen.path),
                priority: chosen.priority,
                slaves,
                skipped_slaves,
                group: Group {
                    name,
                    link: state.link,
                    slaves: state.slaves,
                    choices: state.choices,
                },
            })
        })
        .collect();
    Resolution { choices, problems }
}

/// The auto-mode selections of [`resolve`], one per link group.
pub fn select(installs: &[Install], exists: impl Fn(&str) -> bool) -> Vec<Choice> {
    resolve(installs, exists).choices
}

/// The administrative file `update-alternatives` keeps for the choice's
/// group (`/var/lib/dpkg/alternatives/<name>`), in auto mode.
pub fn state_file(choice: &Choice) -> String {
    let g = &choice.group;
    let mut s = String::new();
    let mut line = |t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    line("auto");
    line(&g.link);
    for (name, link) in &g.slaves {
        line(name);
        line(link);
    }
    line("");
    for c in &g.choices {
        line(&c.path);
        line(&c.priority.to_string());
        for (name, _) in &g.slaves {
            line(c.slave(name).unwrap_or(""));
        }
    }
    line("");
    s
}
