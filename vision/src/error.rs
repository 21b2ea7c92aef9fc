use std::path::PathBuf;

/// What can go wrong in the vision stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ONNX Runtime itself could not be loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A model file is missing, corrupt or does not fit its configuration.
    #[error("model {0}")]
    Model(String),
    /// Inference failed on a frame: the frame is not published.
    #[error("detection failed: {0}")]
    Inference(String),
    /// A frame could not be decoded, converted or encoded.
    #[error("frame: {0}")]
    Frame(String),
    /// A video could not be decoded.
    #[error("video {path}: {reason}")]
    Video { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input of `anonymize` is not something it handles.
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error(transparent)]
    Lake(#[from] hexroad_lake::Error),
    #[error("object store: {0}")]
    Store(#[from] hexroad_lake::object_store::Error),
    #[error("internal error, likely a bug: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
