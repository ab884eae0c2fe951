"""sensor_msgs Image / CompressedImage <-> numpy, with the cv_bridge API.

Why not the `cv_bridge` package: the PyPI build (1.13.0.post0, ROS 1 code) fails
with numpy 2 and OpenCV 5 (`ndarray.tostring` is gone, OpenCV 5 type codes), and
on a robot the ROS build would add a C++ dependency for four small functions.
These are compatible re-implementations of the cv_bridge calls the node and the
bag tools use, stricter about malformed input: every bad message raises
`ImageDecodeError` with a sentence saying what is wrong, before any large
allocation, so a caller can drop it and count it.

`decode` is the one entry point for the node and the bag tools. Beyond the
8-bit families above it reads the camera encodings the pipeline cannot take
directly (YUV 4:2:2, 8-bit Bayer, 16-bit colour and grey) into RGB, and it
raises `DepthImage` (an `ImageDecodeError`) for depth images, so a caller that
knows nothing about depth drops them, and one that applies the
`depth_images` rule catches it first.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
import simplejpeg
from sensor_msgs.msg import CompressedImage, Image

from .config import AnonymizerConfig

# encoding -> channels: the families the node accepts and publishes.
ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

# OpenCV conversions between supported encodings; a missing pair means "same layout".
_CONVERSIONS = {
    ("bgr8", "rgb8"): cv2.COLOR_BGR2RGB, ("rgb8", "bgr8"): cv2.COLOR_RGB2BGR,
    ("rgba8", "rgb8"): cv2.COLOR_RGBA2RGB, ("bgra8", "rgb8"): cv2.COLOR_BGRA2RGB,
    ("rgba8", "bgr8"): cv2.COLOR_RGBA2BGR, ("bgra8", "bgr8"): cv2.COLOR_BGRA2BGR,
    ("rgb8", "rgba8"): cv2.COLOR_RGB2RGBA, ("rgb8", "bgra8"): cv2.COLOR_RGB2BGRA,
    ("bgr8", "rgba8"): cv2.COLOR_BGR2RGBA, ("bgr8", "bgra8"): cv2.COLOR_BGR2BGRA,
    ("rgba8", "bgra8"): cv2.COLOR_RGBA2BGRA, ("bgra8", "rgba8"): cv2.COLOR_BGRA2RGBA,
    ("mono8", "rgb8"): cv2.COLOR_GRAY2RGB, ("mono8", "bgr8"): cv2.COLOR_GRAY2BGR,
    ("mono8", "rgba8"): cv2.COLOR_GRAY2RGBA, ("mono8", "bgra8"): cv2.COLOR_GRAY2BGRA,
    ("rgb8", "mono8"): cv2.COLOR_RGB2GRAY, ("bgr8", "mono8"): cv2.COLOR_BGR2GRAY,
    ("rgba8", "mono8"): cv2.COLOR_RGBA2GRAY, ("bgra8", "mono8"): cv2.COLOR_BGRA2GRAY,
}
DEFAULT_MAX_PIXELS = AnonymizerConfig.max_image_pixels  # the config's default: one limit for every tool

# Camera encodings read into RGB (sensor_msgs/image_encodings names) -> (bytes per pixel, the 8-bit encoding the
# anonymized frame is published in). 16-bit families keep their family at 8 bit (the high byte, as cv_bridge
# does); YUV 4:2:2 and Bayer become rgb8, since re-mosaicking an anonymized frame would gain nothing.
# ROS "yuv422" is UYVY and "yuv422_yuy2" is YUYV; "uyvy"/"yuyv" are the newer names for the same layouts.
_YUV = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
        "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV, "yuyv": cv2.COLOR_YUV2RGB_YUYV}
# OpenCV names a Bayer pattern by its second row, so ROS rggb is OpenCV's BG (as cv_bridge maps it).
_BAYER = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
          "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}
_SIXTEEN_BIT = {"rgb16": "rgb8", "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8", "mono16": "mono8"}
CAMERA_ENCODINGS = {
    **{name: (channels, name) for name, channels in ENCODINGS.items()},
    **{name: (2, "rgb8") for name in _YUV},
    **{name: (1, "rgb8") for name in _BAYER},
    **{name: (2 * ENCODINGS[eight], eight) for name, eight in _SIXTEEN_BIT.items()},
}
# Depth encodings -> bytes per pixel: never anonymized; the caller's `depth_images` rule decides.
DEPTH_ENCODINGS = {"16UC1": 2, "32FC1": 4}


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an image; the message says what is wrong with it."""


