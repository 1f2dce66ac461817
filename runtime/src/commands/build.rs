//! `rivetctl build`: build the images from source (content-addressed) and print their tags.

use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::images;
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::Session;

#[derive(Serialize)]
struct ImageDocument<'a> {
    component: &'static str,
    reference: &'a str,
    content_hash: Option<&'a str>,
    built: bool,
}

pub async fn run(printer: &Printer, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let session = Session::open(printer, global, "build").await?;
    let progress = Progress::new(printer);
    let prepared = images::prepare(&session, &progress).await?;
    progress.finish();
    for image in &session.fleet.images {
        let built = prepared.built.contains(&image.reference);
        if printer.json() {
            printer.json_line(&ImageDocument {
                component: image.component.as_str(),
                reference: &image.reference,
                content_hash: image.build.as_ref().map(|b| b.content_hash.as_str()),
                built,
            })?;
        } else {
            let how = if image.build.is_none() {
                "prebuilt"
            } else if built {
                "built"
            } else {
                "up to date"
            };
            printer.data(&format!("{:<8} {}  ({how})\n", image.component.as_str(), image.reference))?;
        }
    }
    Ok(ExitStatus::Success)
}
