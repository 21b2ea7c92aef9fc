//! Configured object detectors run with ONNX Runtime: faces and licence plates.
//!
//! A detector is data, not code: a model file, how to decode its outputs, the
//! input size, a threshold, and what to do with each class. A new model that
//! decodes like an existing kind plugs in through the settings file alone.

use std::path::Path;
use std::sync::OnceLock;

use image::RgbImage;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, onnx_shape};

mod settings;

pub use settings::{Action, DecoderKind, DetectorConfig, InputSize, Provider};

/// A frame turned into one detector's input, ready for inference.
#[derive(Debug, Clone)]
pub struct Prepared {
    input: Vec<f32>,
    frame: (u32, u32),
    model: (u32, u32),
    letterbox: Option<crate::tensor::Letterbox>,
}

impl DetectorConfig {
    /// The model input size used for a frame of `width`×`height`.
    pub fn input_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.input {
            InputSize::Full => (width.div_ceil(32) * 32, height.div_ceil(32) * 32),
            InputSize::Fixed { width, height } => (width, height),
            InputSize::Width { width: wanted } => {
                // Upscaling past twice the frame finds nothing more a person
                // could read, at four times the cost.
                let iw = wanted
                    .min(width.saturating_mul(2).div_ceil(32) * 32)
                    .max(32);
                let ih =
                    (f64::from(height) * f64::from(iw) / f64::from(width.max(1))).ceil() as u32;
                (iw, ih.max(32).div_ceil(32) * 32)
            }
        }
    }

    /// Resizes `frame` into this detector's input: the costly half of
    /// pre-processing, kept apart so it can overlap with inference.
    pub fn prepare(&self, frame: &RgbImage) -> Result<Prepared> {
        let (w, h) = frame.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::Frame("the frame is empty".into()));
        }
        let (iw, ih) = self.input_size(w, h);
        let (input, letterbox) = match self.decoder {
            DecoderKind::Centerface => (crate::tensor::resize_to_nchw(frame, iw, ih), None),
            DecoderKind::Yolo => {
                let (input, lb) = crate::tensor::letterbox_to_nchw(frame, iw, ih);
                (input, Some(lb))
            }
        };
        Ok(Prepared {
            input,
            frame: (w, h),
            model: (iw, ih),
            letterbox,
        })
    }
}

/// One region found in a frame, in the frame's pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub detector: String,
    pub class: String,
    pub score: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub action: Action,
}

static RUNTIME: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

/// Loads ONNX Runtime from `library` once per process. Later calls return the
/// first outcome, so a missing library fails every detector the same way.
pub fn load_runtime(library: &Path) -> Result<()> {
    RUNTIME
        .get_or_init(|| {
            let builder = ort::init_from(library).map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {}: {e} (run scripts/setup)",
                    library.display()
                )
            })?;
            builder
                .with_name("hexroad")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("starting ONNX Runtime: {e}"))
        })
        .as_ref()
        .map(|_| ())
        .map_err(|e| Error::Runtime(e.clone()))
}

/// A loaded detector. Not `Sync`: give each inference thread its own.
pub struct Detector {
    config: DetectorConfig,
    session: Session,
    input_name: String,
    output_names: Vec<String>,
    /// `name@sha256-prefix`, recorded with every frame it processed.
    version: String,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("version", &self.version)
            .finish()
    }
}

/// Refuses settings no model could honour, naming the detector.
fn check_settings(config: &DetectorConfig) -> std::result::Result<(), String> {
    if config.classes.is_empty() {
        return Err(format!("detector {:?} maps no classes", config.name));
    }
    if let Some(m) = config.mask_scale
        && !(1.0..=4.0).contains(&m)
    {
        return Err(format!(
            "mask_scale {m} of detector {:?} is not within 1..=4",
            config.name
        ));
    }
    if !(0.0..=1.0).contains(&config.threshold) {
        return Err(format!(
            "threshold {} of detector {:?} is not within 0..=1",
            config.threshold, config.name
        ));
    }
    Ok(())
}

