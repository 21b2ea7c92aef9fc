//! Video in and out with GStreamer: decode any container GStreamer reads to
//! I420 pictures (converted to RGB only for the frames that are kept), and
//! encode RGB frames back to H.264 MP4 for the offline tool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;

use crate::{Error, Result};

/// What the decoder learnt about the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second, as a fraction.
    pub fps: (i32, i32),
    pub frames: u64,
}

/// One decoded picture, still in I420: from GStreamer in this process, or
/// read back from a caged decoder's pipe.
pub struct Picture<'a> {
    pub pts: Duration,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Y, U and V, each `strides[i]` bytes a row.
    pub(crate) planes: [&'a [u8]; 3],
    pub(crate) strides: [usize; 3],
}

impl Picture<'_> {
    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Converts to RGB (the costly step, done only for kept frames).
    pub fn to_rgb(&self) -> Result<RgbImage> {
        let [y, u, v] = self.planes;
        crate::image_ops::i420_to_rgb(y, u, v, self.strides, self.width, self.height)
    }
}

/// Whether decoding should go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

fn init() -> Result<()> {
    gst::init().map_err(|e| Error::Internal(format!("GStreamer init: {e}")))
}

/// Decodes `path`, calling `on_picture` for every picture in order.
/// A corrupt or truncated file is an error naming the file.
pub fn decode(
    path: &Path,
    mut on_picture: impl FnMut(Picture<'_>) -> Result<Flow>,
) -> Result<VideoInfo> {
    init()?;
    let video_err = |reason: String| Error::Video {
        path: path.to_owned(),
        reason,
    };
    if !path.is_file() {
        return Err(video_err("no such file".into()));
    }
    let pipeline = gst::Pipeline::new();
    let make = |factory: &str| {
        gst::ElementFactory::make(factory).build().map_err(|e| {
            video_err(format!(
                "GStreamer element {factory} is missing: {e} (run scripts/setup)"
            ))
        })
    };
    let src = make("filesrc")?;
    src.set_property("location", path.to_string_lossy().to_string());
    // Pinned to what hexroad accepts (MP4 with H.264), never chosen by the
    // file's content: no other demuxer or decoder ever sees untrusted bytes.
    let demux = make("qtdemux")?;
    let parse = make("h264parse")?;
    let decoder = make("avdec_h264")?;
    let convert = make("videoconvert")?;
    let sink = AppSink::builder()
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::I420)
                .build(),
        )
        .sync(false)
        .max_buffers(4)
        .build();
    pipeline
        .add_many([&src, &demux, &parse, &decoder, &convert, sink.upcast_ref()])
        .map_err(|e| video_err(e.to_string()))?;
    src.link(&demux).map_err(|e| video_err(e.to_string()))?;
    gst::Element::link_many([&parse, &decoder, &convert, sink.upcast_ref()])
        .map_err(|e| video_err(e.to_string()))?;
    let parse_weak = parse.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let Some(parse) = parse_weak.upgrade() else {
            return;
        };
        // qtdemux names its streams video_0, audio_0, …: only the first
        // video stream is decoded (an H.264 one, or linking fails).
        if let Some(sinkpad) = parse.static_pad("sink")
            && pad.name().starts_with("video_")
            && !sinkpad.is_linked()
        {
            let _ = pad.link(&sinkpad);
        }
    });
    let stop = |pipeline: &gst::Pipeline| {
        let _ = pipeline.set_state(gst::State::Null);
    };
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| video_err(format!("cannot start decoding: {e}")))?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| Error::Internal("pipeline without bus".into()))?;
    let mut info = VideoInfo::default();
    let outcome = loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            break Err(video_err(format!("not decodable: {}", e.error())));
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
            if sink.is_eos() {
                break Ok(());
            }
            continue;
        };
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            continue;
        };
        let vinfo = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| video_err(format!("unreadable caps: {e}")))?;
        info.width = vinfo.width();
        info.height = vinfo.height();
        info.fps = (vinfo.fps().numer(), vinfo.fps().denom());
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &vinfo)
            .map_err(|e| video_err(format!("unmappable frame: {e}")))?;
        let pts = Duration::from_nanos(buffer.pts().map_or(0, gst::ClockTime::nseconds));
        info.frames += 1;
        let plane = |i: u32| {
            frame
                .plane_data(i)
                .map_err(|e| Error::Frame(format!("I420 plane {i}: {e}")))
        };
        let strides = frame.plane_stride();
        let picture = Picture {
            pts,
            width: frame.width(),
            height: frame.height(),
            planes: [plane(0)?, plane(1)?, plane(2)?],
            strides: [0, 1, 2].map(|i| {
                strides
                    .get(i)
                    .map_or(0, |s| usize::try_from(*s).unwrap_or(0))
            }),
        };
        match on_picture(picture) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break Ok(()),
            Err(e) => {
                stop(&pipeline);
                return Err(e);
            }
        }
    };
    // An error posted while the last frames drained still counts.
    let late_error = bus
        .pop_filtered(&[gst::MessageType::Error])
        .and_then(|msg| match msg.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        });
    stop(&pipeline);
    outcome?;
    if let Some(e) = late_error {
        return Err(video_err(format!("not decodable: {e}")));
    }
    if info.frames == 0 {
        return Err(video_err("no video frames could be decoded".into()));
    }
    Ok(info)
}

