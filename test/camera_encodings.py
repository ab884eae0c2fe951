"""Camera encodings written the way drivers write them, independently of ros_anonymizer.image_io (numpy only)."""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

YUV_ORDER = {"yuv422": "UYVY", "uyvy": "UYVY", "yuv422_yuy2": "YUYV", "yuyv": "YUYV"}
BAYER = {"bayer_rggb8": "RGGB", "bayer_bggr8": "BGGR", "bayer_gbrg8": "GBRG", "bayer_grbg8": "GRBG"}
SIXTEEN_BIT = {"rgb16": (0, 1, 2), "bgr16": (2, 1, 0), "mono16": None}
CAMERA_ONLY = sorted([*YUV_ORDER, *BAYER, *SIXTEEN_BIT])


def encode(rgb: np.ndarray, encoding: str, big_endian: bool = False) -> Image:
    """An even-sized HxWx3 uint8 RGB frame as an Image in one of CAMERA_ONLY's encodings."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    if encoding in YUV_ORDER:  # ITU-R BT.601, video range, chroma averaged over each pixel pair
        y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
        u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
        v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
        u2, v2 = (u[:, 0::2] + u[:, 1::2]) / 2, (v[:, 0::2] + v[:, 1::2]) / 2
        planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u2, "V": v2}
        order = ("U", "Y0", "V", "Y1") if YUV_ORDER[encoding] == "UYVY" else ("Y0", "U", "Y1", "V")
        data = np.stack([planes[k] for k in order], axis=2).reshape(h, 2 * w)
        return _image(np.clip(np.rint(data), 0, 255).astype(np.uint8), encoding, w)
    if encoding in BAYER:
        pattern = BAYER[encoding]
        mosaic = np.empty((h, w), np.uint8)
        for i, colour in enumerate(pattern):
            dy, dx = divmod(i, 2)
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(colour)]
        return _image(mosaic, encoding, w)
    order = SIXTEEN_BIT[encoding]
    pixels = rgb[..., list(order)] if order else np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)[..., None]
    words = pixels.astype(np.uint16) * 257
    data = np.ascontiguousarray(words.astype(">u2" if big_endian else "<u2")).view(np.uint8).reshape(h, -1)
    msg = _image(data, encoding, w)
    msg.is_bigendian = int(big_endian)
    return msg


def depth(h: int, w: int, encoding: str) -> Image:
    """A plausible depth image (a ramp in millimetres or metres)."""
    ramp = np.linspace(500, 4000, w, dtype=np.float32)[None].repeat(h, 0)
    values = ramp.astype(np.uint16) if encoding == "16UC1" else ramp / 1000.0
    return _image(values.view(np.uint8).reshape(h, -1), encoding, w)


def _image(rows: np.ndarray, encoding: str, width: int) -> Image:
    return Image(height=rows.shape[0], width=width, encoding=encoding, step=rows.shape[1],
                 data=array.array("B", np.ascontiguousarray(rows).tobytes()))
