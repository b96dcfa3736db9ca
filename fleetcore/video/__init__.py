"""Video: probing (PyAV), frame indexes and sparse exact multi-camera clip extraction."""

from fleetcore.video.extract import ArenaPool, ClipExtractor, ClipFrames, extract_clip, sample_times
from fleetcore.video.convert import hold_opencv_threads, release_opencv_threads, set_opencv_threads
from fleetcore.video.geometry import output_size
from fleetcore.video.index import index_camera, index_drive
from fleetcore.video.probe import SEEK_MODES, VideoInfo, probe_video

__all__ = [
    "SEEK_MODES",
    "ArenaPool",
    "ClipExtractor",
    "ClipFrames",
    "VideoInfo",
    "extract_clip",
    "index_camera",
    "index_drive",
    "output_size",
    "probe_video",
    "sample_times",
    "hold_opencv_threads",
    "release_opencv_threads",
    "set_opencv_threads",
]
