//! Generates the protobuf types of the published contract in `proto/` with prost,
//! parsing the schema with protox so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "proto/tickwire/v1/tickwire.proto";
    println!("cargo:rerun-if-changed={schema}");
    // The store embeds its migrations (sqlx::migrate!): a new one must rebuild it.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile([schema], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
