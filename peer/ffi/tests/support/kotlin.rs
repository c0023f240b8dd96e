//! The Kotlin toolchain that the Kotlin test and the binding benchmark share: finding the
//! compiler, `java`, JNA and kotlinx-coroutines, compiling a program of `peer/ffi/kotlin` with
//! the generated bindings, and the `java` command that runs it against the library.
//!
//! Needs `java`, JNA (Debian's `libjna-java`, or `WEFT_JNA_JAR`) and the Kotlin compiler from
//! `peer/ffi/kotlin`'s lock file (`npm install` there, or `WEFT_KOTLINC`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `peer/ffi/kotlin`: the Kotlin programs and the compiler's lock file.
pub const KOTLIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kotlin");

/// The tools a Kotlin program needs.
pub struct Kotlin {
    kotlinc: PathBuf,
    java: PathBuf,
    /// JNA and kotlinx-coroutines (bundled with the compiler).
    classpath: Vec<PathBuf>,
}

/// A program compiled with the bindings.
pub struct Program {
    /// The jar (with the Kotlin runtime).
    pub jar: PathBuf,
    /// The library the bindings were generated from, which the program loads.
    pub lib: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn join(paths: &[PathBuf]) -> String {
    std::env::join_paths(paths)
        .expect("class path")
        .to_string_lossy()
        .into_owned()
}

impl Kotlin {
    /// The tools, or why one is missing.
    pub fn find() -> Result<Kotlin, String> {
        let java =
            on_path("java").ok_or("no `java` on PATH (apt-get install openjdk-17-jdk-headless)")?;
        let kotlinc = std::env::var_os("WEFT_KOTLINC")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(KOTLIN_DIR).join("node_modules/kotlin-compiler/bin/kotlinc")
            });
        if !kotlinc.is_file() {
            return Err(format!(
                "no Kotlin compiler at {} (cd peer/ffi/kotlin && npm install)",
                kotlinc.display()
            ));
        }
        let jna = std::env::var_os("WEFT_JNA_JAR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/share/java/jna.jar"));
        if !jna.is_file() {
            return Err(format!(
                "no JNA at {} (apt-get install libjna-java)",
                jna.display()
            ));
        }
        // kotlinc/bin/kotlinc -> kotlinc/lib/kotlinx-coroutines-core-jvm.jar
        let lib = kotlinc
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("lib"))
            .ok_or("the Kotlin compiler has no lib directory")?;
        let coroutines = lib.join("kotlinx-coroutines-core-jvm.jar");
        if !coroutines.is_file() {
            return Err(format!("no {} beside the compiler", coroutines.display()));
        }
        Ok(Kotlin {
            kotlinc,
            java,
            classpath: vec![jna, coroutines],
        })
    }

    /// Generates the Kotlin bindings into `work` and compiles them with `program` (a file of
    /// `peer/ffi/kotlin`) into a jar there.
    pub fn compile(&self, program: &str, work: &Path) -> Program {
        let bindings = work.join("bindings");
        let lib = super::generate_bindings("kotlin", &bindings);
        let jar = work.join(Path::new(program).with_extension("jar"));
        let sources = [
            bindings.join("uniffi/weft_ffi/weft_ffi.kt"),
            Path::new(KOTLIN_DIR).join(program),
        ];
        for s in &sources {
            assert!(s.exists(), "{} exists", s.display());
        }
        let compiled = Command::new(&self.kotlinc)
            .args(&sources)
            .arg("-cp")
            .arg(join(&self.classpath))
            .args(["-include-runtime", "-nowarn", "-d"])
            .arg(&jar)
            .output()
            .expect("kotlinc runs");
        assert!(
            compiled.status.success(),
            "kotlinc failed:\n{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        Program { jar, lib }
    }

    /// `java` running `main_class` of `program`, the library found beside the bindings' source.
    pub fn java(&self, program: &Program, main_class: &str) -> tokio::process::Command {
        let mut classpath = vec![program.jar.clone()];
        classpath.extend(self.classpath.iter().cloned());
        let mut cmd = tokio::process::Command::new(&self.java);
        cmd.arg(format!(
            "-Djna.library.path={}",
            program
                .lib
                .parent()
                .expect("the library's directory")
                .display()
        ))
        .arg("-cp")
        .arg(join(&classpath))
        .arg(main_class)
        .kill_on_drop(true);
        cmd
    }
}
