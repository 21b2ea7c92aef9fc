//! hexroad's vision stage: from acknowledged uploads to publishable frames.
//!
//! Decode (GStreamer) → sample by distance along the GNSS track → dedupe
//! (stops, perceptual hash per H3 cell, identical content) → detect faces and
//! plates with configured ONNX models → blur → encode JPEG → `frames/` blobs
//! and `frames` rows. It fails closed: without a working model, or when a
//! frame's detection fails, nothing of that upload is published.
//!
//! The same detect-and-blur stage runs offline over files ([`anonymize`]).

pub mod anonymize;
pub mod blur;
mod bundle;
pub mod cage;
mod claim;
pub mod decode;
mod dedupe;
pub mod detect;
mod error;
pub mod image_ops;
mod job;
pub mod onnx_shape;
pub mod sample;
pub mod settings;
pub mod tensor;
pub mod video;
mod withhold;
pub mod worker;

pub use blur::MaskConfig;
pub use detect::{Action, DecoderKind, Detection, Detector, DetectorConfig, InputSize, Provider};
pub use error::{Error, Result};
pub use job::frame_id;
pub use settings::VisionConfig;
pub use worker::{Pass, Worker};

/// Every detector's input for `frame`, for [`Anonymizer::anonymize_prepared`].
pub fn prepare_all(
    configs: &[DetectorConfig],
    frame: &image::RgbImage,
) -> Result<Vec<detect::Prepared>> {
    configs.iter().map(|c| c.prepare(frame)).collect()
}

/// Detectors plus masking: what turns a frame into a publishable one.
pub struct Anonymizer {
    detectors: Vec<Detector>,
    mask: MaskConfig,
}

/// What [`Anonymizer::anonymize`] did to a frame.
#[derive(Debug, Clone, Default)]
pub struct Hidden {
    pub detections: Vec<Detection>,
    pub faces: u32,
    pub plates: u32,
}

impl Anonymizer {
    /// Loads ONNX Runtime from `runtime` and every detector; any failure is an
    /// error, never an anonymizer with fewer detectors.
    pub fn load(
        runtime: &std::path::Path,
        detectors: &[DetectorConfig],
        mask: MaskConfig,
    ) -> Result<Self> {
        if detectors.is_empty() {
            return Err(Error::Model(
                "no detectors are configured: refusing to publish unanonymized frames".into(),
            ));
        }
        detect::load_runtime(runtime)?;
        let detectors = detectors
            .iter()
            .map(Detector::load)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { detectors, mask })
    }

    /// The versions of the loaded models, `name@sha`, comma-separated.
    pub fn model_versions(&self) -> String {
        self.detectors
            .iter()
            .map(Detector::version)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The detectors' settings, for preparing inputs on another thread.
    pub fn configs(&self) -> Vec<DetectorConfig> {
        self.detectors.iter().map(|d| d.config().clone()).collect()
    }

    /// Detects with every detector and hides what they found, in place.
    pub fn anonymize(&mut self, frame: &mut image::RgbImage) -> Result<Hidden> {
        let prepared = self
            .detectors
            .iter()
            .map(|d| d.config().prepare(frame))
            .collect::<Result<Vec<_>>>()?;
        self.anonymize_prepared(frame, prepared)
    }

    /// As [`Anonymizer::anonymize`], with the inputs already prepared by
    /// [`prepare_all`] (one per detector, in order).
    pub fn anonymize_prepared(
        &mut self,
        frame: &mut image::RgbImage,
        prepared: Vec<detect::Prepared>,
    ) -> Result<Hidden> {
        if prepared.len() != self.detectors.len() {
            return Err(Error::Internal(format!(
                "{} inputs prepared for {} detectors",
                prepared.len(),
                self.detectors.len()
            )));
        }
        // The inputs were prepared from the untouched frame, so hiding one
        // detector's regions cannot hide anything from the next; each hides
        // its regions its own way.
        let mut detections = Vec::new();
        for (d, p) in self.detectors.iter_mut().zip(prepared) {
            let boxes = d.detect_prepared(p)?;
            blur::apply(frame, &boxes, &d.config().mask(&self.mask));
            detections.extend(boxes);
        }
        let count = |word: &str| {
            detections
                .iter()
                .filter(|d| d.action != Action::Keep && d.class.contains(word))
                .count() as u32
        };
        Ok(Hidden {
            faces: count("face"),
            plates: count("plate"),
            detections,
        })
    }
}
