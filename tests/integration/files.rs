//! Files in and out of a session's workspace (SPEC section 10) through the console:
//! `put` into the inbox, `get` of a file and of a folder, and what is refused.

use crate::support::{Env, lines_of, session_ids, stdout, text};

fn only_session(out: &str) -> String {
    let ids = session_ids(out);
    assert_eq!(ids.len(), 1, "expected one session in:\n{out}");
    ids[0].clone()
}

#[test]
fn console_put_and_get_move_files_and_refuse_paths_out_of_the_workspace() {
    let Some(env) = Env::with_sessions("", "max_attachment_size = \"1k\"\n") else {
        return;
    };
    let dir = env.dir.path();
    std::fs::write(dir.join("notes.txt"), "line one\nline two\n").unwrap();
    std::fs::write(dir.join("big.bin"), vec![b'x'; 2000]).unwrap();
    let input = "new --agent scripted say ready\n\
                 put notes.txt\n\
                 put notes.txt\n\
                 put big.bin\n\
                 run cat inbox/notes.txt; ls inbox; mkdir -p out/sub; echo made > out/sub/f.txt; ln -s /etc/passwd inbox/leak\n\
                 get inbox/notes.txt\n\
                 get out\n\
                 get ../../etc/passwd\n\
                 get /etc/hostname\n\
                 get inbox/leak\n\
                 get nothing-here\n\
                 stop\n";
    let out = env.console(input);
    let all = text(&out);
    let id = only_session(&stdout(&out));
    let lines = lines_of(&stdout(&out), &id);
    // In: the file, then the same name numbered, and the agent reads it.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("to /workspace/inbox/notes.txt")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("to /workspace/inbox/notes-1.txt")),
        "{all}"
    );
    assert!(
        lines.iter().any(|l| l == "line two"),
        "the agent did not read it:\n{all}"
    );
    // Over sessions.max_attachment_size: refused with the limit, nothing kept.
    assert!(
        all.contains("big.bin is over 1.0 KB, more than sessions.max_attachment_size"),
        "{all}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("big")), "{all}");
    // Out: the file as it is, the folder as a .tar.gz that holds it.
    // notes.txt is taken in the console's folder: the copy is numbered, never overwrites.
    assert_eq!(
        std::fs::read_to_string(dir.join("1-notes.txt"))
            .ok()
            .as_deref(),
        Some("line one\nline two\n"),
        "{all}"
    );
    let tar = std::process::Command::new("tar")
        .args(["-xzOf", "out.tar.gz", "out/sub/f.txt"])
        .current_dir(dir)
        .output()
        .expect("tar");
    assert_eq!(String::from_utf8_lossy(&tar.stdout), "made\n", "{all}");
    // Refused: outside the workspace, by path, absolute, or through a symlink.
    for (path, leads) in [
        ("../../etc/passwd", "/etc/passwd"),
        ("/etc/hostname", "/etc/hostname"),
        ("inbox/leak", "/etc/passwd"),
    ] {
        assert!(
            all.contains(&format!(
                "{path} is outside /workspace (it leads to {leads})"
            )),
            "{path} not refused:\n{all}"
        );
    }
    assert!(
        all.contains("nothing-here: no such file or folder"),
        "{all}"
    );
    assert!(
        !dir.join("passwd").exists()
            && !dir.join("hostname").exists()
            && !dir.join("leak").exists()
    );
}