/// An ONNX Runtime session for the model's bytes, on the configured
/// provider, with threads that leave cores to decoding and encoding.
fn session(
    config: &DetectorConfig,
    bytes: &[u8],
    model_err: impl Fn(String) -> Error,
) -> Result<Session> {
    let environment = match RUNTIME.get() {
        Some(Ok(env)) => env,
        Some(Err(e)) => return Err(Error::Runtime(e.clone())),
        None => {
            return Err(Error::Runtime(
                "ONNX Runtime is not loaded: call load_runtime first".into(),
            ));
        }
    };
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let ort_err = |e: ort::Error| model_err(format!("ONNX Runtime refused the model: {e}"));
    let mut builder = Session::builder(environment)
        .map_err(ort_err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| ort_err(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| ort_err(e.into()))?
        // Idle ONNX Runtime threads block instead of spinning, leaving the
        // cores to the decode and encode threads running beside them.
        .with_intra_op_spinning(false)
        .map_err(|e| ort_err(e.into()))?
        // Denormal activations cost far more than they are worth in a detector.
        .with_flush_to_zero()
        .map_err(|e| ort_err(e.into()))?
        // Its warnings about the weights of older exports are not ours to fix.
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(|e| ort_err(e.into()))?;
    match config.provider {
        Provider::Cpu => {}
        Provider::Cuda => {
            #[cfg(feature = "cuda")]
            {
                builder = builder
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| ort_err(e.into()))?;
            }
            #[cfg(not(feature = "cuda"))]
            return Err(model_err(
                "provider \"cuda\" needs hexroad built with --features cuda".into(),
            ));
        }
    }
    builder.commit_from_memory(bytes).map_err(ort_err)
}

impl Detector {
    /// Loads the model. The runtime must have been loaded ([`load_runtime`]).
    pub fn load(config: &DetectorConfig) -> Result<Self> {
        let model_err = |m: String| Error::Model(format!("{}: {m}", config.model.display()));
        let bytes = std::fs::read(&config.model).map_err(|e| {
            model_err(format!(
                "cannot read the model of detector {:?}: {e}",
                config.name
            ))
        })?;
        check_settings(config).map_err(model_err)?;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let bytes = match config.input {
            InputSize::Full | InputSize::Width { .. } => {
                onnx_shape::with_dynamic_image_size(&bytes).map_err(|e| model_err(e.to_string()))?
            }
            InputSize::Fixed { .. } => bytes,
        };
        let session = session(config, &bytes, model_err)?;
        let input_name = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| model_err("the model has no input".into()))?;
        let output_names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let wanted = match config.decoder {
            DecoderKind::Centerface => 3,
            DecoderKind::Yolo => 1,
        };
        if output_names.len() < wanted {
            return Err(model_err(format!(
                "a {:?} decoder needs {wanted} outputs, the model has {}",
                config.decoder,
                output_names.len()
            )));
        }
        // A model that cannot be decoded this way is refused now, by name,
        // not at the first frame.
        let expected_rank = match config.decoder {
            DecoderKind::Centerface => 4,
            DecoderKind::Yolo => 3,
        };
        for (output, name) in session.outputs().iter().zip(&output_names).take(wanted) {
            if let Some(r) = output.dtype().tensor_shape().map(|s| s.len())
                && r != expected_rank
            {
                return Err(model_err(format!(
                    "detector {:?}: output {name:?} has {r} dimensions; a {:?} decoder reads \
                     {expected_rank} (is this the right model for the decoder?)",
                    config.name, config.decoder
                )));
            }
        }
        Ok(Self {
            version: format!("{}@{}", config.name, &digest[..12]),
            config: config.clone(),
            session,
            input_name,
            output_names,
        })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// `name@sha256-prefix` of the model file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The model input size used for a frame of `width`×`height`.
    pub fn input_size(&self, width: u32, height: u32) -> (u32, u32) {
        self.config.input_size(width, height)
    }

