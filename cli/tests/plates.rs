//! Licence plates: `hexroad anonymize` on real photographs of vehicles (from
//! fast-alpr's source distribution on PyPI, fetched by `scripts/setup --test`)
//! against the plate boxes the project labelled by hand.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{before_after, detail, hexroad, read_jsonl, root, succeed};

type Labels = Vec<(String, Vec<[u32; 4]>)>;

fn labels() -> Labels {
    let text = std::fs::read_to_string(root().join("cli/tests/support/plate_labels.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["images"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, boxes)| {
            let boxes = boxes
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let v: Vec<u32> = b
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_u64().unwrap() as u32)
                        .collect();
                    [v[0], v[1], v[2], v[3]]
                })
                .collect();
            (name.clone(), boxes)
        })
        .collect()
}

/// The labelled photographs, copied into a fresh input folder.
fn photographs(labels: &Labels, into: &Path) {
    let source = root().join("datasets/plate-photos");
    std::fs::create_dir_all(into).unwrap();
    for (name, _) in labels {
        let from = source.join(name);
        assert!(
            from.exists(),
            "{} is missing: run scripts/setup --test",
            from.display()
        );
        std::fs::copy(&from, into.join(name)).unwrap();
    }
}

/// A labelled photograph after `hexroad anonymize`: each plate's detail
/// before and after, and the share of the image's pixels that changed.
struct Compared {
    name: String,
    plates: Vec<([u32; 4], f64, f64)>,
    changed: f64,
}

fn compare(labels: &Labels, input: &Path, output: &Path) -> Vec<Compared> {
    labels
        .iter()
        .map(|(name, boxes)| {
            let (before, after) = before_after(input, output, name);
            let changed = before
                .pixels()
                .zip(after.pixels())
                .filter(|(a, b)| a != b)
                .count();
            Compared {
                name: name.clone(),
                plates: boxes
                    .iter()
                    .map(|&b| (b, detail(&before, b), detail(&after, b)))
                    .collect(),
                changed: changed as f64 / f64::from(before.width() * before.height()),
            }
        })
        .collect()
}

/// `hexroad anonymize` with these settings instead of the defaults (model
/// paths relative to the repository root, where it runs).
fn anonymize_with(dir: &Path, settings: &str, input: &Path, output: &Path) -> Command {
    let config = dir.join("hexroad.toml");
    std::fs::write(&config, settings).unwrap();
    let mut cmd = hexroad(&["anonymize", "--config"]);
    cmd.arg(&config).arg("-o").arg(output).arg(input);
    cmd
}

#[test]
fn every_labelled_plate_in_real_street_photographs_is_blurred() {
    let labels = labels();
    let plates: usize = labels.iter().map(|(_, b)| b.len()).sum();
    assert!(plates >= 30, "the labels hold {plates} plates");
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    photographs(&labels, &input);

    // The shipped defaults: faces and plates.
    let boxes = dir.path().join("boxes.jsonl");
    let run = succeed(
        hexroad(&["anonymize", "-o"])
            .arg(&output)
            .arg("--boxes")
            .arg(&boxes)
            .arg(&input),
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("12 files") && said.contains(", plates "),
        "{said}"
    );
    let mut readable = Vec::new();
    for image in compare(&labels, &input, &output) {
        let name = &image.name;
        for (b, before, after) in image.plates {
            assert!(
                before > 4.0,
                "{name} {b:?}: the labelled plate has detail ({before:.1})"
            );
            if after > 0.35 * before {
                readable.push(format!("{name} {b:?}: detail {before:.1} -> {after:.1}"));
            }
        }
        // Blurring plates is not blurring the street: most pixels are untouched.
        assert!(
            image.changed < 0.2,
            "{name}: {:.0} % of the pixels changed",
            image.changed * 100.0
        );
    }
    assert!(
        readable.is_empty(),
        "plates left readable:\n{}",
        readable.join("\n")
    );

    // Each plate came from the plate detector.
    let detections = read_jsonl(&boxes);
    let plate_boxes = detections.iter().filter(|d| d["class"] == "plate").count();
    assert!(
        plate_boxes >= plates,
        "{plate_boxes} plate detections for {plates} labelled plates"
    );
    assert!(
        detections
            .iter()
            .all(|d| d["class"] != "plate" || d["detector"] == "plates")
    );
}

#[test]
fn faces_alone_leave_the_plates_readable() {
    // The same check on a configuration without the plate detector must fail
    // for most plates: the test above measures the plate detector, not luck.
    let labels = labels();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    photographs(&labels, &input);
    succeed(&mut anonymize_with(
        dir.path(),
        r#"
[vision]
runtime = "datasets/libonnxruntime.so"
[[vision.detectors]]
name = "faces"
model = "datasets/centerface.onnx"
decoder = "centerface"
threshold = 0.2
[vision.detectors.classes]
face = "blur"
"#,
        &input,
        &output,
    ));
    let all: Vec<_> = compare(&labels, &input, &output)
        .into_iter()
        .flat_map(|image| image.plates)
        .collect();
    let readable = all
        .iter()
        .filter(|(_, before, after)| *after > 0.9 * before)
        .count();
    assert!(
        readable * 10 >= all.len() * 9,
        "only {readable} of {} plates kept their detail without the plate detector",
        all.len()
    );
}

