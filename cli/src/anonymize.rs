//! `hexroad anonymize`: the vision stage's detect-and-blur over files.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hexroad_vision::{Action, Anonymizer};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images, videos, or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder for the anonymized files (same names, sizes and formats).
    #[arg(short, long)]
    output: PathBuf,
    /// Detection threshold for every detector [default: each detector's own]
    #[arg(short, long)]
    threshold: Option<f32>,
    /// Also write every detection as a JSON line here.
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Grow every region by this factor before hiding it [default: each
    /// detector's own; 1.3 for faces, 1.2 for plates]
    #[arg(long)]
    mask_scale: Option<f32>,
    /// How regions are hidden: blur, mosaic or fill [default: each class's action]
    #[arg(long)]
    replace_with: Option<String>,
    /// A TOML settings file (its [vision] section configures the detectors).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    let settings = crate::settings::load(args.config.as_deref(), std::env::vars())?;
    let mut vision = settings.vision;
    if let Some(t) = args.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold must be within 0 and 1, got {t}");
        }
        for d in &mut vision.detectors {
            d.threshold = t;
        }
    }
    if let Some(m) = args.mask_scale {
        if !(1.0..=4.0).contains(&m) {
            bail!("--mask-scale must be within 1 and 4, got {m}");
        }
        vision.mask.mask_scale = m;
        for d in &mut vision.detectors {
            d.mask_scale = None;
        }
    }
    if let Some(how) = &args.replace_with {
        let action = match how.as_str() {
            "blur" => Action::Blur,
            "mosaic" => Action::Mosaic,
            "fill" => Action::Fill,
            other => bail!("--replace-with must be blur, mosaic or fill, not {other:?}"),
        };
        for d in &mut vision.detectors {
            for a in d.classes.values_mut() {
                if *a != Action::Keep {
                    *a = action;
                }
            }
        }
    }
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut anonymizer = Anonymizer::load(&vision.runtime, &vision.detectors, vision.mask)
            .context("loading the detectors")?;
        let mut boxes = match &args.boxes {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        let summary = hexroad_vision::anonymize::run(
            &mut anonymizer,
            &args.inputs,
            &args.output,
            boxes.as_mut().map(|b| b as &mut dyn std::io::Write),
            |path, frames| tracing::info!(file = %path.display(), frames, "anonymized"),
        )?;
        if let Some(mut b) = boxes {
            use std::io::Write;
            b.flush().context("writing --boxes")?;
        }
        let per_detector = summary
            .per_detector
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{} files, {} frames, {} regions found ({}) → {}",
            summary.files,
            summary.frames,
            summary.regions,
            if per_detector.is_empty() {
                "none"
            } else {
                per_detector.as_str()
            },
            args.output.display()
        );
        Ok(())
    })
    .await
    .context("the anonymize task")?
}
