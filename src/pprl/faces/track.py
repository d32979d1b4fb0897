"""Following faces across a video's frames: one target identity per person, and no frame where a lost face shows.

A detection joins the track whose current box holds its eye midpoint nearest the box centre (greedily, distance
in half box sizes, at most `max_move`); a detection that joins no track starts a new one. A track with no
detection in a frame is *held*: the caller looks for the face again near its box (`detector.follow`) and reports
it `found`; when that fails too the track is `lost` for the frame: its box moves on along the track's last motion
and grows by `grow` per frame (up to `max_grow` times the face's size), and the caller covers that box. A track
ends when its box has left the frame; it continues when a detection lands in its box again. A track found in fewer
than `confirm` frames (possibly a false detection) is held for `hold` frames only, so one spurious detection does
not leave a cover for the rest of a clip. Track ids count up from 0 in order of appearance, so they (and the targets
drawn from them) are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detect import Face


@dataclass
class Track:
    id: int
    face: Face  # the last face found (detected or followed)
    last_frame: int  # the frame it was last found in
    box: np.ndarray  # (4,) the region it occupies now: the face's box, moved and grown while it is lost
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px per frame of the box centre
    hits: int = 1  # frames it was found in

    @property
    def centre(self) -> np.ndarray:
        return self.box.reshape(2, 2).mean(0)


class Tracker:
    def __init__(self, width: int, height: int, max_move: float = 1.0, grow: float = 0.05, max_grow: float = 2.0,
                 confirm: int = 3, hold: int = 5):
        if float(max_move) <= 0 or float(grow) < 0 or float(max_grow) < 1 or int(confirm) < 1 or int(hold) < 0:
            raise ValueError(f"need max_move > 0, grow >= 0, max_grow >= 1, confirm >= 1, hold >= 0; got {max_move}, "
                             f"{grow}, {max_grow}, {confirm}, {hold}")
        self.size = np.array([width, height], np.float64)
        self.max_move, self.grow, self.max_grow = float(max_move), float(grow), float(max_grow)
        self.confirm, self.hold = int(confirm), int(hold)
        self.tracks: list[Track] = []
        self.next_id = 0

    def _inside(self, t: Track) -> bool:
        return bool(np.all(t.box[2:] > 0) and np.all(t.box[:2] < self.size))

    def update(self, frame: int, faces: list[Face]) -> list[tuple[int, Face, bool]]:
        """(track id, face, held) for every face of `frame` and every held track (held=True: not detected; its
        face is the last one found)."""
        self.tracks = [t for t in self.tracks if self._inside(t)
                       and (t.hits >= self.confirm or frame - t.last_frame <= self.hold)]
        pairs = []
        for ti, t in enumerate(self.tracks):
            half = np.maximum((t.box[2:] - t.box[:2]) / 2, 1.0)
            for fi, f in enumerate(faces):
                d = float(np.max(np.abs(f.landmarks[:2].mean(0) - t.centre) / half))
                if d <= self.max_move:
                    pairs.append((d, ti, fi))
        used_t, used_f, out = set(), set(), []
        for _, ti, fi in sorted(pairs):
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            self.found(self.tracks[ti].id, faces[fi], frame)
            out.append((self.tracks[ti].id, faces[fi], False))
        for fi, f in enumerate(faces):
            if fi not in used_f:
                self.tracks.append(Track(self.next_id, f, frame, np.asarray(f.box, np.float64).copy()))
                out.append((self.next_id, f, False))
                self.next_id += 1
        for ti, t in enumerate(self.tracks):
            if ti not in used_t and t.last_frame < frame:
                out.append((t.id, t.face, True))
        return sorted(out, key=lambda r: r[0])

    def _get(self, track_id: int) -> Track:
        return next(t for t in self.tracks if t.id == track_id)

    def found(self, track_id: int, face: Face, frame: int) -> None:
        """The track's face in `frame` (detected or followed): its box and motion follow it."""
        t = self._get(track_id)
        box = np.asarray(face.box, np.float64)
        step = (box.reshape(2, 2).mean(0) - t.face.box.reshape(2, 2).mean(0)) / max(frame - t.last_frame, 1)
        t.velocity = step if t.last_frame == frame else 0.5 * t.velocity + 0.5 * step
        t.face, t.last_frame, t.box = face, frame, box.copy()
        t.hits += 1

    def lost(self, track_id: int) -> np.ndarray:
        """The track's face was not found in this frame: move its box along its motion, grow it, return it."""
        t = self._get(track_id)
        half = (t.box[2:] - t.box[:2]) / 2 * (1 + self.grow)
        half = np.minimum(half, self.max_grow * (t.face.box[2:] - t.face.box[:2]) / 2)
        c = t.centre + t.velocity
        t.box = np.concatenate([c - half, c + half])
        return t.box.copy()
