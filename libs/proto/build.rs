//! Compiles the `.proto` contract under `/proto` in pure Rust (protox, no system `protoc`),
//! generates the prost messages and tonic clients/servers, and writes the encoded file
//! descriptor set (imports included) that the coordinator serves through tonic-reflection.

// A build script talks to cargo through stdout.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::path::{Path, PathBuf};

/// File name of the encoded descriptor set in `OUT_DIR`; `lib.rs` embeds it.
const DESCRIPTOR_FILE: &str = "daisi_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("../../proto");

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    files.sort();

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_source_info(true).include_imports(true);
    // protox errors render well with Display (file, line, what is wrong); Debug would not.
    compiler
        .open_files(&files)
        .map_err(|e| format!("compiling the .proto files failed: {e}"))?;

    // Reflection needs the imported well-known types too, so the full set is written.
    std::fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )?;

    // prost-build needs the imported well-known types in the set to resolve references; it maps
    // google.protobuf to prost-types instead of generating code for it.
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

/// Every `.proto` file below `dir`, recursively.
fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
