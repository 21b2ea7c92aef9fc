//! The blocking part of one upload: sampling, dedupe, detection and
//! blurring, JPEG encoding and storing, on three overlapping threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use chrono::{DateTime, Utc};
use hexroad_lake::object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, path::Path as StorePath,
};
use hexroad_lake::{FrameRecord, PendingUpload};
use hexroad_wire::grid::haversine_m;
use hexroad_wire::{FrameId, UploadId};
use sha2::{Digest, Sha256};

use crate::dedupe::DedupeIndex;
use crate::sample::{Pose, Sampler, Track, angle_between};
use crate::settings::VisionConfig;
use crate::video::{self, Flow};
use crate::{Anonymizer, Error, Result, bundle, image_ops};

/// A frame chosen by sampling, on its way to detection.
pub(crate) struct Candidate {
    index: u64,
    pose: Pose,
    rgb: image::RgbImage,
    /// Set when the camera has not moved since the last candidate.
    stationary_of: Option<FrameId>,
    inputs: Inputs,
}

/// The detectors' inputs for a candidate, prepared beside decoding; `None`
/// for a frame already known to be a duplicate.
type Inputs = Option<Vec<crate::detect::Prepared>>;

/// Everything the blocking part of one upload needs.
pub(crate) struct Job {
    pub path: PathBuf,
    pub is_video: bool,
    pub start: DateTime<Utc>,
    pub track: Track,
    pub config: VisionConfig,
    pub upload: PendingUpload,
    pub index: DedupeIndex,
    /// Where frames are never published (drive ends, privacy zones).
    pub withheld: crate::withhold::Withheld,
    pub store: Arc<dyn ObjectStore>,
    pub runtime: tokio::runtime::Handle,
    pub now: DateTime<Utc>,
}

