"""Offline trainer for the anonymizer M, the face discriminator D and the action detector A (torch).

The robot runtime never imports this package; this package imports the
runtime to share its face detector and crop geometry.
"""
