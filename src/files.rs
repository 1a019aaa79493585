//! Files in and out of a session's workspace (SPEC section 10), the pure half: safe
//! names for attachments, the shell scripts that run in the worker (through an exec of
//! the container's own user, which the socket proxy already allows for managed
//! containers: no host path, no archive endpoint), and reading what they print.
//!
//! In: the bytes go to the script's standard input; it claims a free name in
//! `/workspace/inbox` (numbered on a clash, atomically, so a burst of same-named files
//! never overwrites one), copies at most the limit plus one byte, and removes the file
//! again when it is over the limit. Out: the script resolves the path (symlinks
//! included), refuses anything outside `/workspace`, prints one header line (`file
//! SIZE` or `dir SIZE`) and then the file, or a folder as a gzipped tar.

use crate::runtime::WORKSPACE;

/// Where attachments land.
pub const INBOX: &str = "/workspace/inbox";

/// The longest file name kept (characters), extension included.
const NAME_CHARS: usize = 100;

/// A file name that is safe in the inbox: letters, digits, `.`, `-`, `_` and `+`
/// kept, everything else (separators, spaces, control characters) made `_`; no
/// leading dots (no hidden files, no `..`); at most 100 characters with the
/// extension kept; never empty.
pub fn safe_name(name: &str) -> String {
    // Only the last path component counts: "../../x" and "C:\\x\\y" name "x" and "y".
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_start_matches('.').to_string();
    if out.chars().count() > NAME_CHARS {
        let ext: String = match out.rsplit_once('.') {
            Some((_, e)) if !e.is_empty() && e.chars().count() <= 10 => format!(".{e}"),
            _ => String::new(),
        };
        let keep = NAME_CHARS - ext.chars().count();
        let mut cut: String = out.chars().take(keep).collect();
        cut.push_str(&ext);
        out = cut;
    }
    if out.trim_matches(['_', '.']).is_empty() {
        "file".to_string()
    } else {
        out
    }
}

/// The command that stores standard input as `inbox/NAME` (a free variant of it) and
/// prints the name it used; over `max` bytes it removes the file and prints
/// `toolarge SIZE` on a second line.
pub fn put_command(name: &str, max: u64) -> Vec<String> {
    let script = r#"set -eu
mkdir -p "$1"
cd "$1"
n="$2"
base="${n%.*}"; ext=""
if [ "$base" != "$n" ] && [ -n "$base" ]; then ext=".${n##*.}"; else base="$n"; fi
i=1
# noclobber makes the claim atomic: two uploads never get the same name.
while ! (set -C; : > "$n") 2>/dev/null; do
  n="$base-$i$ext"; i=$((i + 1))
  [ "$i" -lt 10000 ] || { echo "no free name for $2" >&2; exit 1; }
done
echo "$n"
head -c "$(($3 + 1))" > "$n"
size=$(wc -c < "$n")
if [ "$size" -gt "$3" ]; then rm -f -- "$n"; echo "toolarge $size"; fi
"#;
    sh(script, &[INBOX, name, &max.to_string()])
}

/// `sh -c SCRIPT sh ARGS...`: the arguments reach the script as `$1`... and are never
/// read as shell text.
fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// What [`put_command`] printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Stored as this name in the inbox.
    Stored(String),
    /// More than the limit came; nothing was kept.
    TooLarge,
}

pub fn parse_put(stdout: &str) -> Option<Put> {
    let mut lines = stdout.lines();
    let name = lines.next()?.trim();
    if name.is_empty() {
        return None;
    }
    match lines.next() {
        Some(l) if l.starts_with("toolarge") => Some(Put::TooLarge),
        _ => Some(Put::Stored(name.to_string())),
    }
}

