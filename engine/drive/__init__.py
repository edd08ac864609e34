"""Live driving: a webcam or video drives an avatar (issue 8).

    sources (VideoSource, WebcamSource) -> realtime (RealtimeTracker: FaceMesh + a bounded,
    warm-started fit) -> transfer (absolute / relative to the driver's neutral) -> filters
    (lost-face easing, One-Euro smoothing) -> AnimatedAvatar + renderer; drive.drive_video
    runs the chain offline on a driver video.

Import-light: mediapipe is imported only when a tracker first detects.
"""
