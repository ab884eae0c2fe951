"""The non-image messages the anonymizer writes: one vision_msgs/Detection2DArray builder for the node and the bag tool."""
from __future__ import annotations

import numpy as np
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

from .actions import Actions
from .faces import Faces


def detections_message(header, boxes: np.ndarray, scores: np.ndarray, class_ids: list[str], track_ids: np.ndarray) -> Detection2DArray:
    """xyxy pixel boxes -> Detection2DArray (class name as class_id, track id as id), stamped like the image."""
    detections = []
    for (x0, y0, x1, y1), score, class_id, track in zip(np.asarray(boxes, np.float64).tolist(), np.asarray(scores).tolist(),
                                                        class_ids, np.asarray(track_ids).tolist()):
        bbox = BoundingBox2D(size_x=x1 - x0, size_y=y1 - y0)
        bbox.center.position.x, bbox.center.position.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=str(class_id), score=float(score)))
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox, id=str(int(track))))
    return Detection2DArray(header=header, detections=detections)


def action_detections(header, actions: Actions) -> Detection2DArray:
    """The person boxes with their action and track id."""
    return detections_message(header, actions.boxes, actions.scores, actions.names(), actions.track_ids)


def face_detections(header, faces: Faces) -> Detection2DArray:
    """The face boxes (class 'face') with their track id."""
    return detections_message(header, faces.boxes, faces.scores, ["face"] * len(faces), faces.track_ids)
