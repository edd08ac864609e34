"""Live driving: a webcam or video drives an avatar.

    sources (VideoSource, WebcamSource) -> realtime (RealtimeTracker: FaceMesh + a bounded,
    warm-started fit) -> transfer (absolute / relative to the driver's neutral) -> filters
    (lost-face easing, One-Euro smoothing) -> AnimatedAvatar + renderer.

drive.DrivePipeline chains transfer, easing and smoothing; drive.drive_video runs the whole
chain offline on a driver video; live.LiveDriver runs the capture half on a worker thread for
a live loop that renders on its own thread. Import-light: mediapipe is imported only when a
tracker first detects.
"""