    /// Finds the configured classes in `frame`.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>> {
        let prepared = self.config.prepare(frame)?;
        self.detect_prepared(prepared)
    }

    /// Finds the configured classes in a frame already turned into model
    /// input ([`DetectorConfig::prepare`], which may run on another thread).
    pub fn detect_prepared(&mut self, prepared: Prepared) -> Result<Vec<Detection>> {
        let Prepared {
            input,
            frame: (w, h),
            model: (iw, ih),
            letterbox,
        } = prepared;
        let raw = match (self.config.decoder, letterbox) {
            (DecoderKind::Centerface, _) => {
                let outputs = self.run(input, iw, ih)?;
                crate::decode::centerface(
                    &outputs[0],
                    &outputs[1],
                    &outputs[2],
                    (ih, iw),
                    self.config.threshold,
                    self.config.nms_iou,
                )?
                .into_iter()
                .map(|b| {
                    b.scaled(w as f32 / iw as f32, h as f32 / ih as f32)
                        .with_class(0)
                })
                .collect::<Vec<_>>()
            }
            (DecoderKind::Yolo, Some(letterbox)) => {
                let outputs = self.run(input, iw, ih)?;
                crate::decode::yolo(&outputs[0], self.config.threshold, self.config.nms_iou)?
                    .into_iter()
                    .map(|b| letterbox.to_frame(b))
                    .collect()
            }
            (DecoderKind::Yolo, None) => {
                return Err(Error::Internal(
                    "YOLO input prepared without a letterbox".into(),
                ));
            }
        };
        let names: Vec<&String> = self.config.classes.keys().collect();
        let mut out = Vec::with_capacity(raw.len());
        for b in raw {
            let class = match self.config.decoder {
                DecoderKind::Centerface => Some("face".to_owned()),
                DecoderKind::Yolo => self
                    .config
                    .classes
                    .keys()
                    .find(|k| k.parse::<usize>().ok() == Some(b.class))
                    .cloned()
                    .or_else(|| names.get(b.class).map(|s| (*s).clone())),
            };
            let Some(class) = class else { continue };
            let Some(&action) = self.config.classes.get(&class) else {
                continue;
            };
            out.push(Detection {
                detector: self.config.name.clone(),
                class,
                score: b.score,
                x1: b.x1.clamp(0.0, w as f32),
                y1: b.y1.clamp(0.0, h as f32),
                x2: b.x2.clamp(0.0, w as f32),
                y2: b.y2.clamp(0.0, h as f32),
                action,
            });
        }
        Ok(out)
    }

    /// Runs the model alone on a prepared `1×3×ih×iw` input, for measuring
    /// what the pipeline around it costs.
    pub fn run_model(&mut self, input: Vec<f32>, iw: u32, ih: u32) -> Result<()> {
        self.run(input, iw, ih).map(drop)
    }

    fn run(&mut self, input: Vec<f32>, iw: u32, ih: u32) -> Result<Vec<crate::decode::Map>> {
        let fail = |e: ort::Error| Error::Inference(format!("{}: {e}", self.version));
        let tensor = Tensor::from_array(([1usize, 3, ih as usize, iw as usize], input))
            .map_err(|e| Error::Inference(format!("{}: {e}", self.version)))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(fail)?;
        let mut maps = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Inference(format!("{}: output {name}: {e}", self.version)))?;
            maps.push(crate::decode::Map {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(toml_text: &str) -> std::result::Result<InputSize, String> {
        #[derive(Deserialize)]
        struct Holder {
            input: InputSize,
        }
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.input)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_width_input_follows_the_frames_aspect_in_multiples_of_32() {
        let plates = DetectorConfig::plates("plates.onnx");
        assert_eq!(plates.input_size(1920, 1080), (1152, 672));
        assert_eq!(plates.input_size(902, 380), (1152, 512));
        assert_eq!(plates.input_size(518, 331), (1056, 704));
        assert_eq!(plates.input_size(320, 240), (640, 480));
        assert_eq!(
            input("input = { width = 1000 }"),
            Ok(InputSize::Width { width: 1024 })
        );
        assert_eq!(input("input = \"full\""), Ok(InputSize::Full));
        assert!(
            input("input = { width = 8 }")
                .unwrap_err()
                .contains("not within 32..=8192")
        );
        assert!(input("input = \"huge\"").unwrap_err().contains("must be"));
    }

    #[test]
    fn a_detector_overrides_only_the_mask_settings_it_names() {
        let base = crate::MaskConfig::default();
        let plates = DetectorConfig::plates("plates.onnx").mask(&base);
        assert_eq!((plates.mask_scale, plates.ellipse), (1.2, false));
        assert_eq!(plates.mosaic_cells, base.mosaic_cells);
        assert_eq!(DetectorConfig::centerface("c.onnx").mask(&base), base);
    }
}
