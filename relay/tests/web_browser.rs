//! The demo web app (`weft-relay serve --web`) in a real browser: Debian's `chromium` driven by
//! `puppeteer-core` (pinned in `peer/web/package-lock.json`), two pages and a `weft` device on
//! one conversation, offline and back, and a reload offline (`peer/web/browser/demo.test.mjs`).
//!
//! The npm packages of `peer/web` are installed here when missing. Without chromium, node or
//! npm the test fails when `CI` is set and is skipped (with a note on stderr) otherwise.
//! `WEFT_SCREENSHOT=docs/web-demo.png` (relative to `peer/web`: `../../docs/web-demo.png`)
//! refreshes the README's screenshot; by default it goes to `target/web-demo.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peer/web")
}

fn tool_works(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the test cannot run here, if it cannot.
fn missing(chromium: &str) -> Option<String> {
    if !Path::new(chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    ["node", "npm"]
        .into_iter()
        .find(|t| !tool_works(t))
        .map(|t| format!("{t} is not installed"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_demo_chat_in_a_real_browser() {
    let chromium = std::env::var("WEFT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(why) = missing(&chromium) {
        if std::env::var_os("CI").is_some() {
            panic!("the browser test must run in CI: {why}");
        }
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let dir = web_dir();
    if !dir
        .join("node_modules/puppeteer-core/package.json")
        .exists()
    {
        // `install` keeps the lock file's versions (see .ci/run for why not `ci`).
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-save"])
            .current_dir(&dir));
    }
    run(Command::new("node")
        .args(["node_modules/typescript/bin/tsc", "-p", "."])
        .current_dir(&dir));
    let out = run(Command::new("node")
        .args([
            "--test",
            "--test-force-exit",
            "--test-timeout=240000",
            "browser/",
        ])
        .current_dir(&dir)
        .env("WEFT_RELAY_BIN", env!("CARGO_BIN_EXE_weft-relay"))
        .env("WEFT_BIN", common::weft::weft_bin())
        .env("WEFT_CHROMIUM", &chromium));
    let report = String::from_utf8_lossy(&out.stdout);
    // Every test ran and passed (none skipped, none left out).
    assert!(
        report.contains("# fail 0")
            && report.contains("# skipped 0")
            && !report.contains("# pass 0"),
        "{report}"
    );
}
