"""Face detection with MTCNN: every face of an image as a box, a score and 5 landmarks.

The three stages run batched: PNet over a batch of same-sized images at each pyramid scale,
RNet and ONet over the candidates of all images and scales at once. Crops for RNet/ONet are
resampled from the pyramid level closest above the target size, so shrinking needs no extra
anti-aliasing pass. Bookkeeping (NMS, box arithmetic) is numpy on small arrays; the networks
and resampling run on the chosen device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from faceanon.align import align
from faceanon.errors import FaceanonError
from faceanon.mtcnn_format import load_pretrained

__all__ = ["Face", "Detector", "nms", "detect_and_align", "draw_faces"]

# PNet looks at 12x12 windows every 2 pixels of each pyramid level.
_CELL, _STRIDE = 12, 2
# Candidate crops per RNet/ONet forward: bounds memory and keeps activations in cache.
_CHUNK = 256


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels: box (x1, y1, x2, y2), ONet score, and 5 landmarks
    (left eye, right eye, nose, left mouth corner, right mouth corner; left/right as seen)."""

    box: np.ndarray
    score: float
    landmarks5: np.ndarray

    @property
    def size(self) -> float:
        """The box's longer side, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union",
        groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, best score first.

    ``mode="min"`` divides the overlap by the smaller box (drops boxes nested inside a face,
    as MTCNN's last stage does). Boxes in different ``groups`` (e.g. images) never suppress
    each other; each group is processed on its own coordinates, so a result never depends on
    the other images of a batch (PNet's grid boxes overlap at exactly the threshold).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    if groups is not None:
        groups = np.asarray(groups)
        keep = [idx[nms(boxes[idx], scores[idx], threshold, mode)]
                for idx in (np.flatnonzero(groups == g) for g in np.unique(groups))]
        kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        return kept[np.argsort(-scores[kept], kind="stable")]
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-scores, kind="stable")
    keep_idx: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep_idx.append(int(i))
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-9)]
    return np.asarray(keep_idx, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply MTCNN's box regression: offsets are fractions of the box's width/height."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + offsets * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes to squares about their centres (the nets were trained on square crops)."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = (boxes[:, 2:4] - boxes[:, 0:2]).max(axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _normalize(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * (1.0 / 128.0)


class _Candidates:
    """Boxes of a batch of images, with the image each belongs to."""

    def __init__(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> None:
        self.image, self.boxes, self.scores = image, boxes, scores

    def take(self, idx: np.ndarray) -> "_Candidates":
        return _Candidates(self.image[idx], self.boxes[idx], self.scores[idx])

    def nms(self, threshold: float, mode: str = "union") -> "_Candidates":
        return self.take(nms(self.boxes, self.scores, threshold, mode, groups=self.image))

    @staticmethod
    def cat(parts: Sequence["_Candidates"]) -> "_Candidates":
        if not parts:
            return _Candidates(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
        return _Candidates(np.concatenate([p.image for p in parts]),
                           np.concatenate([p.boxes for p in parts]),
                           np.concatenate([p.scores for p in parts]))


class Detector:
    """MTCNN face detector.

    ``min_face_size`` (px) sets the largest pyramid scale, so it trades recall of small faces
    for speed; ``thresholds`` are the P/R/O-net score cut-offs; ``max_faces`` keeps only the
    best-scoring faces of each image. Images are RGB uint8 arrays (H, W, 3).
    """

    def __init__(self, min_face_size: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 max_faces: int | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, scale_factor: float = 0.709,
                 max_batch_pixels: int = 16_000_000) -> None:
        if min_face_size < _CELL:
            raise FaceanonError(f"minimum face size must be at least {_CELL} px, got {min_face_size}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise FaceanonError(f"thresholds must be three numbers in [0, 1], got {thresholds}")
        if max_faces is not None and max_faces < 1:
            raise FaceanonError(f"maximum faces must be at least 1, got {max_faces}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError("scale_factor must be in (0, 1)")
        self.device = _device(device)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_faces = max_faces
        self.batch_size = max(1, int(batch_size))
        self.scale_factor = scale_factor
        self.max_batch_pixels = max_batch_pixels
        self.pnet, self.rnet, self.onet = (net.to(self.device) for net in load_pretrained())

    def __call__(self, image: np.ndarray) -> list[Face]:
        """The faces of one image, best score first."""
        return self.detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The faces of each image (best score first), batching images of equal size."""
        for im in images:
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {im.dtype} {im.shape}")
        results: list[list[Face]] = [[] for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for shape, idx in by_shape.items():
            per_batch = max(1, min(self.batch_size, self.max_batch_pixels // (shape[0] * shape[1])))
            for start in range(0, len(idx), per_batch):
                chunk = idx[start:start + per_batch]
                for i, faces in zip(chunk, self._detect_batch(np.stack([images[i] for i in chunk]))):
                    results[i] = faces
        return results

    def _scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the smallest face maps onto PNet's 12 px window, then ×0.709 down
        to the level where the image's short side is still 12 px."""
        scales, s = [], _CELL / self.min_face_size
        while min(height, width) * s >= _CELL:
            scales.append(s)
            s *= self.scale_factor
        return scales

    @torch.inference_mode()
    def _detect_batch(self, batch: np.ndarray) -> list[list[Face]]:
        n, height, width = batch.shape[:3]
        pixels = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
        levels = [(1.0, 1.0, pixels)]  # (scale x, scale y, level) for crop resampling
        proposals = []
        for s in self._scales(height, width):
            h, w = math.ceil(height * s), math.ceil(width * s)
            # From the full image each time: shrinking level from level is faster but blurs
            # more than the nets saw in training (it added false positives on a test photo).
            level = F.interpolate(pixels, size=(h, w), mode="area")
            levels.append((w / width, h / height, level))
            proposals.append(self._pnet(level, w / width, h / height))
        cands = _Candidates.cat(proposals).nms(0.7)
        cands.boxes = _square(cands.boxes)

        offsets, scores = self._run(self.rnet, levels, cands, 24)
        keep = np.flatnonzero(scores >= self.thresholds[1])
        cands = _Candidates(cands.image[keep], _regress(cands.boxes[keep], offsets[keep]),
                            scores[keep]).nms(0.7)
        cands.boxes = _square(cands.boxes)

        offsets, marks, scores = self._run(self.onet, levels, cands, 48)
        keep = np.flatnonzero(scores >= self.thresholds[2])
        boxes = cands.boxes[keep]
        wh = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]
        landmarks = boxes[:, None, 0:2] + np.stack([marks[keep, :5], marks[keep, 5:]], axis=2) * wh
        cands = _Candidates(cands.image[keep], _regress(boxes, offsets[keep]), scores[keep])
        final = nms(cands.boxes, cands.scores, 0.7, "min", groups=cands.image)

        limits = np.array([0.0, 0.0, width, height])
        faces: list[list[Face]] = [[] for _ in range(n)]
        for k in final:  # best score first
            b = int(cands.image[k])
            if self.max_faces is None or len(faces[b]) < self.max_faces:
                box = np.clip(cands.boxes[k], 0.0, limits[[2, 3, 2, 3]])
                faces[b].append(Face(box=box, score=float(cands.scores[k]),
                                     landmarks5=landmarks[k].copy()))
        return faces

    def _run(self, net: torch.nn.Module, levels: list[tuple[float, float, torch.Tensor]],
             cands: _Candidates, size: int) -> list[np.ndarray]:
        """Run RNet or ONet on ``size``-pixel crops of every candidate; outputs as float64 numpy."""
        outs: list[list[np.ndarray]] = []
        for start in range(0, max(len(cands.boxes), 1), _CHUNK):  # one empty pass keeps shapes
            part = cands.take(np.arange(start, min(start + _CHUNK, len(cands.boxes))))
            res = net(_normalize(_crops(levels, part, size)))
            outs.append([r.cpu().numpy().astype(np.float64) for r in res])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def _pnet(self, level: torch.Tensor, sx: float, sy: float) -> _Candidates:
        """PNet windows of one pyramid level scoring above threshold, after per-level NMS."""
        offsets, prob = self.pnet(_normalize(level))
        b, i, j = torch.nonzero(prob >= self.thresholds[0], as_tuple=True)
        if b.numel() == 0:
            return _Candidates.cat([])
        score = prob[b, i, j].cpu().numpy().astype(np.float64)
        reg = offsets[b, :, i, j].cpu().numpy().astype(np.float64)
        i, j = i.cpu().numpy(), j.cpu().numpy()
        boxes = np.stack([j * _STRIDE / sx, i * _STRIDE / sy,
                          (j * _STRIDE + _CELL) / sx, (i * _STRIDE + _CELL) / sy], axis=1)
        cands = _Candidates(b.cpu().numpy(), boxes, score)
        keep = nms(boxes, score, 0.5, groups=cands.image)
        cands = cands.take(keep)
        cands.boxes = _regress(cands.boxes, reg[keep])
        return cands


def _crops(levels: list[tuple[float, float, torch.Tensor]], cands: _Candidates,
           size: int) -> torch.Tensor:
    """Bilinear ``size`` x ``size`` crops of the candidate boxes (zeros outside the image).

    Each box is sampled from the smallest pyramid level on which it is still at least ``size``
    pixels wide, so bilinear sampling shrinks by less than 1/0.709 and needs no pre-blur.
    One ``grid_sample`` per level serves all images: each image's boxes are stacked along
    the grid's height, padded with out-of-range points.
    """
    dev = levels[0][2].device
    side = (cands.boxes[:, 2] - cands.boxes[:, 0]).clip(min=1e-6)
    # levels[0] is the full image: boxes smaller than ``size`` are upsampled from it.
    scales = np.array([sx for sx, _, _ in levels])
    ok = scales[None, :] * side[:, None] >= size
    ok[:, 0] = True
    choice = np.where(ok, scales[None, :], np.inf).argmin(axis=1)
    out = torch.empty((len(side), 3, size, size), device=dev)
    t = (np.arange(size) + 0.5) / size
    for li in np.unique(choice):
        sx, sy, level = levels[li]
        lh, lw = level.shape[2:]
        sel = np.flatnonzero(choice == li)
        imgs, slot = np.unique(cands.image[sel], return_inverse=True)
        rank = np.zeros(len(sel), np.int64)  # position of each box among its image's boxes
        for k in range(len(imgs)):
            rank[slot == k] = np.arange(int((slot == k).sum()))
        bx = cands.boxes[sel]
        xs = (bx[:, 0:1] + t * (bx[:, 2:3] - bx[:, 0:1])) * sx * (2.0 / lw) - 1.0
        ys = (bx[:, 1:2] + t * (bx[:, 3:4] - bx[:, 1:2])) * sy * (2.0 / lh) - 1.0
        grid = np.full((len(imgs), int(rank.max()) + 1, size, size, 2), -3.0, np.float32)
        grid[slot, rank, :, :, 0] = xs[:, None, :]
        grid[slot, rank, :, :, 1] = ys[:, :, None]
        g = torch.from_numpy(grid.reshape(len(imgs), -1, size, 2)).to(dev)
        got = F.grid_sample(level[torch.as_tensor(imgs, device=dev)], g, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
        got = got.reshape(len(imgs), 3, -1, size, size)
        out[torch.as_tensor(sel, device=dev)] = got[torch.as_tensor(slot, device=dev), :,
                                                    torch.as_tensor(rank, device=dev)]
    return out


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FaceanonError(f"device {device} requested but CUDA is not available")
    return dev


def main_face(boxes: np.ndarray, shape: tuple[int, ...]) -> int | None:
    """Index of the main face among (N, 4) boxes of an image of ``shape`` (None when N = 0): the
    box whose centre is nearest the image centre.

    The centre rather than the largest box, because a photo is framed on its subject: LFW's
    label names the person its image is centred on, and a bystander nearer the camera (a group
    shot, a crowd behind a speaker) can have the larger box. ``faceanon verify`` and ``eval``
    must pick the same face as the labels and as each other, so both use this.
    """
    if not len(boxes):
        return None
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    target = np.array([shape[1], shape[0]]) / 2.0
    return int(np.argmin(np.linalg.norm(centres - target, axis=1)))


def detect_and_align(image: np.ndarray, detector: Detector, template: str = "faceanon",
                     size: int = 128) -> tuple[list[Face], np.ndarray, np.ndarray]:
    """Detect the faces of one image and align each onto ``template`` at ``size`` px wide.

    Returns the faces (best score first), their crops (N, h, size, 3) and image → crop
    matrices (N, 2, 3) in the same order; the matrices are what :mod:`faceanon.composite`
    needs to paste a new face back.
    """
    faces = detector(image)
    marks = np.array([f.landmarks5 for f in faces]).reshape(-1, 5, 2)
    crops, matrices = align(image, marks, template, size)
    return faces, crops, matrices


def draw_faces(image: np.ndarray, faces: Sequence[Face],
               landmarks68: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and landmarks drawn, for reviewing
    detections and thresholds before anonymizing."""
    out = np.ascontiguousarray(image).copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    colours = [(255, 64, 64), (64, 64, 255), (64, 255, 64), (255, 255, 0), (0, 255, 255)]
    for k, f in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thick)
        cv2.putText(out, f"{f.score:.2f}", (x1, max(y1 - 3 * thick, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 0), thick)
        if landmarks68 is not None:
            for x, y in np.asarray(landmarks68[k]):
                cv2.circle(out, (int(round(x)), int(round(y))), thick, (255, 255, 255), -1)
        for (x, y), c in zip(f.landmarks5, colours):
            cv2.circle(out, (int(round(x)), int(round(y))), 2 * thick, c, -1)
    return out
