//! `hexroad bench vision`: end-to-end anonymization of a 720p video (decode,
//! detect, blur, encode), beside the ONNX model alone at the same input size
//! and deface on the same file, all measured in this run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hexroad_vision::{Anonymizer, Detector, detect, video::Mp4Writer};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frames in the test video.
    #[arg(long, default_value_t = 60)]
    frames: u64,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Python with deface installed [default: $HEXROAD_PYTHON or .venv/bin/python]
    #[arg(long)]
    python: Option<PathBuf>,
    /// A TOML settings file (its [vision] section picks the detectors).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A street-like moving scene with a photograph of a face pasted in, so the
/// detector has something to find and the blur something to do.
fn scene(i: u64, w: u32, h: u32, face: Option<&image::RgbImage>) -> image::RgbImage {
    let shift = i as f32 * 6.0;
    let mut img = image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 + shift, y as f32);
        let road = if fy > h as f32 * 0.6 { 60.0 } else { 150.0 };
        let v = road + 40.0 * (fx / 41.0).sin() * (fy / 29.0).cos();
        let v = v.clamp(0.0, 255.0) as u8;
        image::Rgb([v, v.saturating_add(10), v.saturating_add(25)])
    });
    if let Some(face) = face {
        let x0 = (i * 7) as u32 % (w - face.width()).max(1);
        image::imageops::overlay(&mut img, face, i64::from(x0), i64::from(h / 5));
    }
    img
}

fn write_video(path: &Path, n: u64, w: u32, h: u32, face: Option<&image::RgbImage>) -> Result<()> {
    let mut writer = Mp4Writer::create(path, w, h, (30, 1))?;
    for i in 0..n {
        writer.push(scene(i, w, h, face))?;
    }
    writer.finish()?;
    Ok(())
}

fn time_deface(python: &Path, input: &Path, out: &Path) -> Result<f64> {
    let t = Instant::now();
    let status = Command::new(python)
        .args(["-m", "deface.deface", "--thresh", "0.2", "-o"])
        .arg(out)
        .arg(input)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running deface with {}", python.display()))?;
    if !status.success() {
        bail!("deface failed on {}", input.display());
    }
    Ok(t.elapsed().as_secs_f64())
}

pub async fn run(args: Args) -> Result<()> {
    if args.frames < 2 {
        bail!("--frames must be at least 2");
    }
    let settings = crate::settings::load(args.config.as_deref(), std::env::vars())?;
    let vision = settings.vision;
    let python = crate::bench::venv_python(args.python);
    let (w, h, n) = (args.width, args.height, args.frames);
    tokio::task::spawn_blocking(move || -> Result<()> {
        let dir = tempfile::tempdir()?;
        // A real face if the test venv has scikit-image's photographs.
        let face_png = dir.path().join("face.png");
        let face = Command::new(&python)
            .args([
                "-c",
                "import sys, imageio.v2 as io, skimage.data as d; io.imwrite(sys.argv[1], d.astronaut()[20:220, 150:310])",
            ])
            .arg(&face_png)
            .status()
            .ok()
            .filter(std::process::ExitStatus::success)
            .and_then(|_| image::open(&face_png).ok())
            .map(|i| i.to_rgb8());
        let (long, short) = (dir.path().join("long.mp4"), dir.path().join("short.mp4"));
        write_video(&long, n, w, h, face.as_ref())?;
        write_video(&short, 1, w, h, face.as_ref())?;

        detect::load_runtime(&vision.runtime)?;
        let mut anonymizer = Anonymizer::load(&vision.runtime, &vision.detectors, vision.mask)?;
        let first = vision.detectors.first().context("no detectors configured")?;
        let mut model = Detector::load(first)?;
        let (iw, ih) = model.input_size(w, h);
        let input = vec![100f32; (3 * iw * ih) as usize];
        model.run_model(input.clone(), iw, ih)?; // warm-up
        let t = Instant::now();
        for _ in 0..n {
            model.run_model(input.clone(), iw, ih)?;
        }
        let model_fps = n as f64 / t.elapsed().as_secs_f64();
        drop(model);

        let out = dir.path().join("hexroad");
        let run = |a: &mut Anonymizer, file: &Path| -> Result<f64> {
            let t = Instant::now();
            hexroad_vision::anonymize::run(a, &[file.to_owned()], &out, None, |_, _| {})?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(&mut anonymizer, &short)?; // warm-up
        let (ours_long, ours_short) = (run(&mut anonymizer, &long)?, run(&mut anonymizer, &short)?);
        let ours_fps = (n - 1) as f64 / (ours_long - ours_short).max(1e-9);

        println!(
            "hexroad bench vision: {n} frames of {w}x{h} H.264 → decode, detect ({}), blur, encode H.264",
            anonymizer.model_versions()
        );
        println!("  model input {iw}x{ih}, {} threads", std::thread::available_parallelism().map_or(1, |p| p.get()));
        println!("  ONNX model alone (hexroad's session):  {model_fps:7.2} frames/s");
        println!(
            "  hexroad anonymize, end to end:         {ours_fps:7.2} frames/s  ({:.2}× the model alone; goal ≥ 0.8)",
            ours_fps / model_fps
        );
        let deface_out = dir.path().join("deface");
        std::fs::create_dir_all(&deface_out)?;
        match (
            time_deface(&python, &long, &deface_out.join("long.mp4")),
            time_deface(&python, &short, &deface_out.join("short.mp4")),
        ) {
            (Ok(long_s), Ok(short_s)) => {
                let deface_fps = (n - 1) as f64 / (long_s - short_s).max(1e-9);
                println!(
                    "  deface 1.5.0 (--thresh 0.2), same file: {deface_fps:7.2} frames/s  (hexroad is {:.2}× deface; goal ≥ 2)",
                    ours_fps / deface_fps
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("  deface: not measured ({e:#}); run scripts/setup --test for the venv");
            }
        }
        println!("  (per-run start-up and model loading are excluded from all three: each rate is from a {n}-frame run minus a 1-frame run)");
        Ok(())
    })
    .await
    .context("the bench task")?
}