class DepthImage(ImageDecodeError):
    """A well-formed depth image: no colour picture to anonymize; the caller's `depth_images` rule applies."""


def _check_encoding(encoding: str) -> int:
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return ENCODINGS[encoding]


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image of {width}x{height} exceeds the limit of {max_pixels} pixels (max_image_pixels)")


def convert(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Change colour order/channels between two supported encodings (a new array unless they match)."""
    if dst == "passthrough" or src == dst:
        return image
    _check_encoding(dst)
    return cv2.cvtColor(image, _CONVERSIONS[(src, dst)])


def _rows(msg: Image, bytes_per_pixel: int, max_pixels: int) -> np.ndarray:
    """The message's pixel bytes as a height x (width * bytes_per_pixel) uint8 view, row padding cut off."""
    _check_size(msg.width, msg.height, max_pixels)
    row = msg.width * bytes_per_pixel
    if msg.step < row:
        raise ImageDecodeError(f"step {msg.step} is shorter than a row of {msg.width} {msg.encoding} pixels ({row} bytes)")
    expected = msg.step * msg.height
    if len(msg.data) != expected:
        raise ImageDecodeError(f"data holds {len(msg.data)} bytes; step x height = {msg.step} x {msg.height} = {expected}")
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row]


def imgmsg_to_cv2(msg: Image, desired_encoding: str = "passthrough", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """cv_bridge's `imgmsg_to_cv2`: an HxW or HxWxC uint8 array, honouring `step` (row padding)."""
    channels = _check_encoding(msg.encoding)
    rows = _rows(msg, channels, max_pixels)
    image = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
    return convert(image, msg.encoding, desired_encoding)


def cv2_to_imgmsg(cvim: np.ndarray, encoding: str = "passthrough", header=None) -> Image:
    """cv_bridge's `cv2_to_imgmsg` for uint8 images; `passthrough` means bgr8/bgra8/mono8 by channel count."""
    if cvim.dtype != np.uint8 or cvim.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC uint8 array, got {cvim.dtype} with shape {cvim.shape}")
    channels = 1 if cvim.ndim == 2 else cvim.shape[2]
    if encoding == "passthrough":
        encoding = {1: "mono8", 3: "bgr8", 4: "bgra8"}[channels]
    if _check_encoding(encoding) != channels:
        raise ValueError(f"encoding {encoding} needs {ENCODINGS[encoding]} channels, the array has {channels}")
    msg = Image(height=cvim.shape[0], width=cvim.shape[1], encoding=encoding, is_bigendian=0, step=cvim.shape[1] * channels)
    if header is not None:
        msg.header = header
    msg.data = array.array("B", np.ascontiguousarray(cvim).tobytes())
    return msg


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from a JPEG or PNG header, so oversized images are refused before decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        raise ImageDecodeError("compressed data is neither JPEG nor PNG")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                break
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ImageDecodeError("corrupted JPEG: no frame header")


def compressed_imgmsg_to_cv2(msg: CompressedImage, desired_encoding: str = "passthrough",
                             max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """cv_bridge's `compressed_imgmsg_to_cv2`: JPEG/PNG -> bgr8 (or mono8 for grey images) array."""
    data = bytes(msg.data)
    if not data:
        raise ImageDecodeError("empty compressed image")
    width, height = compressed_size(data)
    _check_size(width, height, max_pixels)
    if data[:2] == b"\xff\xd8":
        image = _strict_jpeg(data)
    else:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    if image is None or image.shape[:2] != (height, width):
        raise ImageDecodeError(f"corrupted compressed image ({len(data)} bytes, format {msg.format!r})")
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"compressed image has {image.dtype} pixels; only 8-bit images are supported")
    channels = 1 if image.ndim == 2 else image.shape[2]
    source = {1: "mono8", 3: "bgr8", 4: "bgra8"}[channels]
    return convert(image, source, desired_encoding)


def _strict_jpeg(data: bytes) -> np.ndarray | None:
    """A JPEG decoded only if libjpeg reports no damage, else None.

    OpenCV conceals corrupt entropy-coded data (libjpeg only warns) and returns
    a shifted, recoloured picture in which CenterFace may miss a face that a
    person still recognises: the fuzz run in docs/reliability.md published one.
    simplejpeg (libjpeg-turbo) with `strict=True` turns those warnings into errors.
    """
    try:
        grey = simplejpeg.decode_jpeg_header(data)[2] == "Gray"
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "BGR", strict=True)
    except ValueError:
        return None
    return image[:, :, 0] if grey else image


