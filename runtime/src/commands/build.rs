//! `rivetctl build`: build the images from source (content-addressed) and print their tags.

use orchestrator::port::{Port, Provide};
use serde::Serialize;
use targets::factory::Visit;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::images;
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::{self, Context};

#[derive(Serialize)]
struct ImageDocument<'a> {
    component: &'static str,
    reference: &'a str,
    content_hash: Option<&'a str>,
    built: bool,
}

pub async fn run(printer: &Printer, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let ctx = session::load(printer, global, "build").await?;
    session::connect(&ctx, None, Build { printer, ctx: &ctx }).await?
}

struct Build<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
}

impl Visit for Build<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        build(self.printer, self.ctx, target).await
    }
}

/// `build` on a connected target: the images, where the nodes run them.
pub async fn build<T: Port>(printer: &Printer, ctx: &Context, target: &T) -> anyhow::Result<ExitStatus> {
    let progress = Progress::new(printer);
    let provided = images::provide(ctx, target, &Provide::OnEachNode, &progress).await?;
    progress.finish();
    for image in &ctx.fleet.images {
        let built = provided.built.contains(&image.reference);
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
