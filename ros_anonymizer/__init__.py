"""ros_anonymizer: face anonymization for robots that keeps people's actions detectable."""
__version__ = "0.1.0"
