//! Embeds every `.avsc` file under `avro/` and `published.lock` into the crate, so that adding a
//! schema version is adding a file: no code changes.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "avsc") {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=avro");
    println!("cargo:rerun-if-changed=published.lock");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    collect(&root.join("avro"), &mut files);
    files.sort();

    let mut code = String::from(
        "/// Every `.avsc` under `avro/`: (path relative to the crate, contents), sorted by path.\n\
         pub(crate) static EMBEDDED_SCHEMAS: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .expect("schema file under the crate")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        // Paths relative to the crate, resolved when the crate compiles: generated code that
        // named absolute paths would break when a clone at another path shares the target dir.
        code.push_str(&format!(
            "    ({rel:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{rel}\"))),\n"
        ));
    }
    code.push_str("];\n");
    code.push_str(
        "/// The contents of `published.lock`.\npub(crate) static EMBEDDED_LOCK: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/published.lock\"));\n",
    );

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
