"""image_io: the cv_bridge-compatible conversions, and the refusal of every kind of malformed message."""
import array

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from skimage.data import astronaut
from std_msgs.msg import Header

from camera_encodings import BAYER, CAMERA_ONLY, SIXTEEN_BIT, YUV_ORDER, depth, encode

from ros_anonymizer.image_io import (
    CAMERA_ENCODINGS, DEPTH_ENCODINGS, ENCODINGS, DepthImage, ImageDecodeError, compressed_imgmsg_to_cv2, compressed_to_rgb,
    cv2_to_compressed_imgmsg, cv2_to_imgmsg, decode, image_to_rgb, imgmsg_to_cv2, rgb_to_compressed, rgb_to_image,
)

RGB = np.ascontiguousarray(astronaut()[::4, ::4])  # a real photograph, 128x128


def padded_message(pixels: np.ndarray, encoding: str, padding: int, fill: int = 77) -> Image:
    """An Image whose rows carry `padding` junk bytes, as some camera drivers send."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    rows = np.concatenate([row, np.full((h, padding), fill, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=row.shape[1] + padding, data=array.array("B", rows.tobytes()))


@settings(max_examples=40, deadline=None)
@given(encoding=st.sampled_from(sorted(ENCODINGS)), h=st.integers(1, 40), w=st.integers(1, 40),
       padding=st.integers(0, 9), seed=st.integers(0, 2**32 - 1))
def test_decode_honours_step_and_encoding(encoding, h, w, padding, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
    layout = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full((h, w), 255, np.uint8)]),
              "bgra8": np.dstack([rgb[..., ::-1], np.full((h, w), 9, np.uint8)]), "mono8": rgb[..., 1]}[encoding]
    msg = padded_message(np.ascontiguousarray(layout), encoding, padding)
    decoded = image_to_rgb(msg)
    assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
    expected = np.repeat(rgb[..., 1:2], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(imgmsg_to_cv2(msg).reshape(layout.shape), layout)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_encode_keeps_the_input_family_and_header(encoding):
    header = Header(frame_id="cam_front")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = rgb_to_image(RGB, encoding, header)
    assert (msg.encoding, msg.width, msg.height, msg.step) == (encoding, 128, 128, 128 * ENCODINGS[encoding])
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam_front", 12, 345)
    back = image_to_rgb(msg)
    if encoding == "mono8":
        np.testing.assert_array_equal(back[..., 0], cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY))
    else:
        np.testing.assert_array_equal(back, RGB)


def test_decoded_frame_is_not_a_view_of_the_message():
    msg = rgb_to_image(RGB, "rgb8")
    decoded = image_to_rgb(msg)
    decoded[:] = 0
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_cv_bridge_passthrough_conventions():
    assert cv2_to_imgmsg(RGB).encoding == "bgr8"
    assert cv2_to_imgmsg(RGB[..., 0]).encoding == "mono8"
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(RGB, "rgb8"), "bgr8"), RGB[..., ::-1])
    with pytest.raises(ValueError, match="needs 4 channels"):
        cv2_to_imgmsg(RGB, "rgba8")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(fmt):
    msg = rgb_to_compressed(RGB, fmt, 95, Header(frame_id="f"))
    assert msg.format == f"rgb8; {fmt} compressed bgr8" and msg.header.frame_id == "f"
    back = compressed_to_rgb(msg)
    assert back.shape == RGB.shape
    assert np.abs(back.astype(int) - RGB).mean() < (0.01 if fmt == "png" else 4.0)
    grey = rgb_to_compressed(RGB, fmt, 95, source_encoding="mono8")
    assert grey.format.startswith("mono8;") and compressed_imgmsg_to_cv2(grey).ndim == 2


def bad(msg_kwargs: dict) -> Image:
    base = rgb_to_image(RGB, "rgb8")
    return Image(**{"height": base.height, "width": base.width, "encoding": base.encoding, "step": base.step,
                    "data": base.data, **msg_kwargs})


@pytest.mark.parametrize("kwargs, message", [
    ({"encoding": "yuv420"}, "unsupported encoding 'yuv420'"),
    ({"encoding": ""}, "unsupported encoding ''"),
    ({"step": 100}, "step 100 is shorter than a row"),
    ({"step": 128 * 3 + 4}, "data holds 49152 bytes"),
    ({"data": array.array("B", bytes(1000))}, "data holds 1000 bytes"),
    ({"width": 0}, "empty image"),
    ({"height": 0, "data": array.array("B")}, "empty image"),
    ({"width": 7680, "height": 4320}, "exceeds the limit"),
])
def test_malformed_images_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ImageDecodeError, match=message):
        image_to_rgb(bad(kwargs))


def test_a_real_8k_frame_is_refused_by_the_limit_and_accepted_above_it():
    msg = Image(height=4320, width=7680, encoding="mono8", step=7680, data=array.array("B", bytes(7680 * 4320)))
    with pytest.raises(ImageDecodeError, match="7680x4320 exceeds the limit of 8294400 pixels"):
        image_to_rgb(msg)
    assert image_to_rgb(msg, max_pixels=7680 * 4320).shape == (4320, 7680, 3)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_malformed_images_from_hypothesis_never_escape_as_other_errors(data):
    """Whatever the fields say, decoding either gives a correct frame or raises ImageDecodeError."""
    width, height = data.draw(st.integers(0, 64)), data.draw(st.integers(0, 64))
    encoding = data.draw(st.sampled_from(sorted(CAMERA_ENCODINGS) + sorted(DEPTH_ENCODINGS) + ["rgb8 ", "bayer_rggb16"]))
    step = data.draw(st.integers(0, 300))
    payload = data.draw(st.binary(max_size=4000))
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=data.draw(st.integers(0, 1)),
                data=array.array("B", payload))
    try:
        decoded, _ = decode(msg)
    except ImageDecodeError:
        return
    assert decoded.shape == (height, width, 3)
    assert len(payload) == step * height and step >= width * CAMERA_ENCODINGS[encoding][0]


def jpeg_bytes() -> bytes:
    return bytes(cv2_to_compressed_imgmsg(RGB[..., ::-1], "jpg").data)


@pytest.mark.parametrize("payload, message", [
    (b"", "empty compressed image"),
    (b"GIF89a" + bytes(100), "neither JPEG nor PNG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(50), "corrupted"),
    (jpeg_bytes()[:400], "corrupted"),
])
def test_corrupted_compressed_images_are_refused(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", payload)))


def test_a_jpeg_with_corrupt_entropy_data_is_refused_though_opencv_conceals_the_damage():
    """Bytes flipped inside the scan: OpenCV still returns a (shifted, recoloured) picture of the face; we drop it."""
    data = bytearray(jpeg_bytes())
    rng = np.random.default_rng(0)
    scan = data.index(b"\xff\xda") + 20  # past the start-of-scan header, inside the entropy-coded data
    for i in rng.integers(scan, len(data) - 2, 3):
        data[i] ^= 0x5A
    concealed = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    assert concealed is not None and concealed.shape == RGB.shape, "OpenCV decodes it: the check below is the only guard"
    with pytest.raises(ImageDecodeError, match="corrupted"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", bytes(data))))
    grey = cv2.imencode(".jpg", cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY))[1].tobytes()
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", grey))).shape == RGB.shape


def test_an_8k_jpeg_is_refused_before_it_is_decoded():
    ok, buffer = cv2.imencode(".jpg", np.zeros((4320, 7680, 3), np.uint8))
    msg = CompressedImage(format="jpeg", data=array.array("B", buffer.tobytes()))
    with pytest.raises(ImageDecodeError, match="7680x4320 exceeds"):
        compressed_to_rgb(msg)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 6000), flips=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), max_size=8))
def test_damaged_jpegs_from_hypothesis_never_escape_as_other_errors(cut, flips):
    payload = bytearray(jpeg_bytes()[:cut])
    for at, value in flips:
        if at < len(payload):
            payload[at] = value
    try:
        decoded = compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", bytes(payload))))
    except ImageDecodeError:
        return
    assert decoded.shape == RGB.shape and decoded.dtype == np.uint8


# Camera encodings the pipeline cannot take directly, and depth images ------------------------------------------

@pytest.mark.parametrize("encoding, big_endian", [(e, False) for e in CAMERA_ONLY] + [(e, True) for e in SIXTEEN_BIT])
def test_camera_encodings_decode_to_the_picture(encoding, big_endian):
    msg = encode(RGB, encoding, big_endian)
    rgb, published = decode(msg)
    assert rgb.shape == RGB.shape and rgb.dtype == np.uint8
    expected = np.repeat(cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2) if encoding == "mono16" else RGB
    error = np.abs(rgb.astype(int) - expected).mean()
    # YUV 4:2:2 halves the chroma resolution and Bayer keeps one colour per pixel: close, not exact.
    assert error < (12.0 if encoding in BAYER else 4.0 if encoding in YUV_ORDER else 1.0), error
    assert published == {"rgb16": "rgb8", "bgr16": "bgr8", "mono16": "mono8"}.get(encoding, "rgb8")
    assert image_to_rgb(msg).shape == RGB.shape


def test_bayer_patterns_are_not_confused():
    """Each Bayer pattern decodes its own mosaic best: a swapped red and blue would show here."""
    for encoding in BAYER:
        rgb, _ = decode(encode(RGB, encoding))
        swapped = np.abs(rgb[..., ::-1].astype(int) - RGB).mean()
        assert np.abs(rgb.astype(int) - RGB).mean() < swapped / 2, encoding


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_images_are_reported_as_depth_and_malformed_ones_as_malformed(encoding):
    msg = depth(48, 64, encoding)
    with pytest.raises(DepthImage, match=f"{encoding} is a depth image"):
        decode(msg)
    msg.data = msg.data[:-1]
    with pytest.raises(ImageDecodeError, match="data holds") as refused:
        decode(msg)
    assert not isinstance(refused.value, DepthImage)


def test_malformed_camera_encodings_are_refused_with_a_reason():
    odd = encode(RGB, "yuv422")
    odd.width, odd.step = 127, 254
    odd.data = odd.data[:254 * 128]
    with pytest.raises(ImageDecodeError, match="width must be even"):
        decode(odd)
    short = encode(RGB, "rgb16")
    short.step = 128 * 3
    with pytest.raises(ImageDecodeError, match="shorter than a row"):
        decode(short)
    with pytest.raises(ImageDecodeError, match="unsupported encoding 'bayer_rggb16'"):
        decode(Image(height=2, width=2, encoding="bayer_rggb16", step=4, data=array.array("B", bytes(8))))


def test_compressed_depth_is_reported_as_depth():
    """image_transport's compressedDepth (a PNG of 16-bit depth behind a small header): depth, never decoded as a picture."""
    for fmt in ("16UC1; compressedDepth png", "32FC1; compressedDepth rvl", "16UC1; png compressed mono16"):
        with pytest.raises(DepthImage, match="compressed depth image"):
            decode(CompressedImage(format=fmt, data=array.array("B", bytes(64))))
