fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc is used for our own protos only: raft's build step wants a protoc 3.x and
    // breaks if a global PROTOC points at this one, so it is set here and nowhere else.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(&["proto/shoal.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    Ok(())
}