/// The command that prints a header line for PATH (resolved inside `/workspace`) and
/// then its content: `file SIZE` and the bytes, `dir SIZE` (bytes before packing) and
/// a gzipped tar of the folder, or one line saying why not (`missing`, `outside
/// RESOLVED`, `special`).
pub fn get_command(path: &str) -> Vec<String> {
    let script = r#"p=$(realpath -e -- "$1" 2>/dev/null) || { echo missing; exit 0; }
case "$p" in
  "$2"|"$2"/*) ;;
  *) echo "outside $p"; exit 0 ;;
esac
if [ -d "$p" ]; then
  echo "dir $(du -sb -- "$p" | cut -f1)"
  cd "$(dirname -- "$p")" && exec tar -czf - -- "$(basename -- "$p")"
elif [ -f "$p" ]; then
  echo "file $(wc -c < "$p")"
  exec cat -- "$p"
else
  echo special
fi
"#;
    sh(script, &[path, WORKSPACE])
}

/// The header line [`get_command`] prints before the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    File(u64),
    Dir(u64),
    Missing,
    Outside(String),
    Special,
}

pub fn parse_header(line: &str) -> Option<Header> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    Some(match word {
        "file" => Header::File(rest.trim().parse().ok()?),
        "dir" => Header::Dir(rest.trim().parse().ok()?),
        "missing" => Header::Missing,
        "outside" => Header::Outside(rest.to_string()),
        "special" => Header::Special,
        _ => return None,
    })
}

/// The name a `get` goes out under: the file's own name, a folder's with `.tar.gz`
/// (the workspace itself is `workspace.tar.gz`).
pub fn out_name(path: &str, dir: bool) -> String {
    let trimmed = path.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or_default();
    let base = match last {
        "" | "." | ".." => "workspace".to_string(),
        l => safe_name(l),
    };
    if dir { format!("{base}.tar.gz") } else { base }
}

/// The prompt of a message that came with files: its text, then a line naming where
/// each file is in the workspace.
pub fn attachment_prompt(text: &str, paths: &[String]) -> String {
    let mut out = text.trim_end().to_string();
    if !paths.is_empty() && !out.is_empty() {
        out.push_str("\n\n");
    }
    let lines: Vec<String> = paths
        .iter()
        .map(|p| format!("Attached file: {p}"))
        .collect();
    out.push_str(&lines.join("\n"));
    out
}

/// The largest image handed to the model as image content (the Messages API's limit
/// for one image); a bigger one stays a file the agent can open.
pub const IMAGE_MAX_BYTES: u64 = 5 * 1024 * 1024;

/// The images a prompt names on its `Attached file:` lines (see [`attachment_prompt`]),
/// with their media types: what goes to Claude Code as image content too.
pub fn attached_images(prompt: &str) -> Vec<(String, &'static str)> {
    prompt
        .lines()
        .filter_map(|l| l.strip_prefix("Attached file: "))
        .filter(|p| p.starts_with(INBOX) && !p.contains("/../"))
        .filter_map(|p| {
            let ext = p.rsplit('.').next()?.to_ascii_lowercase();
            let media = match ext.as_str() {
                "png" => "image/png",
                "jpg" | "jpeg" => "image/jpeg",
                "gif" => "image/gif",
                "webp" => "image/webp",
                _ => return None,
            };
            Some((p.to_string(), media))
        })
        .collect()
}

/// Sizes as people read them: `512 B`, `1.5 KB`, `25.0 MB` (decimal units, as the
/// config's sizes are written).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("report.csv"), "report.csv");
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name("my file (1).png"), "my_file__1_.png");
        assert_eq!(safe_name("a\nb\u{0}c"), "a_b_c");
        assert_eq!(safe_name("$(reboot)"), "__reboot_");
        assert_eq!(safe_name("-rf"), "-rf");
        let long = format!("{}.tar.gz", "x".repeat(300));
        let s = safe_name(&long);
        assert_eq!(s.chars().count(), NAME_CHARS);
        assert!(s.ends_with("x.gz"), "{s}");
        assert_eq!(safe_name("Ünïcode.txt"), "Ünïcode.txt");
    }

    #[test]
    fn put_output_is_read() {
        assert_eq!(parse_put("a.txt\n"), Some(Put::Stored("a.txt".into())));
        assert_eq!(parse_put("a-1.txt\ntoolarge 99\n"), Some(Put::TooLarge));
        assert_eq!(parse_put(""), None);
    }

    #[test]
    fn get_headers_are_read() {
        assert_eq!(parse_header("file 12\n"), Some(Header::File(12)));
        assert_eq!(parse_header("dir 4096"), Some(Header::Dir(4096)));
        assert_eq!(parse_header("missing"), Some(Header::Missing));
        assert_eq!(
            parse_header("outside /etc/passwd"),
            Some(Header::Outside("/etc/passwd".into()))
        );
        assert_eq!(parse_header("special"), Some(Header::Special));
        assert_eq!(parse_header("file x"), None);
        assert_eq!(parse_header("hello"), None);
    }

    #[test]
    fn outgoing_names() {
        assert_eq!(out_name("src/main.rs", false), "main.rs");
        assert_eq!(out_name("src/", true), "src.tar.gz");
        assert_eq!(out_name(".", true), "workspace.tar.gz");
        assert_eq!(out_name("/workspace", true), "workspace.tar.gz");
    }

    #[test]
    fn attachments_are_named_in_the_prompt() {
        let p = vec!["/workspace/inbox/a.csv".to_string()];
        assert_eq!(
            attachment_prompt("look at this\n", &p),
            "look at this\n\nAttached file: /workspace/inbox/a.csv"
        );
        assert_eq!(
            attachment_prompt("", &p),
            "Attached file: /workspace/inbox/a.csv"
        );
        assert_eq!(attachment_prompt("hi", &[]), "hi");
    }

    #[test]
    fn images_are_found_on_attachment_lines_only() {
        let p = "look\nAttached file: /workspace/inbox/a.PNG\nAttached file: /workspace/inbox/b.csv\n\
                 Attached file: /etc/x.png\nsee /workspace/inbox/c.png";
        assert_eq!(
            attached_images(p),
            [("/workspace/inbox/a.PNG".to_string(), "image/png")]
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1500), "1.5 KB");
        assert_eq!(human_size(25_000_000), "25.0 MB");
    }
}
