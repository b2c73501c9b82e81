fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc is used for our own protos only: raft's build step wants a protoc 3.x and
    // breaks if a global PROTOC points at this one, so it is set here and nowhere else.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        // A service carries its previous spec only after an update: boxed, so every Service (and
        // the store's object enum) does not grow by a whole spec.
        .boxed(".shoal.v1.Service.previous_spec")
        .compile_protos(&["proto/shoal.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    Ok(())
}