#[test]
fn a_plate_model_that_is_not_yolo_is_refused_with_its_name() {
    // A detector pointed at the wrong model fails loudly, and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    photographs(&vec![("test_image.png".to_owned(), vec![])], &input);
    let output = dir.path().join("out");
    let out = anonymize_with(
        dir.path(),
        r#"
[vision]
runtime = "datasets/libonnxruntime.so"
[[vision.detectors]]
name = "plates"
model = "datasets/centerface.onnx"
decoder = "yolo"
input = { width = 640 }
threshold = 0.05
[vision.detectors.classes]
plate = "blur"
"#,
        &input,
        &output,
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("detector \"plates\"")
            && stderr.contains("centerface.onnx")
            && stderr.contains("Yolo decoder"),
        "{stderr}"
    );
    assert!(!output.join("test_image.png").exists());
}

#[test]
fn the_model_converter_runs_no_code_from_a_checkpoint_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    // A "checkpoint" whose pickle would run a shell command if unpickled
    // normally, and one that is not a checkpoint at all.
    let made = std::process::Command::new(common::python())
        .arg("-c")
        .arg(
            r#"
import os, pickle, sys, zipfile
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[1],))
with zipfile.ZipFile(sys.argv[2], "w") as z:
    z.writestr("best/data.pkl", pickle.dumps({"model": Evil()}))
open(sys.argv[3], "wb").write(b"PK\x03\x04 truncated")
"#,
        )
        .arg(&marker)
        .arg(dir.path().join("evil.pt"))
        .arg(dir.path().join("truncated.pt"))
        .status()
        .unwrap();
    assert!(made.success());
    for (file, message) in [
        ("evil.pt", "no YOLO DetectionModel inside"),
        ("truncated.pt", "not a PyTorch zip checkpoint"),
    ] {
        let out = std::process::Command::new("python3")
            .arg(root().join("scripts/yolov8_to_onnx.py"))
            .arg(dir.path().join(file))
            .arg(dir.path().join("out.onnx"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {stderr}");
        assert!(stderr.contains(message), "{file}: {stderr}");
        assert!(!dir.path().join("out.onnx").exists(), "{file}");
    }
    assert!(!marker.exists(), "the checkpoint's pickle ran a command");
}

fn decode_all(path: &Path) -> Vec<image::RgbImage> {
    use hexroad_vision::video::{Flow, decode};
    let mut frames = Vec::new();
    decode(path, |picture| {
        frames.push(picture.to_rgb()?);
        Ok(Flow::Continue)
    })
    .unwrap();
    frames
}

#[test]
fn plates_in_dashcam_video_are_blurred_in_every_frame() {
    // The dashcam frames as H.264 video, the way footage arrives: compressed,
    // one plate moving across several frames.
    let labels = labels();
    let frames: Vec<(String, Vec<[u32; 4]>)> = labels
        .into_iter()
        .filter(|(name, _)| name.starts_with("alpr-"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let video = input.join("dashcam.mp4");
    let source = root().join("datasets/plate-photos");
    let first = image::open(source.join(&frames[0].0)).unwrap().to_rgb8();
    let mut writer =
        hexroad_vision::video::Mp4Writer::create(&video, first.width(), first.height(), (10, 1))
            .unwrap();
    for (name, _) in &frames {
        writer
            .push(image::open(source.join(name)).unwrap().to_rgb8())
            .unwrap();
    }
    writer.finish().unwrap();

    succeed(hexroad(&["anonymize", "-o"]).arg(&output).arg(&input));
    let before = decode_all(&video);
    let after = decode_all(&output.join("dashcam.mp4"));
    assert_eq!(before.len(), frames.len());
    assert_eq!(after.len(), frames.len(), "every frame comes out");
    let mut readable = Vec::new();
    for (i, (name, boxes)) in frames.iter().enumerate() {
        for &b in boxes {
            let (d0, d1) = (detail(&before[i], b), detail(&after[i], b));
            if d1 > 0.35 * d0 {
                readable.push(format!(
                    "frame {i} ({name}) {b:?}: detail {d0:.1} -> {d1:.1}"
                ));
            }
        }
    }
    assert!(
        readable.is_empty(),
        "plates left readable:\n{}",
        readable.join("\n")
    );
}

#[test]
fn the_converted_plate_model_passes_the_onnx_reference_checker() {
    // The converter writes ONNX's protobuf by hand; the `onnx` package's own
    // checker (with shape inference) is the independent judge of the result.
    let model = root().join("datasets/plates.onnx");
    assert!(model.exists(), "run scripts/setup");
    let out = std::process::Command::new(common::python())
        .arg("-c")
        .arg(
            r#"
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
out = m.graph.output[0]
dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
meta = {p.key: p.value for p in m.metadata_props}
print(out.name, dims, meta["names"], meta["source"])
"#,
        )
        .arg(&model)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.starts_with("output0 [1, 5, 'anchors']"), "{said}");
    assert!(
        said.contains("License_Plate") && said.contains("fastanpr 0.1.13"),
        "{said}"
    );
}