def cv2_to_compressed_imgmsg(cvim: np.ndarray, dst_format: str = "jpg", header=None, jpeg_quality: int = 90,
                             source_encoding: str | None = None) -> CompressedImage:
    """cv_bridge's `cv2_to_compressed_imgmsg` (input bgr8/bgra8/mono8); `format` follows image_transport."""
    dst_format = {"jpeg": "jpg"}.get(dst_format, dst_format)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if dst_format == "jpg" else []
    ok, buffer = cv2.imencode("." + dst_format, cvim, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {cvim.shape} image as {dst_format}")
    stored = "mono8" if cvim.ndim == 2 else "bgr8"
    name = {"jpg": "jpeg"}.get(dst_format, dst_format)
    msg = CompressedImage(format=f"{source_encoding or stored}; {name} compressed {stored}")
    if header is not None:
        msg.header = header
    msg.data = array.array("B", buffer.tobytes())
    return msg


# What the node uses: RGB in the pipeline, the input's encoding family outside.

def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An Image message in any camera encoding -> a new HxWx3 uint8 RGB array (never a view of the message)."""
    return _camera_to_rgb(msg, max_pixels)[0]


def _camera_to_rgb(msg: Image, max_pixels: int) -> tuple[np.ndarray, str]:
    if msg.encoding in DEPTH_ENCODINGS:
        _rows(msg, DEPTH_ENCODINGS[msg.encoding], max_pixels)  # a malformed depth image is malformed, not depth
        raise DepthImage(f"{msg.encoding} is a depth image")
    if msg.encoding not in CAMERA_ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(CAMERA_ENCODINGS)}, "
                               f"and depth {', '.join(DEPTH_ENCODINGS)}")
    bytes_per_pixel, published = CAMERA_ENCODINGS[msg.encoding]
    if msg.encoding in _YUV and msg.width % 2:
        raise ImageDecodeError(f"{msg.encoding} pairs pixels, so its width must be even, not {msg.width}")
    if msg.encoding in _BAYER and (msg.width < 2 or msg.height < 2):
        raise ImageDecodeError(f"a Bayer image needs at least 2x2 pixels, not {msg.width}x{msg.height}")
    rows = _rows(msg, bytes_per_pixel, max_pixels)
    if msg.encoding in ENCODINGS:
        image = rows.reshape(msg.height, msg.width, bytes_per_pixel) if bytes_per_pixel > 1 else rows
        return (image.copy() if msg.encoding == "rgb8" else convert(image, msg.encoding, "rgb8")), published
    if msg.encoding in _YUV:
        return cv2.cvtColor(rows.reshape(msg.height, msg.width, 2), _YUV[msg.encoding]), published
    if msg.encoding in _BAYER:
        return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER[msg.encoding]), published
    words = rows.view(">u2" if msg.is_bigendian else "<u2")  # 16-bit: keep the high byte
    eight = (words >> 8).astype(np.uint8).reshape(msg.height, msg.width, -1)
    return convert(eight if eight.shape[2] > 1 else eight[..., 0], published, "rgb8"), published


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return compressed_imgmsg_to_cv2(msg, "rgb8", max_pixels)


def decode(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Either message type -> (a new RGB array, the 8-bit encoding to publish the result in).

    Raises ImageDecodeError for a malformed or unsupported message, and its subclass DepthImage for a
    well-formed depth image (16UC1, 32FC1) or image_transport's compressedDepth ("16UC1; compressedDepth png").
    """
    if isinstance(msg, CompressedImage):
        if "compresseddepth" in msg.format.lower() or msg.format.split(";")[0].strip() in DEPTH_ENCODINGS:
            raise DepthImage(f"{msg.format!r} is a compressed depth image")
        native = compressed_imgmsg_to_cv2(msg, max_pixels=max_pixels)
        encoding = {1: "mono8", 3: "bgr8", 4: "bgra8"}[1 if native.ndim == 2 else native.shape[2]]
        return convert(native, encoding, "rgb8"), encoding
    return _camera_to_rgb(msg, max_pixels)


def rgb_to_image(rgb: np.ndarray, encoding: str, header=None) -> Image:
    """An RGB array -> an Image in `encoding` (the input's family: colour order, alpha, grey)."""
    return cv2_to_imgmsg(convert(rgb, "rgb8", encoding), encoding, header)


def rgb_to_compressed(rgb: np.ndarray, fmt: str, quality: int, header=None, source_encoding: str = "rgb8") -> CompressedImage:
    target = "mono8" if source_encoding == "mono8" else "bgr8"
    return cv2_to_compressed_imgmsg(convert(rgb, "rgb8", target), fmt, header, quality, source_encoding)
