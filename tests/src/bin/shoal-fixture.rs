//! `shoal-fixture`: pushes the test images to a registry, or saves them as archives.
//!
//! ```text
//! shoal-fixture push-busybox --registry HOST:PORT --image REPO:TAG
//! shoal-fixture push-demo    --registry HOST:PORT --image REPO:TAG
//! shoal-fixture save-busybox --output FILE --image REPO:TAG     (docker save format)
//! shoal-fixture save-demo    --output FILE --image REPO:TAG
//! shoal-fixture push-shipped-device --registry HOST:PORT --image REPO:TAG --device MAJOR:MINOR
//! shoal-fixture push-app     --registry HOST:PORT --image REPO:TAG --base FILE
//! shoal-fixture push-service --registry HOST:PORT --image REPO:TAG --kind redis|postgres|nginx --base FILE
//! ```
//! Pushes print the manifest digest on stdout. `push-app` pushes the python3 app of the update
//! tests on top of the Debian base layer `FILE` (built beforehand by `app_image::prepare`, outside
//! the registry's namespace, which has no route to the Debian mirror); `push-service` does the same
//! for the service images of the stack tests (`app_image::ServiceImage`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use shoal_tests::{app_image, image_fixture};

const USAGE: &str = "usage: shoal-fixture push-busybox|push-demo --registry HOST:PORT --image REPO:TAG\n       shoal-fixture push-app --registry HOST:PORT --image REPO:TAG --base FILE\n       shoal-fixture push-service --registry HOST:PORT --image REPO:TAG --kind redis|postgres|nginx --base FILE\n       shoal-fixture push-shipped-device --registry HOST:PORT --image REPO:TAG --device MAJOR:MINOR\n       shoal-fixture save-busybox|save-demo --output FILE --image REPO:TAG";

struct Args {
    command: String,
    registry: Option<String>,
    image: Option<String>,
    output: Option<PathBuf>,
    device: Option<(u32, u32)>,
    base: Option<PathBuf>,
    kind: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let command = args.next().context("missing command")?;
    let mut parsed = Args {
        command,
        registry: None,
        image: None,
        output: None,
        device: None,
        base: None,
        kind: None,
    };
    while let Some(flag) = args.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--registry" => parsed.registry = Some(value()?),
            "--image" => parsed.image = Some(value()?),
            "--output" => parsed.output = Some(PathBuf::from(value()?)),
            "--base" => parsed.base = Some(PathBuf::from(value()?)),
            "--kind" => parsed.kind = Some(value()?),
            "--device" => {
                let v = value()?;
                let (major, minor) = v
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .with_context(|| format!("--device {v}: expected MAJOR:MINOR"))?;
                parsed.device = Some((major, minor));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(parsed)
}

async fn run(args: Args) -> Result<()> {
    let image = args.image.as_deref().context("--image is required")?;
    match args.command.as_str() {
        "push-busybox" | "push-demo" => {
            let registry = args.registry.as_deref().context("--registry is required")?;
            let digest = if args.command == "push-busybox" {
                image_fixture::push_busybox(registry, image).await?
            } else {
                image_fixture::push_demo(registry, image).await?
            };
            println!("{digest}");
        }
        "push-shipped-device" => {
            let registry = args.registry.as_deref().context("--registry is required")?;
            let (major, minor) = args.device.context("--device MAJOR:MINOR is required")?;
            let built = image_fixture::shipped_device_image(major, minor)?;
            let digest = image_fixture::push_image(registry, image, &built).await?;
            println!("{digest}");
        }
        "push-app" => {
            let registry = args.registry.as_deref().context("--registry is required")?;
            let base = args.base.as_deref().context("--base FILE is required")?;
            let built = app_image::app_image(base)?;
            let digest = image_fixture::push_image(registry, image, &built).await?;
            println!("{digest}");
        }
        "push-service" => {
            let registry = args.registry.as_deref().context("--registry is required")?;
            let base = args.base.as_deref().context("--base FILE is required")?;
            let name = args.kind.as_deref().context("--kind is required")?;
            let kind = app_image::ServiceImage::from_name(name)
                .with_context(|| format!("--kind {name}: expected redis, postgres or nginx"))?;
            let built = kind.image(base)?;
            let digest = image_fixture::push_image(registry, image, &built).await?;
            println!("{digest}");
        }
        "save-busybox" | "save-demo" => {
            let output = args.output.as_deref().context("--output is required")?;
            let built = if args.command == "save-busybox" {
                image_fixture::busybox_image()?
            } else {
                image_fixture::demo_image()?
            };
            image_fixture::write_docker_save(output, &built, &[image])?;
            println!("{}", built.manifest_digest);
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shoal-fixture: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}
