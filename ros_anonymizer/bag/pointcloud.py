"""Removing colour from sensor_msgs/PointCloud2: the cloud is rewritten with only its other fields.

Rewriting without the colour fields rather than zeroing them in place: the
new points hold exactly the bytes of the kept fields, so no colour survives in
padding, in bytes no field describes, or under a field name the list misses
in a layout that overlaps; and a consumer sees a cloud without colour (RViz
falls back to intensity or axis colouring) rather than black points. The
cost is a new layout (point_step, offsets), which readers that go by the
fields handle; a reader with hard-coded offsets would not.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

# PointField datatype -> bytes per element.
FIELD_SIZES = {PointField.INT8: 1, PointField.UINT8: 1, PointField.INT16: 2, PointField.UINT16: 2,
               PointField.INT32: 4, PointField.UINT32: 4, PointField.FLOAT32: 4, PointField.FLOAT64: 8}


class CloudError(ValueError):
    """A PointCloud2 whose layout does not fit its data; the message says how."""


def colour_fields(cloud: PointCloud2, names: tuple[str, ...]) -> list[str]:
    return [f.name for f in cloud.fields if f.name.lower() in names]


def strip_colour(cloud: PointCloud2, names: tuple[str, ...]) -> PointCloud2 | None:
    """The cloud without the fields in `names`, packed; None if it has none of them (it can be written as it is)."""
    if not colour_fields(cloud, names):
        return None
    width, height, step = int(cloud.width), int(cloud.height), int(cloud.point_step)
    for f in cloud.fields:
        if f.datatype not in FIELD_SIZES:
            raise CloudError(f"field {f.name!r} has an unknown datatype {f.datatype}")
        if f.offset + FIELD_SIZES[f.datatype] * max(int(f.count), 1) > step:
            raise CloudError(f"field {f.name!r} ends beyond point_step {step}")
    if cloud.row_step < width * step or len(cloud.data) != cloud.row_step * height:
        raise CloudError(f"data holds {len(cloud.data)} bytes; row_step x height = {cloud.row_step} x {height}, "
                         f"with rows of {width} points of {step} bytes")
    kept = [f for f in sorted(cloud.fields, key=lambda f: f.offset) if f.name.lower() not in names]
    if not kept:
        raise CloudError("the cloud has only colour fields")
    data = np.frombuffer(bytes(cloud.data), np.uint8).reshape(height, cloud.row_step)[:, :width * step]
    points = data.reshape(height * width, step)
    parts, fields, offset = [], [], 0
    for f in kept:
        size = FIELD_SIZES[f.datatype] * max(int(f.count), 1)
        parts.append(points[:, f.offset:f.offset + size])
        fields.append(PointField(name=f.name, offset=offset, datatype=f.datatype, count=f.count))
        offset += size
    packed = np.ascontiguousarray(np.concatenate(parts, axis=1))
    return PointCloud2(header=cloud.header, height=height, width=width, fields=fields, is_bigendian=cloud.is_bigendian,
                       point_step=offset, row_step=offset * width, data=array.array("B", packed.tobytes()), is_dense=cloud.is_dense)