/// A stable id for the `index`th picture of `upload`, so retries agree.
pub fn frame_id(upload: UploadId, index: u64) -> FrameId {
    let digest = Sha256::digest(format!("{upload}/{index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    FrameId::from_bytes(bytes)
}

/// An error, and the objects already written that must be removed.
pub(crate) type Failure = Box<(Error, Vec<StorePath>)>;

impl Job {
    /// Decoding on one thread, detection on this one, JPEG encoding and
    /// storing on a third: the stages overlap.
    pub(crate) fn run(
        self,
        anonymizer: &mut Anonymizer,
    ) -> std::result::Result<Vec<FrameRecord>, Failure> {
        let (cand_tx, cand_rx) = mpsc::sync_channel::<Candidate>(3);
        let (enc_tx, enc_rx) = mpsc::sync_channel::<(FrameRecord, image::RgbImage)>(3);
        let decoder = self.spawn_decoder(cand_tx);
        let encoder = self.spawn_encoder(enc_rx);
        let (dedupe_rows, failure) = self.detect(anonymizer, &cand_rx, &enc_tx);
        drop(cand_rx);
        drop(enc_tx);
        let decoded = decoder
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the decoder thread panicked".into())));
        let encoded = encoder.join().unwrap_or_else(|_| {
            Err(Box::new((
                Error::Internal("the encoder thread panicked".into()),
                Vec::new(),
            )))
        });
        let mut rows = encoded?;
        let written: Vec<StorePath> = rows
            .iter()
            .filter_map(|r| r.image_key.as_deref().map(StorePath::from))
            .collect();
        if let Some(e) = failure.or(decoded.err()) {
            return Err(Box::new((e, written)));
        }
        rows.extend(dedupe_rows);
        rows.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.frame_id.cmp(&b.frame_id)));
        Ok(rows)
    }

    /// The decoding thread: sends the frames due by distance.
    fn spawn_decoder(
        &self,
        cand_tx: mpsc::SyncSender<Candidate>,
    ) -> std::thread::JoinHandle<Result<()>> {
        let (path, is_video, start, track, config, upload) = (
            self.path.clone(),
            self.is_video,
            self.start,
            self.track.clone(),
            self.config.clone(),
            self.upload.upload_id,
        );
        std::thread::spawn(move || {
            sample_frames(&path, is_video, start, &track, &config, upload, cand_tx)
        })
    }

    /// The encoding thread: JPEGs stored under their keys; returns the rows,
    /// or the failure and what was already written.
    fn spawn_encoder(
        &self,
        enc_rx: mpsc::Receiver<(FrameRecord, image::RgbImage)>,
    ) -> std::thread::JoinHandle<std::result::Result<Vec<FrameRecord>, Failure>> {
        let (store, runtime, quality) = (
            Arc::clone(&self.store),
            self.runtime.clone(),
            self.config.jpeg_quality,
        );
        std::thread::spawn(move || -> std::result::Result<Vec<FrameRecord>, Failure> {
            let mut rows = Vec::new();
            let mut written = Vec::new();
            for (mut row, rgb) in enc_rx {
                let stored = image_ops::encode_jpeg(&rgb, quality).and_then(|jpeg| {
                    let key = StorePath::from(row.image_key.clone().unwrap_or_default());
                    row.image_bytes = jpeg.len() as u64;
                    runtime
                        .block_on(store.put(&key, PutPayload::from(jpeg)))
                        .map(|_| key)
                        .map_err(Error::from)
                });
                match stored {
                    Ok(key) => written.push(key),
                    Err(e) => return Err(Box::new((e, written))),
                }
                rows.push(row);
            }
            Ok(rows)
        })
    }

    /// Detection on the calling thread: drops duplicates (returned as rows
    /// of their own), hides what the detectors find, and sends the rest on
    /// to be encoded. Stops at the first detection error (fail closed).
    fn detect(
        &self,
        anonymizer: &mut Anonymizer,
        cand_rx: &mpsc::Receiver<Candidate>,
        enc_tx: &mpsc::SyncSender<(FrameRecord, image::RgbImage)>,
    ) -> (Vec<FrameRecord>, Option<Error>) {
        let versions = anonymizer.model_versions();
        let mut dedupe_rows = Vec::new();
        let mut failure = None;
        let mut last_pixels: Option<(FrameId, [u8; 32])> = None;
        for cand in cand_rx.iter() {
            let cell = match hexroad_wire::grid::cell_at(cand.pose.lat, cand.pose.lon) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let id = frame_id(self.upload.upload_id, cand.index);
            let phash = image_ops::phash(&cand.rgb);
            let (quality, sharpness) = image_ops::quality(&cand.rgb);
            let pixels: [u8; 32] = Sha256::digest(cand.rgb.as_raw()).into();
            let mut row = FrameRecord {
                frame_id: id,
                upload_id: self.upload.upload_id,
                device_id: self.upload.device_id.clone(),
                contributor_id: self.upload.contributor_id.clone(),
                ts: cand.pose.ts,
                lat: cand.pose.lat,
                lon: cand.pose.lon,
                heading: cand.pose.heading,
                speed: cand.pose.speed,
                cell: u64::from(cell),
                image_key: None,
                width: cand.rgb.width(),
                height: cand.rgb.height(),
                image_bytes: 0,
                faces_blurred: 0,
                plates_blurred: 0,
                phash,
                quality: f64::from(quality),
                sharpness: f64::from(sharpness),
                dedupe_of: None,
                dedupe_reason: None,
                model_versions: versions.clone(),
                processed_at: self.now,
            };
            if let Some(reason) = self.withheld.reason(row.lat, row.lon) {
                row.dedupe_reason = Some(reason.to_owned());
                dedupe_rows.push(row);
                continue;
            }
            let duplicate = if let Some(of) = cand.stationary_of {
                Some((of, "stationary".to_owned()))
            } else if let Some((of, _)) = last_pixels.as_ref().filter(|(_, p)| *p == pixels) {
                Some((*of, "identical".to_owned()))
            } else {
                self.index
                    .nearest(cell, phash, self.config.phash_max_bits)
                    .map(|(of, bits)| (of, format!("near_duplicate: {bits} bits from {of}")))
            };
            if let Some((of, reason)) = duplicate {
                row.dedupe_of = Some(of);
                row.dedupe_reason = Some(reason);
                dedupe_rows.push(row);
                continue;
            }
            let mut rgb = cand.rgb;
            let hidden = match cand.inputs {
                Some(inputs) => anonymizer.anonymize_prepared(&mut rgb, inputs),
                None => anonymizer.anonymize(&mut rgb),
            };
            match hidden {
                Ok(hidden) => {
                    row.faces_blurred = hidden.faces;
                    row.plates_blurred = hidden.plates;
                }
                Err(e) => {
                    // Fail closed: this frame, and so this upload, is not published.
                    failure = Some(e);
                    break;
                }
            }
            row.image_key = Some(row.frame_id.image_key());
            last_pixels = Some((id, pixels));
            if enc_tx.send((row, rgb)).is_err() {
                break;
            }
        }
        (dedupe_rows, failure)
    }
}

