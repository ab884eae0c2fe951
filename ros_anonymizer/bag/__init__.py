"""rosbag2 tools: anonymize a recording, or play one into the live node (rosbags + rclpy)."""
