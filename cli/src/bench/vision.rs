//! `hexroad bench vision`: end-to-end anonymization of a 720p video (decode,
//! detect, blur, encode) with every configured detector and with faces alone,
//! beside the ONNX models alone at the same input sizes and deface on the same
//! file, all measured in this run.

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

/// A street-like moving scene with a photograph of a face and one of a car
/// pasted in, so the detectors have something to find and the blur something
/// to do.
fn scene(
    i: u64,
    w: u32,
    h: u32,
    face: Option<&image::RgbImage>,
    car: Option<&image::RgbImage>,
) -> image::RgbImage {
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
    if let Some(car) = car {
        // Drawing away from the camera, as a car ahead does.
        let x0 = w.saturating_sub(car.width() + (i * 3) as u32 % (w / 2).max(1));
        image::imageops::overlay(&mut img, car, i64::from(x0), i64::from(h / 2));
    }
    img
}

fn write_video(
    path: &Path,
    n: u64,
    w: u32,
    h: u32,
    face: Option<&image::RgbImage>,
    car: Option<&image::RgbImage>,
) -> Result<()> {
    let mut writer = Mp4Writer::create(path, w, h, (30, 1))?;
    for i in 0..n {
        writer.push(scene(i, w, h, face, car))?;
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
    let python = super::common::venv_python(args.python);
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
        // A real car with its plate, if the test set-up fetched the photographs.
        let car = image::open("datasets/plate-photos/test_image.png")
            .ok()
            .map(|i| i.to_rgb8());
        let (long, short) = (dir.path().join("long.mp4"), dir.path().join("short.mp4"));
        write_video(&long, n, w, h, face.as_ref(), car.as_ref())?;
        write_video(&short, 1, w, h, face.as_ref(), car.as_ref())?;

        detect::load_runtime(&vision.runtime)?;
        let all = &vision.detectors;
        let faces: Vec<_> = all
            .iter()
            .filter(|d| !d.classes.keys().any(|c| c.contains("plate")))
            .cloned()
            .collect();
        if faces.is_empty() || faces.len() == all.len() {
            bail!("the configured detectors must include a plate detector and another one");
        }

        // Each model alone, on an input of the size it gets from these frames.
        let mut alone = Vec::new();
        for config in all {
            let mut model = Detector::load(config)?;
            let (iw, ih) = model.input_size(w, h);
            let input = vec![0.4f32; (3 * iw * ih) as usize];
            model.run_model(input.clone(), iw, ih)?; // warm-up
            let t = Instant::now();
            for _ in 0..n {
                model.run_model(input.clone(), iw, ih)?;
            }
            let seconds_per_frame = t.elapsed().as_secs_f64() / n as f64;
            alone.push((config.name.clone(), iw, ih, seconds_per_frame));
        }
        let models_fps = |names: &[hexroad_vision::DetectorConfig]| {
            1.0 / alone
                .iter()
                .filter(|a| names.iter().any(|c| c.name == a.0))
                .map(|a| a.3)
                .sum::<f64>()
        };

        let out = dir.path().join("hexroad");
        let end_to_end = |configs: &[hexroad_vision::DetectorConfig]| -> Result<(f64, String, u64)> {
            let mut a = Anonymizer::load(&vision.runtime, configs, vision.mask)?;
            let run = |a: &mut Anonymizer, file: &Path| -> Result<(f64, u64)> {
                let t = Instant::now();
                let summary =
                    hexroad_vision::anonymize::run(a, &[file.to_owned()], &out, None, |_, _| {})?;
                Ok((t.elapsed().as_secs_f64(), summary.regions))
            };
            run(&mut a, &short)?; // warm-up
            let ((long_s, regions), (short_s, _)) = (run(&mut a, &long)?, run(&mut a, &short)?);
            Ok(((n - 1) as f64 / (long_s - short_s).max(1e-9), a.model_versions(), regions))
        };
        let (faces_fps, faces_versions, faces_regions) = end_to_end(&faces)?;
        let (all_fps, all_versions, all_regions) = end_to_end(all)?;

        println!(
            "hexroad bench vision: {n} frames of {w}x{h} H.264 → decode, detect, blur, encode H.264"
        );
        println!(
            "  {} threads; a face photograph{} in every frame",
            std::thread::available_parallelism().map_or(1, |p| p.get()),
            if car.is_some() { " and a parked car with its plate" } else { " (no car: run scripts/setup --test)" }
        );
        for (name, iw, ih, spf) in &alone {
            println!("  model {name:<8} alone, input {iw}x{ih}: {:7.2} frames/s", 1.0 / spf);
        }
        let faces_model = models_fps(&faces);
        let all_model = models_fps(all);
        println!(
            "  faces alone ({faces_versions}), end to end: {faces_fps:7.2} frames/s  ({:.2}× its model alone; goal ≥ 0.8; {faces_regions} regions found)",
            faces_fps / faces_model
        );
        println!(
            "  faces + plates ({all_versions}), end to end: {all_fps:7.2} frames/s  ({:.2}× both models alone; goal ≥ 0.8; {:.2}× faces alone; {all_regions} regions found)",
            all_fps / all_model,
            all_fps / faces_fps
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
                    "  deface 1.5.0 (--thresh 0.2, faces only), same file: {deface_fps:7.2} frames/s  (faces alone is {:.2}× deface, goal ≥ 2; faces + plates is {:.2}× deface)",
                    faces_fps / deface_fps,
                    all_fps / deface_fps
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("  deface: not measured ({e:#}); run scripts/setup --test for the venv");
            }
        }
        println!("  (start-up and model loading are excluded: each end-to-end rate is from a {n}-frame run minus a 1-frame run)");
        Ok(())
    })
    .await
    .context("the bench task")?
}
