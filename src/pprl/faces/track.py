"""Following faces across a video's frames, so each person keeps one target identity for the whole video.

A track is matched to the face of the next frame whose eye midpoint is closest to its last one (greedily, by
distance in eye distances, at most `max_move`). A track with no face in a frame is *held* for up to `max_gap`
frames: its last landmarks are used again, so a face the detector misses for a frame or two is still covered.
Track ids count up from 0 in order of appearance, so they (and the targets drawn from them) are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import Face


@dataclass
class Track:
    id: int
    face: Face
    last_frame: int


class Tracker:
    def __init__(self, max_gap: int = 5, max_move: float = 1.0):
        if int(max_gap) < 0 or float(max_move) <= 0:
            raise ValueError(f"max_gap must be >= 0 and max_move > 0, got {max_gap}, {max_move}")
        self.max_gap, self.max_move = int(max_gap), float(max_move)
        self.tracks: list[Track] = []
        self.next_id = 0

    def update(self, frame: int, faces: list[Face]) -> list[tuple[int, Face, bool]]:
        """(track id, face, held) for every face of `frame` and every held track (held=True: not detected)."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_gap]
        pairs = []
        for ti, t in enumerate(self.tracks):
            mid, scale = t.face.landmarks[:2].mean(0), max(t.face.eye_distance, 1.0)
            for fi, f in enumerate(faces):
                d = float(np.linalg.norm(f.landmarks[:2].mean(0) - mid)) / scale
                if d <= self.max_move:
                    pairs.append((d, ti, fi))
        used_t, used_f, out = set(), set(), []
        for _, ti, fi in sorted(pairs):
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            self.tracks[ti].face, self.tracks[ti].last_frame = faces[fi], frame
            out.append((self.tracks[ti].id, faces[fi], False))
        for fi, f in enumerate(faces):
            if fi not in used_f:
                self.tracks.append(Track(self.next_id, f, frame))
                out.append((self.next_id, f, False))
                self.next_id += 1
        for ti, t in enumerate(self.tracks):
            if ti not in used_t and t.last_frame < frame:
                out.append((t.id, t.face, True))
        return sorted(out, key=lambda r: r[0])