/// Decodes the upload and sends the frames due by distance.
fn sample_frames(
    path: &Path,
    is_video: bool,
    start: DateTime<Utc>,
    track: &Track,
    config: &VisionConfig,
    upload: UploadId,
    tx: mpsc::SyncSender<Candidate>,
) -> Result<()> {
    let mut sampler = Sampler::new(config.sample_distance_m);
    let mut last: Option<(u64, Pose)> = None;
    let mut consider = |index: u64,
                        ts: DateTime<Utc>,
                        rgb: &mut dyn FnMut() -> Result<image::RgbImage>|
     -> Result<Flow> {
        let Some(pose) = track.at(ts, config.max_track_gap.as_secs_f64()) else {
            return Ok(Flow::Continue);
        };
        if !sampler.due(&pose) {
            return Ok(Flow::Continue);
        }
        let stationary_of = last
            .filter(|(_, p)| {
                haversine_m((p.lat, p.lon), (pose.lat, pose.lon)) < config.still_distance_m
                    && angle_between(p.heading, pose.heading) < config.still_angle_deg
            })
            .map(|(i, _)| frame_id(upload, i));
        if stationary_of.is_none() {
            last = Some((index, pose));
        }
        let rgb = rgb()?;
        let inputs = match stationary_of {
            None => Some(crate::prepare_all(&config.detectors, &rgb)?),
            Some(_) => None,
        };
        let cand = Candidate {
            index,
            pose,
            rgb,
            inputs,
            stationary_of,
        };
        Ok(if tx.send(cand).is_ok() {
            Flow::Continue
        } else {
            Flow::Stop
        })
    };
    if is_video {
        let mut index = 0u64;
        let on_picture = |picture: video::Picture<'_>| {
            let ts = start + chrono::Duration::from_std(picture.pts).unwrap_or_default();
            let flow = consider(index, ts, &mut || picture.to_rgb())?;
            index += 1;
            Ok(flow)
        };
        match &config.decoder {
            Some(program) => {
                let cage = crate::cage::DecodeCage {
                    program: program.clone(),
                    limits: config.decode,
                };
                crate::cage::decode(&cage, path, config.max_pixels, on_picture)?;
            }
            None => {
                video::decode(path, on_picture)?;
            }
        }
        Ok(())
    } else {
        bundle::frames(path, config.max_pixels, &mut consider)
    }
}

/// Offered each picture's index and time, and a way to get its pixels.
pub(crate) type Consider<'a> =
    dyn FnMut(u64, DateTime<Utc>, &mut dyn FnMut() -> Result<image::RgbImage>) -> Result<Flow> + 'a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_stable_and_distinct() {
        let u: UploadId = "0195f3c8-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(frame_id(u, 3), frame_id(u, 3));
        assert_ne!(frame_id(u, 3), frame_id(u, 4));
        assert_eq!(frame_id(u, 0).to_string().len(), 36);
    }
}