/// Encodes RGB frames to an H.264 MP4 file. x264's `superfast` preset: the
/// encoder shares two cores with the detector, and throughput wins over a few
/// percent of file size.
pub struct Mp4Writer {
    pipeline: gst::Pipeline,
    src: AppSrc,
    path: PathBuf,
    frame_ns: u64,
    count: u64,
}

impl Mp4Writer {
    pub fn create(path: &Path, width: u32, height: u32, fps: (i32, i32)) -> Result<Self> {
        init()?;
        let err = |reason: String| Error::Video {
            path: path.to_owned(),
            reason,
        };
        let (num, den) = if fps.0 > 0 && fps.1 > 0 { fps } else { (30, 1) };
        let desc = format!(
            "appsrc name=src format=time block=true \
             caps=video/x-raw,format=RGB,width={width},height={height},framerate={num}/{den} \
             ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=superfast \
             ! h264parse ! mp4mux ! filesink name=sink"
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| err(format!("encoder pipeline: {e} (run scripts/setup)")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| Error::Internal("not a pipeline".into()))?;
        let sink = pipeline
            .by_name("sink")
            .ok_or_else(|| Error::Internal("no sink".into()))?;
        sink.set_property("location", path.to_string_lossy().to_string());
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<AppSrc>().ok())
            .ok_or_else(|| Error::Internal("no appsrc".into()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| err(format!("cannot start encoding: {e}")))?;
        Ok(Self {
            pipeline,
            src,
            path: path.to_owned(),
            frame_ns: 1_000_000_000 * den as u64 / num as u64,
            count: 0,
        })
    }

    pub fn push(&mut self, frame: RgbImage) -> Result<()> {
        let mut buffer = gst::Buffer::from_mut_slice(frame.into_raw());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(self.count * self.frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(self.frame_ns));
        }
        self.count += 1;
        self.src.push_buffer(buffer).map_err(|e| Error::Video {
            path: self.path.clone(),
            reason: format!("encoder refused frame {}: {e:?}", self.count),
        })?;
        Ok(())
    }

    /// Writes the MP4 index and closes the file.
    pub fn finish(self) -> Result<()> {
        let _ = self.src.end_of_stream();
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| Error::Internal("no bus".into()))?;
        let mut outcome = Err(Error::Video {
            path: self.path.clone(),
            reason: "encoder did not finish in time".into(),
        });
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
            match msg.view() {
                gst::MessageView::Eos(_) => {
                    outcome = Ok(());
                    break;
                }
                gst::MessageView::Error(e) => {
                    outcome = Err(Error::Video {
                        path: self.path.clone(),
                        reason: format!("encoding: {}", e.error()),
                    });
                    break;
                }
                _ => {}
            }
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, decode in a cage: any installed plugin used to parse what
    /// came in, chosen by content. A PNG (or any non-MP4) is now refused by
    /// the pinned MP4/H.264 pipeline instead of being decoded by whatever
    /// plugin claims it.
    #[test]
    fn only_mp4_with_h264_reaches_a_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picture.mp4");
        image::RgbImage::from_pixel(64, 48, image::Rgb([200, 10, 10]))
            .save_with_format(&path, image::ImageFormat::Png)
            .unwrap();
        let mut pictures = 0;
        let result = decode(&path, |_| {
            pictures += 1;
            Ok(Flow::Continue)
        });
        assert!(matches!(result, Err(Error::Video { .. })), "{result:?}");
        assert_eq!(pictures, 0);
    }
}
